"""The discrete prompt vs embedding-only vs prefix experiment at scale=smoke, through Hydra: every cell runs, the
discrete prompt is the best of the configured candidates on dev (each one's score in the record), and the table has
all three rows."""
from pathlib import Path

from .conftest import conf, needs_data, our_rows, run_smoke, runs_in_table

CANDIDATES = list(conf("experiment/prompt_vs_emb_vs_prefix.yaml").prompt_candidates)


@needs_data("e2e")
def test_prompt_vs_emb_vs_prefix_smoke(tmp_path: Path):
    records, table = run_smoke(tmp_path, "prompt_vs_emb_vs_prefix", [])
    by_method = {r["config"]["method"]["name"]: r for r in records}
    assert set(by_method) == {"discrete_prompt", "embedding_only", "prefix"}
    selection = by_method["discrete_prompt"]["prompt_selection"]
    assert [c["prompt"] for c in selection["candidates"]] == CANDIDATES  # multi-line prompts survive Hydra intact
    assert selection["score"] == max(c["dev"]["BLEU"] for c in selection["candidates"])
    assert selection["prompt"] in CANDIDATES and "ties" in selection["rule"]
    # the stated rule over the recorded scores: the highest dev BLEU, then fewer tokens, then the earlier candidate
    scored = selection["candidates"]
    rank = min(range(len(scored)), key=lambda i: (-scored[i]["dev"]["BLEU"], scored[i]["tokens"], i))
    assert selection["prompt"] == CANDIDATES[rank], [(c["dev"]["BLEU"], c["tokens"]) for c in scored]
    chosen = [c for c in selection["candidates"] if c["prompt"] == selection["prompt"]]
    assert by_method["discrete_prompt"]["num_virtual_tokens"] == chosen[0]["tokens"]  # the chosen prompt's length
    assert by_method["discrete_prompt"]["params"]["trainable"] == 0
    assert by_method["embedding_only"]["params"]["trainable"] > 0 and by_method["prefix"]["params"]["trainable"] > 0
    assert [row.split(" | ")[0] for row in our_rows(table)] == ["| DISCRETE", "| EMB-10", "| PREFIX-10"]
    assert all("–" not in cell for row in our_rows(table) for cell in row.split(" | ")[2:4])  # smoke: BLEU, NIST
    assert runs_in_table(table) == {r["record"] for r in records}
