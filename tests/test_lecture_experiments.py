"""The lecture's LoRA, main-table and low-data experiments at scale=smoke: each whole sweep runs through Hydra and
writes its table (the prefix-family ones are in test_prefix_experiments.py, lora_rank_sweep in test_hydra.py)."""
import json
from pathlib import Path

import pytest

from peft_repro.results import load_records, eval_setting

from .conftest import REPO, needs_data, our_rows, render_module, run_main, runs_in_table

# experiment -> (data folders it reads, runs in its smoke sweep)
SWEEPS = {
    "lora_weight_type": (("mnli", "wikisql"), 14),
    "lora_rank_sweep_e2e": (("e2e",), 7),
    "e2e_main": (("e2e",), 5),  # 5 methods, at seed 0 (its 5 seeds would multiply the Java scoring in CI by 5)
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
@pytest.mark.parametrize("experiment", [pytest.param(name, marks=[needs_data(folder) for folder in folders])
                                        for name, (folders, _) in SWEEPS.items()])
def test_lecture_experiment_smoke_sweep_writes_its_table(tmp_path: Path, experiment):
    runs = SWEEPS[experiment][1]
    _, records, table = smoke_sweep(tmp_path, experiment, *(["seed=0"] if experiment == "e2e_main" else []))
    assert len(records) == runs and all(r["status"] == "ok" for r in records)
    assert len({r["record"] for r in records}) == runs
    assert runs_in_table(table) == {r["record"] for r in records}  # every run has its cell in the table
    # every run keeps its test items' statistics; one zero-shot record per distinct test setting (model, items, decoding)
    assert all(0 < len(r["test_items"]["ids"]) == len(r["test_items"]["stats"]) for r in records)
    # and the test split's size, capped or not (the claims' `needed` draws no more items than it holds)
    assert all(r["test_items"]["split_size"] >= len(r["test_items"]["ids"]) for r in records)
    zero_shots = load_records(tmp_path, "zero_shot", "smoke")
    assert len(zero_shots) == len({json.dumps(eval_setting(r["config"]), sort_keys=True) for r in records})
    assert all(z["params"]["trainable"] == 0 and z["test_items"]["ids"] for z in zero_shots)
    if experiment == "lora_weight_type":  # one rank budget: r x number of adapted weight types = 8
        assert {r["config"]["method"]["r"] * len(r["config"]["method"]["targets"]) for r in records} == {8}
        assert all(row.split(" | ")[2:4] != ["–", "–"] for row in our_rows(table))  # each weight type has a run
    if experiment.startswith("low_data"):  # two committed subsets per size: mean ± sd over 2 runs per cell
        sizes = {(r["config"]["task"]["low_data"]["size"], r["train_examples"]) for r in records}
        assert sizes == {(50, 50), (100, 100)}
        filled = [row for row in our_rows(table) if "(n=2)" in row]  # rows the sweep runs (not the pre-fix row)
        assert filled and all(all("(n=2)" in cell for cell in row.split(" | ")[2:4]) for row in filled)
    if experiment == "low_data_e2e":  # the paper tables, the claims ledger and the figure read the smoke records
        paper_tables_and_figure_from(tmp_path)
    if experiment == "e2e_main":
        assert our_rows(table)[0].startswith("| FT | ours |")
        assert "| method | source | BLEU | NIST | METEOR | ROUGE_L | CIDEr | trainable / note |" in table


@needs_data("xsum")
def test_joblib_launcher_runs_two_cells_in_parallel(tmp_path: Path):
    """hydra/launcher=local_parallel: 2 joblib workers, each run with one torch thread (cores / jobs here)."""
    out, records, table = smoke_sweep(tmp_path, "xsum_main", "hydra/launcher=local_parallel")
    assert "Joblib.Parallel(n_jobs=2" in out.stdout + out.stderr
    assert {r["config"]["method"]["name"] for r in records} == {"full", "prefix"}
    assert sorted(p.name for p in (tmp_path / "multirun").iterdir() if p.is_dir()) == ["0", "1"]  # a folder each
    assert all(r["run_dir"] is None for r in records)  # outside the repository: no machine path in the record
    assert [row.split(" | ")[0] for row in our_rows(table)][:2] == ["| FT", "| Prefix (2%)"]


def paper_tables_and_figure_from(results_dir: Path):
    from peft_repro.report.__main__ import main as report_main

    render = render_module()

    assert report_main(["--results-dir", str(results_dir), "--scale", "smoke"]) == 0
    [report] = (results_dir / "reports" / "smoke").iterdir()
    ledger = {line.split(" | ")[0][2:]: line.split(" | ")[1]
              for line in (report / "claims.md").read_text().splitlines() if line.startswith("| ") and " | **" in line}
    assert ledger["prefix_beats_ft_low_data"] not in ("**no results**", "**too few runs**")  # 2 runs per cell
    section = (report / "tables.md").read_text().split("## Low-data E2E")[1].split("\n## ")[0]
    ours = [line for line in section.splitlines() if " | ours | " in line]
    assert [line.split(" | ")[0] for line in ours] == ["| Zero-shot", "| Prefix", "| FT", "| LoRA",
                                                       "| Prefix (random init)"]
    for line in ours[1:4]:  # sizes 50 and 100 ran (2 subsets each), 200 and 500 did not
        assert ["(n=2)" in cell for cell in line.split(" | ")[2:6]] == [True, True, False, False]
        assert line.split(" | ")[4:6] == ["–", "–"]
    # the untrained model once, on the same test MRs as every size; no random-init prefix runs in the smoke sweep
    assert ours[0].split(" | ")[2:6] == [ours[0].split(" | ")[2]] * 2 + ["–", "–"] and "(n=" not in ours[0]
    assert ours[4].split(" | ")[2:6] == ["–"] * 4
    render.execute(REPO / "notebooks" / "low_data.py", results_dir, "smoke")
    png = results_dir / "figures" / "smoke" / "low_data.png"
    assert png.read_bytes().startswith(b"\x89PNG")
