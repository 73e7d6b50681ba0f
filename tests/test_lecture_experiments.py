"""The lecture's LoRA, main-table and low-data experiments at scale=smoke: each whole sweep runs through Hydra and
writes its table (the prefix-family ones are in test_prefix_experiments.py, lora_rank_sweep in test_hydra.py)."""
from pathlib import Path

import pytest

from peft_repro.results import load_records

from .conftest import needs_data
from .test_hydra import run_main
from .test_prefix_experiments import pivot_rows

# experiment -> (data folders it reads, runs in its smoke sweep)
SWEEPS = {
    "lora_weight_type": (("mnli", "wikisql"), 14),
    "lora_rank_sweep_e2e": (("e2e",), 7),
    "e2e_main": (("e2e",), 5),
    "xsum_main": (("xsum",), 2),
    "low_data_e2e": (("e2e",), 12),
    "low_data_xsum": (("xsum",), 12),
}


def smoke_sweep(tmp_path: Path, experiment: str, *extra: str):
    out = run_main(f"+experiment={experiment}", "scale=smoke", f"results_dir={tmp_path}",
                   f"hydra.sweep.dir={tmp_path}/multirun", *extra)
    assert out.returncode == 0, out.stderr[-3000:]
    records = load_records(tmp_path, experiment, "smoke")
    [table] = (tmp_path / "tables" / experiment).glob("*.md")
    return out, records, table.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("experiment", list(SWEEPS))
def test_lecture_experiment_smoke_sweep_writes_its_table(tmp_path: Path, experiment):
    folders, runs = SWEEPS[experiment]
    for folder in folders:
        needs_data(folder).mark.kwargs["condition"] and pytest.skip(needs_data(folder).mark.kwargs["reason"])
    _, records, table = smoke_sweep(tmp_path, experiment)
    assert len(records) == runs and all(r["status"] == "ok" for r in records)
    assert len({r["record"] for r in records}) == runs
    assert all("–" not in line for line in pivot_rows(table))
    if experiment == "lora_weight_type":  # one rank budget: r x number of adapted weight types = 8
        assert {r["config"]["method"]["r"] * len(r["config"]["method"]["targets"]) for r in records} == {8}
        assert "| trainable params |" in table
    if experiment.startswith("low_data"):  # two committed subsets per size: mean ± sd over 2 runs per cell
        sizes = {(r["config"]["task"]["low_data"]["size"], r["train_examples"]) for r in records}
        assert sizes == {(50, 50), (100, 100)}
        assert all("(n=2)" in line for line in pivot_rows(table))
    if experiment == "e2e_main":
        assert pivot_rows(table)[0].startswith("| full |") and "| BLEU | NIST | METEOR | ROUGE-L | CIDEr |" in table


@needs_data("xsum")
def test_joblib_launcher_runs_two_cells_in_parallel(tmp_path: Path):
    """hydra/launcher=local_parallel: 2 joblib workers, each run with one torch thread (cores / jobs here)."""
    out, records, table = smoke_sweep(tmp_path, "xsum_main", "hydra/launcher=local_parallel")
    assert "Joblib.Parallel(n_jobs=2" in out.stdout + out.stderr
    assert {r["config"]["method"]["name"] for r in records} == {"full", "prefix"}
    assert len({r["run_dir"] for r in records}) == 2
    assert "| full |" in table and "| prefix |" in table
