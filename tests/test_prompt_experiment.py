"""The discrete prompt vs embedding-only vs prefix experiment at scale=smoke, through Hydra: every cell runs, the
discrete prompt is the best of the configured candidates on dev (each one's score in the record), and the table has
all three rows."""
from pathlib import Path

from .conftest import conf, needs_data, pivot_rows, run_smoke

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
    chosen = [c for c in selection["candidates"] if c["prompt"] == selection["prompt"]]
    assert by_method["discrete_prompt"]["num_virtual_tokens"] == chosen[0]["tokens"]  # the chosen prompt's length
    assert by_method["discrete_prompt"]["params"]["trainable"] == 0
    assert by_method["embedding_only"]["params"]["trainable"] > 0 and by_method["prefix"]["params"]["trainable"] > 0
    assert [row.split(" | ")[0] for row in pivot_rows(table)] == ["| discrete_prompt", "| embedding_only", "| prefix"]
    assert all("–" not in line for line in pivot_rows(table))
