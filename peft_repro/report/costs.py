"""What the runs of a scale cost, from their records: per experiment, method and hardware (which names the torch
threads a run had), the runs (lr-grid points, whose test is deferred or never made, counted apart), their summed wall
time and the median per run, split into training and test evaluation. Every number is a record's own
(`wall_seconds`, `train_seconds`, `test_seconds`); records say on which hardware they ran, not how loaded it was, so
times from a shared machine are upper bounds."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from ..results import load_json


def _minutes(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) / 60:.1f}" if seconds else "–"


def wall_time(record: dict) -> float:
    """A run's wall time: its own, or its training and test time where that is longer (a run resumed from a
    checkpoint keeps the training time before the kill, while its wall clock starts at the resume)."""
    return max(record.get("wall_seconds") or 0, (record.get("train_seconds") or 0) + (record.get("test_seconds") or 0))


def render_costs(results_dir: Path, scale: str) -> str:
    """Markdown: one row per (experiment, method, hardware) with records at `scale`, then the total."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for path in sorted(Path(results_dir, "runs").glob(f"*/{scale}/*.json")):
        record = load_json(path)
        method = (record.get("config") or {}).get("method", {}).get("name", "?")
        groups[(path.parent.parent.name, method, str(record.get("hardware", "?")))].append(record)
    lines = [f"# What the runs cost (scale `{scale}`)", "",
             "From the records' own times: `wall` is a run's whole time (training, dev and test evaluation; for a run "
             "resumed from a checkpoint, at least its training and test time: its clock started at the resume), "
             "`train` its training with the dev evaluations, `test` its test decoding and scoring. Grid points are "
             "lr-search runs without a test of their own. Records since session 10 name their torch threads in "
             "`hardware`; the lanes of sessions 7-9 ran two threads each on the 2 cores, 2.5-10x slower than one thread "
             "each (docs/default_scale.md), so their times, like any from a shared machine, are upper bounds. "
             "Superseded records (`*.json.superseded-*`, e.g. pilots) are not counted. A method that trains nothing "
             "(the discrete prompt) spends the rest of its wall time choosing its prompt on dev.", "",
             "| experiment | method | runs | grid points | wall hours | median wall (min) | median train (min) "
             "| median test (min) | hardware |",
             "|---|---|---|---|---|---|---|---|---|"]
    total_hours, total_runs, on_gpu = 0.0, 0, 0.0
    for (experiment, method, hardware), records in sorted(groups.items()):
        tested = [r for r in records if r.get("test") is not None]
        hours = sum(wall_time(r) for r in records) / 3600
        total_hours += hours
        on_gpu += hours * (not hardware.startswith("CPU"))  # results.hardware(): "CPU <model> (...)" or the GPU's name
        total_runs += len(records)
        lines.append(f"| {experiment} | {method} | {len(tested)} | {len(records) - len(tested)} | {hours:.2f} "
                     f"| {_minutes([wall_time(r) for r in tested if wall_time(r)])} "
                     f"| {_minutes([r['train_seconds'] for r in tested if r.get('train_seconds')])} "
                     f"| {_minutes([r['test_seconds'] for r in tested if r.get('test_seconds')])} | {hardware} |")
    split = f": {total_hours - on_gpu:.1f} on CPU, {on_gpu:.1f} on GPU" if on_gpu else " on CPU"
    lines += ["", f"Total: {total_runs} records, {total_hours:.1f} hours of wall time summed over runs{split}."]
    return "\n".join(lines) + "\n"
