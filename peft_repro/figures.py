"""Shared loading and plotting helpers for the notebooks in `notebooks/` (figures from run records, never training).

A figure draws the cells of one of the report's tables (`table_frame`: the same runs, placed by the same
`cells_of`, as `python -m peft_repro.report` shows) and saves itself as `<results_dir>/figures/<scale>/<name>.png`.
`settings()` picks the results folder and the scale from the environment: `PEFT_REPRO_SCALE` (default `default`) and
`PEFT_REPRO_RESULTS` (default `<repo>/results`, or `<repo>/results/smoke` for `smoke`, where smoke-scale runs write).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from .paths import results_dir as default_results_dir
from .report.cells import build_tables
from .report.spec import spec_of
from .results import lookup
from .stats import mean_variance, t_quantile

FRAME_COLUMNS = ["table", "kind", "row", "method", "task", "col", "value", "seed", "subset", "model", "record"]


def settings() -> tuple[Path, str]:
    """(results_dir, scale) from `PEFT_REPRO_RESULTS` and `PEFT_REPRO_SCALE`."""
    scale = os.environ.get("PEFT_REPRO_SCALE") or "default"
    return default_results_dir(scale), scale


def _built_table(results_dir, name: str, scale: str):
    """(spec, the report's built table) of experiments/<name>.yaml at `scale`."""
    spec = spec_of(name)
    if spec is None:
        raise ValueError(f"no table spec experiments/{name}.yaml")
    return spec, build_tables({name: spec}, Path(results_dir), scale)[name]


def table_frame(results_dir, name: str, scale: str):
    """One row per run of each cell of the report's table `name` (experiments/<name>.yaml), as a pandas DataFrame
    (empty, with the columns, if there is none). Columns `FRAME_COLUMNS`: `kind` is "ours", "zero-shot" or
    "majority"; `row` the table's row label and `method`/`task` its parts ("Wq,Wv (wikisql)": "Wq,Wv", "wikisql");
    `col` the column (a setting such as the rank, or a metric name); `value` the cell's number (x the table's
    factor, e.g. BLEU x100); `seed`/`subset` the run's seed and low-data subset."""
    import pandas as pd

    spec, table = _built_table(results_dir, name, scale)
    tasks = {f"{r['method']} ({r['task']})": r for r in (spec.get("ours") or {}).get("rows") or [] if r.get("task")}
    rows = []
    for row in table.rows:
        kind = "zero-shot" if row.label.startswith("Zero-shot") else \
            "majority" if row.label.startswith("Majority class") else "ours"
        method, task = (tasks[row.label]["method"], tasks[row.label]["task"]) if row.label in tasks else (row.label, None)
        for col, cell in row.cells.items():
            for run in cell.runs:
                rows.append({"table": name, "kind": kind, "row": row.label, "method": method,
                             "task": task or lookup(run.record, "config.task.name"), "col": col, "value": run.value,
                             "seed": run.key[0], "subset": run.key[1],
                             "model": lookup(run.record, "config.model.name"), "record": run.record.get("record")})
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    return frame


DEV_COLUMNS = ["table", "row", "col", "label", "record", "seed", "subset", "epoch", "dev", "selected", "last"]


def dev_curve_frame(results_dir, name: str, scale: str):
    """The dev curves of the runs in the report's table `name`: one row per run and epoch with the dev score of the
    task's primary metric (x100, as the run's `history` has it after each epoch), whether that epoch is the one the
    run kept (`selected`) and whether it is the run's last. A run appears once per row (tables whose columns are
    metrics show it in each), and once in tables with a row per metric ("FT R-1", "FT R-2"): in its primary metric's
    row (a run with a primary-metric row anywhere in the table is drawn there only); `label` is the row, or
    "row @ column" where the columns are settings (the rank)."""
    import pandas as pd

    from .lr_search import dev_curve, record_primary

    spec, table = _built_table(results_dir, name, scale)
    by_setting = not spec.get("metrics")
    shown = [(row, col, run) for row in table.rows if not row.label.startswith(("Zero-shot", "Majority class"))
             for col, cell in row.cells.items() for run in cell.runs]

    def of_primary(run) -> bool:
        return run.metric.split(".")[-1] == record_primary(run.record)

    # the curve is the primary metric's: a run shown in a row per metric is drawn in that metric's row only
    in_primary_row = {run.record.get("record") for _, _, run in shown if of_primary(run)}
    rows, seen = [], set()
    for row, col, run in shown:
        record = run.record
        if (row.label, record.get("record")) in seen or (record.get("record") in in_primary_row
                                                         and not of_primary(run)):
            continue
        seen.add((row.label, record.get("record")))
        curve = dev_curve(record)
        for epoch, dev in curve:
            rows.append({"table": name, "row": row.label, "col": col,
                         "label": f"{row.label} @ {col}" if by_setting else row.label,
                         "record": record.get("record"), "seed": run.key[0], "subset": run.key[1],
                         "epoch": epoch, "dev": 100 * dev, "selected": epoch == record.get("selected_epoch"),
                         "last": epoch == curve[-1][0]})
    return pd.DataFrame(rows, columns=DEV_COLUMNS)


def summarize(frame, by: list[str], value: str, factor: float = 1.0, interval: str = "sd"):
    """Mean, sd, n and an error half-width of `value` x `factor` per `by` group, runs without the value dropped.

    interval: "sd" (the half-width is the sample sd) or "ci95" (Student t 95% interval of the mean; the runs of one
    low-data subset, the frame's `subset`, are one cluster, as in the claims: `stats.mean_variance`). A group of one
    run (ci95: of one cluster) has its error NaN (drawn without an error bar).
    """
    import pandas as pd

    if value not in frame:
        return pd.DataFrame(columns=[*by, "mean", "sd", "n", "err"])
    data = frame.dropna(subset=[value]).assign(_v=lambda f: f[value] * factor)
    out = data.groupby(by, dropna=False)["_v"].agg(mean="mean", sd="std", n="count").reset_index()
    if interval == "ci95":
        out["err"] = [_ci95(group) for _, group in data.groupby(by, dropna=False)]
    elif interval == "sd":
        out["err"] = out["sd"]
    else:
        raise ValueError(f"interval must be 'sd' or 'ci95', not {interval!r}")
    return out


def _ci95(group) -> float:
    """The t 95% half-width of a group's mean, its runs clustered by low-data subset where they have one."""
    subsets = group["subset"] if "subset" in group else [None] * len(group)
    clusters = [("subset", s) if s is not None and s == s else ("run", i) for i, s in enumerate(subsets)]
    if len(set(clusters)) < 2:
        return math.nan
    var, df = mean_variance(list(group["_v"]), clusters)
    return t_quantile(0.975, df) * math.sqrt(var)


def zero_shot_level(ax, value: float | None, label: str = "zero-shot") -> None:
    """The untrained model's score on `ax` (every table shows it; a figure should too): a dashed line where it lies
    near the plotted values, else only a legend entry naming it, so that a level far below (E2E BLEU 4 against 50-60)
    does not squash the differences the figure is for. Call it after plotting and before `ax.legend()`."""
    import matplotlib.pyplot as plt

    if value is None or value != value:
        return
    lo, hi = ax.get_ylim()
    if lo - (hi - lo) <= value <= hi + (hi - lo):  # within one axis height of the plotted range: draw it
        ax.axhline(value, color="grey", ls="--", lw=1, label=f"{label} ({value:.1f})")
        return
    where = "below" if value < lo else "above"
    ax.add_line(plt.Line2D([], [], color="grey", ls="--", lw=1, label=f"{label}: {value:.1f} ({where} the axis)"))


def figure_path(results_dir, scale: str, name: str) -> Path:
    path = Path(results_dir) / "figures" / scale / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"figure written: {path}")
    return path


def no_records(experiments, scale: str, path: Path) -> Path:
    """Print "no records for X at scale Y" and save a figure saying so (nothing is invented)."""
    import matplotlib.pyplot as plt

    names = [experiments] if isinstance(experiments, str) else list(experiments)
    message = "\n".join(f"no records for {name} at scale {scale}" for name in names)
    print(message)
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12)
    ax.set_axis_off()
    save(fig, path)
    plt.close(fig)
    return path


def show(path: Path) -> None:
    """Display a saved PNG in a notebook (the notebooks draw with the Agg backend, so figures are not shown inline)."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return
    if get_ipython() is not None:
        display(Image(filename=str(path)))


def paper_table(name: str) -> dict:
    """A lecture table's spec, `experiments/<name>.yaml` (the papers' numbers under `rows`)."""
    return spec_of(name) or {}
