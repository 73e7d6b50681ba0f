"""The prefix-family experiments at scale=smoke: each sweep runs through Hydra and writes its table.

The fast tests run two cells of each sweep (command-line sweep values replace the experiment's); the `slow` one runs
every cell (E2E test scoring starts a JVM per run, ~8 s each)."""
from pathlib import Path

import pytest

from peft_repro.results import load_records

from .conftest import needs_data, run_main, run_smoke, runs_in_table

CASES = {
    "prefix_length_sweep": (["method.num_virtual_tokens=1,5"], ("config.method.num_virtual_tokens", {1, 5})),
    "emb_vs_infix": (["method=embedding_only,infix", "method.num_virtual_tokens=1"],
                     ("config.method.name", {"embedding_only", "infix"})),
    "prefix_init": (["method.init_text=elephant"], ("config.method.init", {"auto", "random"})),
}
FULL = {"prefix_length_sweep": 5, "emb_vs_infix": 9, "prefix_init": 16}


def lookup(record, dotted):
    node = record
    for part in dotted.split("."):
        node = node[part]
    return node


@needs_data("e2e")
@pytest.mark.parametrize("experiment", list(CASES))
def test_prefix_experiment_smoke(tmp_path: Path, experiment):
    extra, (key, values) = CASES[experiment]
    records, table = run_smoke(tmp_path, experiment, extra)
    assert {lookup(r, key) for r in records} == values
    for r in records:
        assert r["config"]["model"]["name"] == "tiny_llama" and r["config"]["task"]["name"] == "e2e"
        assert r["params"]["trainable"] > 0 and "BLEU" in r["test"]
        if experiment == "prefix_init":  # the words set k (tiny_llama's byte tokenizer: 8); the config keeps 10
            assert r["num_virtual_tokens"] == len("elephant") and r["config"]["method"]["num_virtual_tokens"] == 10
        else:
            assert r["num_virtual_tokens"] == r["config"]["method"]["num_virtual_tokens"]
    assert runs_in_table(table) == {r["record"] for r in records}  # every run has its cell in the table


@pytest.mark.slow
@needs_data("e2e")
@pytest.mark.parametrize("experiment", list(FULL))
def test_prefix_experiment_full_smoke_sweep(tmp_path: Path, experiment):
    records, table = run_smoke(tmp_path, experiment, [])
    assert len(records) == FULL[experiment]
    assert runs_in_table(table) == {r["record"] for r in records}  # every run has its cell in the table
    if experiment == "prefix_init":  # the prefix length follows each word's token count, its random control's too
        counts = {(r["config"]["method"]["init_text"], r["config"]["method"]["init"]): r["params"]["trainable"]
                  for r in records}
        assert counts["table-to-text:", "auto"] == counts["table-to-text:", "random"] > counts["keep", "random"]


@needs_data("e2e")
@pytest.mark.parametrize("model", ["tiny_bart", "tiny_t5"])
def test_encoder_decoder_prefix_run_smoke(tmp_path: Path, model):
    """One E2E run of encoder-decoder prefix-tuning through Hydra, the shared trainer and our decoding."""
    out = run_main("+scale=smoke", f"model={model}", "method=prefix_mlp", f"results_dir={tmp_path}",
                   f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 0, out.stderr[-3000:]
    [record] = load_records(tmp_path, "adhoc", "smoke")
    assert record["status"] == "ok" and record["config"]["model"]["name"] == model
    assert record["num_virtual_tokens"] == record["config"]["method"]["num_virtual_tokens"]  # each part's k
    assert "BLEU" in record["test"] and record["params"]["trainable"] > 0
