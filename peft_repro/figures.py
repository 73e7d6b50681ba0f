"""Shared loading and plotting helpers for the notebooks in `notebooks/` (figures from run records, never training).

The notebooks read the records that runs left under `<results_dir>/runs/<experiment>/<scale>/` and save each figure
as `<results_dir>/figures/<scale>/<name>.png`. `settings()` picks the results folder and the scale from the
environment: `PEFT_REPRO_SCALE` (default `default`) and `PEFT_REPRO_RESULTS` (default `<repo>/results`, or
`<repo>/results/smoke` for `smoke`, where smoke-scale runs write).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from .models import repo_root
from .lr_search import dev_selected
from .results import cell_label, latest_per_setting, load_records, lookup
from .tasks import task_classes

# each task's headline test metric; records keep them as fractions
PRIMARY_METRIC = {name: task.primary_metric for name, task in task_classes().items()}

COLUMNS = ["record", "experiment", "scale", "seed", "status", "model", "task", "method", "r", "targets",
           "num_virtual_tokens", "init_text", "low_data_size", "low_data_subset", "train_examples", "trainable",
           "trainable_pct", "commit", "dirty", "finished", "wall_seconds"]


def settings() -> tuple[Path, str]:
    """(results_dir, scale) from `PEFT_REPRO_RESULTS` and `PEFT_REPRO_SCALE`."""
    scale = os.environ.get("PEFT_REPRO_SCALE") or "default"
    default = repo_root() / "results" / ("smoke" if scale == "smoke" else "")
    return Path(os.environ.get("PEFT_REPRO_RESULTS") or default), scale


def _row(record: dict) -> dict:
    row = {
        "record": record.get("record"), "experiment": record.get("experiment"), "scale": record.get("scale"),
        "seed": record.get("seed"), "status": record.get("status"),
        "model": lookup(record, "config.model.name"), "task": lookup(record, "config.task.name"),
        "method": lookup(record, "config.method.name"), "r": lookup(record, "config.method.r"),
        "targets": None if (t := lookup(record, "config.method.targets")) is None else cell_label(t),
        "num_virtual_tokens": lookup(record, "config.method.num_virtual_tokens"),
        "init_text": lookup(record, "config.method.init_text"),
        "low_data_size": lookup(record, "config.task.low_data.size"),
        "low_data_subset": lookup(record, "config.task.low_data.subset"),
        "train_examples": record.get("train_examples"),
        "trainable": lookup(record, "params.trainable"), "trainable_pct": lookup(record, "params.trainable_pct"),
        "commit": lookup(record, "git.commit"), "dirty": lookup(record, "git.dirty"),
        "finished": record.get("finished"), "wall_seconds": record.get("wall_seconds"),
    }
    for split in ("dev", "test"):
        for key, value in (record.get(split) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[f"{split}.{key}"] = float(value)
    return row


def records_frame(results_dir, experiment: str, scale: str, include_failed: bool = False):
    """One row per run record of `experiment` at `scale` (a pandas DataFrame; empty, with the columns, if none).

    Columns: `COLUMNS` (config fields flattened: `method` is `config.method.name`, `targets` a label like "Wq,Wv",
    `low_data_size`/`low_data_subset` from `config.task.low_data`) plus `dev.<metric>` and `test.<metric>` as in
    the record (fractions). Failed runs are left out unless `include_failed`.
    """
    import pandas as pd

    records = load_records(Path(results_dir), experiment, scale)
    # one record per setting, and only the runs at the lr chosen on dev
    ok = dev_selected(latest_per_setting([r for r in records if r.get("status") == "ok"]))
    rows = [_row(r) for r in ok + [r for r in records if include_failed and r.get("status") != "ok"]]
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    return frame


# two-sided 95% Student t quantiles by degrees of freedom (no scipy in the lock); 1.96 beyond 30
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(dof: int) -> float:
    return _T975[dof - 1] if 1 <= dof <= len(_T975) else 1.96


def summarize(frame, by: list[str], value: str, factor: float = 1.0, interval: str = "sd"):
    """Mean, sd, n and an error half-width of `value` x `factor` per `by` group, runs without the value dropped.

    interval: "sd" (the half-width is the sample sd) or "ci95" (Student t 95% interval of the mean). A group of one
    run has sd and error NaN (drawn without an error bar).
    """
    import pandas as pd

    if value not in frame:
        return pd.DataFrame(columns=[*by, "mean", "sd", "n", "err"])
    data = frame.dropna(subset=[value]).assign(_v=lambda f: f[value] * factor)
    out = data.groupby(by, dropna=False)["_v"].agg(mean="mean", sd="std", n="count").reset_index()
    if interval == "ci95":
        out["err"] = [sd * t975(n - 1) / math.sqrt(n) if n > 1 else math.nan for sd, n in zip(out["sd"], out["n"])]
    elif interval == "sd":
        out["err"] = out["sd"]
    else:
        raise ValueError(f"interval must be 'sd' or 'ci95', not {interval!r}")
    return out


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
    """A lecture table from `experiments/<name>.yaml` (the papers' numbers)."""
    import yaml

    return yaml.safe_load((repo_root() / "experiments" / f"{name}.yaml").read_text())
