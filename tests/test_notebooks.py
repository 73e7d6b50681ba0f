"""The figure notebooks run on hand-made run records (and on none) and write their PNGs; nothing is trained."""
import hashlib
import itertools
import math
from pathlib import Path

import pytest

from peft_repro import figures
from peft_repro.results import record_path, write_record

from .conftest import REPO, render_module

SCALE = "smoke"
PNG = b"\x89PNG\r\n\x1a\n"


render = render_module()
NOTEBOOKS = [p.stem for p in render.notebook_paths()]
# the report's tables each notebook plots (by hand)
PLOTS = {"emb_infix_prefix": ["emb_vs_infix"], "lora_heatmap": ["lora_rank_sweep"],
         "low_data": ["low_data_e2e", "low_data_xsum"], "prefix_length": ["prefix_length_sweep"],
         "prefix_init": ["prefix_init"],
         "dev_curves": ["emb_vs_infix", "lora_rank_sweep", "low_data_e2e", "low_data_xsum", "e2e_main",
                        "prefix_init", "xsum_main", "xsum_main_budget", "low_data_xsum_budget"]}


def make_record(experiment: str, method: dict, test: dict, task: str = "e2e", seed: int = 0, low_data=None,
                status: str = "ok") -> dict:
    """A run record with the fields the tables and figures read (as run.run writes them)."""
    key = experiment + "-" + hashlib.sha1(repr((method, task, seed, low_data, status)).encode()).hexdigest()[:10]
    return {
        "status": status, "record": key, "experiment": experiment, "scale": SCALE, "seed": seed,
        "overrides": [f"+experiment={experiment}"],
        "config": {"model": {"name": "tiny_llama"}, "task": {"name": task, "low_data": low_data},
                   "method": method, "experiment": experiment, "scale_name": SCALE, "seed": seed},
        "git": {"commit": "0123456789", "dirty": False}, "hardware": "CPU test (2 cores)",
        "finished": "2026-01-01 00:00:00", "wall_seconds": 1.5, "peak_memory_mb": 100.0,
        "params": {"trainable": 1000, "base": 100000, "trainable_pct": 1.0},
        "dev": dict(test), "test": test, "train_examples": (low_data or {}).get("size", 16), "samples": [],
        # a dev curve that rises for two epochs and keeps the second (train.py's history and selected_epoch)
        "history": [{"step": 10 * (e + 1), "epoch": e, **{f"dev_{k}": v - 0.02 * (1 - e) for k, v in test.items()}}
                    for e in range(2)] + [{"step": 30, "epoch": 2, **{f"dev_{k}": v - 0.01 for k, v in test.items()}}],
        "selected_epoch": 1,
    }


def write_records(results_dir: Path) -> dict[str, int]:
    """Records of every experiment the notebooks read, with empty cells, several seeds/subsets and a failed run."""
    records = []
    for k, seed in itertools.product([1, 5, 10, 20], [0, 1]):
        records.append(make_record("prefix_length_sweep", {"name": "prefix", "num_virtual_tokens": k},
                                   {"BLEU": 0.3 + 0.01 * k + 0.02 * seed}, seed=seed))
    offset = {"prefix": 0.0, "infix": -0.05, "embedding_only": -0.1}
    for name, k in itertools.product(["prefix", "embedding_only", "infix"], [1, 10, 20]):
        if (name, k) != ("infix", 20):  # one cell without a run
            records.append(make_record("emb_vs_infix", {"name": name, "num_virtual_tokens": k},
                                       {"BLEU": 0.4 + 0.01 * k + offset[name], "ROUGE_L": 0.5}))
    for task, targets, r in itertools.product(["mnli", "wikisql"], [["q"], ["q", "v"], ["q", "k", "v", "o"]],
                                              [1, 2, 4, 8, 64]):
        if task == "wikisql" and r == 64 and targets != ["q"]:
            continue  # empty cells
        metric = {"mnli": "accuracy", "wikisql": "logical_form_accuracy"}[task]
        records.append(make_record("lora_rank_sweep", {"name": "lora", "r": r, "targets": targets},
                                   {metric: 0.4 + 0.005 * r + 0.02 * len(targets)}, task=task))
    for method, size, subset in itertools.product(["prefix", "full", "lora"], [50, 100, 200, 500], [0, 1, 2]):
        low = {"size": size, "subset": subset}
        bleu = 0.2 + 0.05 * math.log(size) + 0.01 * subset - 0.03 * (method == "full")
        prefix_init = {"init_text": "table-to-text:"} if method == "prefix" else {}  # the rows' settings
        records.append(make_record("low_data_e2e", {"name": method, **prefix_init}, {"BLEU": bleu}, low_data=low))
        if method != "lora":  # xsum: two methods only
            rouge = {"rouge1": 0.2, "rouge2": 0.05 + 0.0002 * size + 0.01 * subset, "rougeL": 0.15}
            prefix_init = {"init_text": "summarize"} if method == "prefix" else {}
            records.append(make_record("low_data_xsum", {"name": method, **prefix_init}, rouge, task="xsum",
                                       low_data=low))
    for method, seed in itertools.product(["full", "lora"], [0, 1]):  # no prefix: the E2E setting's prefix tables
        lora_rank = {"r": 4} if method == "lora" else {}  # the table's LoRA row is r=4
        records.append(make_record("e2e_main", {"name": method, **lora_rank}, {"BLEU": 0.5 + 0.01 * seed}, seed=seed))
    words = {"table-to-text:": 0.62, "summarize": 0.6, "active": 0.58, "elephant": 0.57, "banana": 0.59,
             "beautiful": 0.55, "divide": 0.58, "keep": 0.56}
    for (word, bleu), init in itertools.product(words.items(), ["auto", "random"]):
        if (word, init) != ("keep", "random"):  # one cell without a run
            for seed in range(1 + (word == "summarize")):  # one cell with two runs
                records.append(make_record("prefix_init", {"name": "prefix", "init": init, "init_text": word},
                                           {"BLEU": bleu - 0.06 * (init == "random") + 0.01 * seed}, seed=seed))
    records.append(make_record("low_data_e2e", {"name": "prefix"}, {}, status="failed",
                               low_data={"size": 50, "subset": 4}))
    # XSum's main table and the two budget checks: prefix-tuning (k=10, 0.09% stored) at twice the table's epochs
    xsum = [("xsum_main", "full", 2, None), ("xsum_main", "prefix", 2, None), ("xsum_main_budget", "prefix", 4, None),
            ("low_data_xsum_budget", "prefix", 6, {"size": 50, "subset": 0})]
    for (experiment, method, epochs, low), seed in itertools.product(xsum, [0, 1]):
        record = make_record(experiment, {"name": method, "num_virtual_tokens": 10, "init_text": "summarize"},
                             {"rouge1": 0.25, "rouge2": 0.05 + 0.001 * epochs + 0.002 * seed, "rougeL": 0.18},
                             task="xsum", seed=seed, low_data=low)
        record["config"]["trainer"] = {"epochs": epochs}
        record["params"]["stored_pct"] = 0.09 if method == "prefix" else None
        records.append(record)
    for record in records:
        write_record(record_path(results_dir, record["experiment"], SCALE, record["record"]), record)
    counts: dict[str, int] = {}
    for record in records:
        counts[record["experiment"]] = counts.get(record["experiment"], 0) + (record["status"] == "ok")
    return counts


def outputs_text(notebook) -> str:
    return "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def test_table_frame_and_summary(tmp_path: Path):
    """A figure's data are the report's cells: each run in its row and column, values as the table shows them."""
    import pandas as pd

    counts = write_records(tmp_path)
    frame = figures.table_frame(tmp_path, "low_data_e2e", SCALE)
    ours = frame[frame["kind"] == "ours"]
    assert ours["record"].nunique() == len(ours) == counts["low_data_e2e"] == 36  # the failed run is left out
    assert set(ours["row"]) == {"Prefix", "FT", "LoRA"} and set(ours["col"]) == {"50", "100", "200", "500"}
    stats = figures.summarize(ours.assign(size=ours["col"].astype(int)), ["row", "size"], "value", interval="ci95")
    row = stats[(stats["row"] == "FT") & (stats["size"] == 50)].iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(100 * (0.2 + 0.05 * math.log(50) + 0.01 - 0.03))
    assert row["sd"] == pytest.approx(1.0) and row["err"] == pytest.approx(4.302653 / math.sqrt(3))
    lora = figures.table_frame(tmp_path, "lora_rank_sweep", SCALE)
    assert set(lora["method"]) == {"Wq", "Wq,Wv", "Wq,Wk,Wv,Wo"} and set(lora["task"]) == {"mnli", "wikisql"}
    assert len(lora[lora["kind"] == "ours"]) == counts["lora_rank_sweep"]
    # the prefix-length table also reads the runs the shared E2E setting made in emb_vs_infix (one per setting)
    lengths = figures.table_frame(tmp_path, "prefix_length_sweep", SCALE)
    assert sorted(set(lengths["col"].astype(int))) == [1, 5, 10, 20] and len(lengths) == 8
    empty = figures.table_frame(tmp_path / "nothing", "lora_rank_sweep", SCALE)
    assert empty.empty and list(empty) == figures.FRAME_COLUMNS
    assert figures.summarize(empty, ["col"], "value").empty
    # the seeds of one low-data subset are one draw: 2 subsets x 2 seeds give 1 degree of freedom, as in the claims
    pairs = pd.DataFrame({"row": ["FT"] * 4, "value": [1.0, 1.0, 3.0, 3.0], "subset": [0, 0, 1, 1]})
    err = figures.summarize(pairs, ["row"], "value", interval="ci95")["err"].iloc[0]
    assert err == pytest.approx(12.706205)  # t(1) x (the sd of the subsets' means 1 and 3 over sqrt(2) = 1)


def test_zero_shot_level_is_drawn_near_the_values_and_named_when_far_below():
    """A zero-shot level far below the plotted range (E2E BLEU 4 against 52-58) would squash it: the legend names it
    instead; one within an axis height of them (XSum ROUGE-2 1.9 against 3.4-7.1) is a dashed line; none (no
    record) draws nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3)
    for ax, values, level in zip(axes, ([52.6, 58.1], [3.4, 7.1], [3.4, 7.1]), (4.0, 1.93, None)):
        ax.plot([50, 100], values)
        figures.zero_shot_level(ax, level)
    far, near, none = axes
    assert far.get_ylim()[0] > 40 and far.get_legend_handles_labels()[1] == ["zero-shot: 4.0 (below the axis)"]
    assert near.get_ylim()[0] < 1.93 and near.get_legend_handles_labels()[1] == ["zero-shot (1.9)"]
    assert [line.get_ydata()[0] for line in near.get_lines()[1:]] == [1.93]
    assert none.get_legend_handles_labels()[1] == [] and len(none.get_lines()) == 1
    plt.close(fig)


def test_settings_from_environment(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("PEFT_REPRO_RESULTS", raising=False)
    monkeypatch.delenv("PEFT_REPRO_SCALE", raising=False)
    assert figures.settings() == (REPO / "results", "default")
    monkeypatch.setenv("PEFT_REPRO_SCALE", "smoke")
    assert figures.settings() == (REPO / "results" / "smoke", "smoke")
    monkeypatch.setenv("PEFT_REPRO_RESULTS", str(tmp_path))
    assert figures.settings() == (tmp_path, "smoke")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_records(name: str, tmp_path: Path):
    counts = write_records(tmp_path)
    notebook = render.execute(REPO / "notebooks" / f"{name}.py", tmp_path, SCALE)
    png = tmp_path / "figures" / SCALE / f"{name}.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG
    text = outputs_text(notebook)
    assert "no records" not in text
    source = (REPO / "notebooks" / f"{name}.py").read_text()
    read = [table for table in counts if f'"{table}"' in source]  # the tables this notebook plots
    assert read == PLOTS[name]
    for table in PLOTS[name]:
        frame = figures.table_frame(tmp_path, table, SCALE)
        runs = frame[frame["kind"] == "ours"]["record"].nunique()
        assert runs > 0 and f"{runs} runs in table {table} at scale {SCALE}" in text
    assert any(out.get("output_type") == "display_data" and "image/png" in out.get("data", {})
               for cell in notebook.cells for out in cell.get("outputs", []))  # the figure is shown


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_records(name: str, tmp_path: Path):
    notebook = render.execute(REPO / "notebooks" / f"{name}.py", tmp_path, SCALE)
    png = tmp_path / "figures" / SCALE / f"{name}.png"
    assert png.stat().st_size > 0 and png.read_bytes()[:8] == PNG
    assert f"at scale {SCALE}" in outputs_text(notebook) and "no records for" in outputs_text(notebook)


def test_six_notebooks():
    assert sorted(NOTEBOOKS) == ["dev_curves", "emb_infix_prefix", "lora_heatmap", "low_data", "prefix_init",
                                 "prefix_length"] == sorted(PLOTS)


def test_dev_curves_follow_each_run_once(tmp_path: Path):
    """Each run's history in its row, once (e2e_main's columns are metrics), the kept epoch marked."""
    counts = write_records(tmp_path)
    frame = figures.dev_curve_frame(tmp_path, "e2e_main", SCALE)
    own = frame[frame["label"].isin(["FT", "LoRA"])]  # the table also reads emb_vs_infix's k=10 runs
    assert own["record"].nunique() == counts["e2e_main"] == 4 and len(own) == 4 * 3
    assert (frame.groupby("record").size() == 3).all()  # one point per epoch, not one per metric column
    ft = frame[(frame["label"] == "FT") & (frame["seed"] == 1)].sort_values("epoch")
    assert ft["dev"].tolist() == pytest.approx([49.0, 51.0, 50.0]) and ft["selected"].tolist() == [False, True, False]
    assert ft["last"].tolist() == [False, False, True]
    ranks = figures.dev_curve_frame(tmp_path, "lora_rank_sweep", SCALE)
    assert "Wq (wikisql) @ 4" in set(ranks["label"])  # columns that are settings name the cell
    xsum = figures.dev_curve_frame(tmp_path, "low_data_xsum", SCALE)  # a row per method and ROUGE score
    assert set(xsum["row"]) == {"Prefix R-2", "FT R-2"}  # the curve is ROUGE-2's (xsum's primary metric)
    assert (xsum.groupby("record").size() == 3).all() and xsum["record"].nunique() == counts["low_data_xsum"]
