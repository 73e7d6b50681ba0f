"""Run records and versioned experiment tables.

Every run writes one JSON record under `results/runs/<experiment>/<scale>/`; the file name is derived from the
run's overrides, so re-running a sweep skips the cells that already have a record (a cut-off sweep resumes).
At the end of a sweep, `TableCallback` renders the experiment's table as Markdown and CSV under
`results/tables/<experiment>/`, with the date and commit in the file name; earlier versions stay.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

from .models import repo_root


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "dirty": dirty}


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu} ({os.cpu_count()} cores)"


def peak_memory_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# overrides that change where or how fast a run goes, not what it computes
NOT_RESULT_KEYS = ("hydra.", "hydra/", "logger", "resume=", "results_dir=", "data_root=", "threads=", "record_samples=")


def run_key(overrides: list[str]) -> str:
    """A file name for a run, readable and unique per set of overrides (order-independent)."""
    relevant = sorted(o for o in overrides if not o.startswith(NOT_RESULT_KEYS))
    slug = re.sub(r"[^A-Za-z0-9_.=,+-]+", "", ",".join(relevant))[:80] or "base"
    digest = hashlib.sha1("\n".join(relevant).encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


def same_settings(a: dict, b: dict) -> bool:
    """Whether two resolved configs compute the same thing (paths, threads and logging aside)."""
    def strip(c):
        return {k: v for k, v in c.items() if k + "=" not in NOT_RESULT_KEYS and k not in ("logger", "hydra")}
    return strip(a) == strip(b)


def supersede(path: Path) -> Path:
    """Move a record aside (`*.json.superseded-<time>`, not read by `load_records`) instead of overwriting it."""
    target = path.with_name(f"{path.name}.superseded-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, target)
    return target


def record_path(results_dir: Path, experiment: str, scale: str, key: str) -> Path:
    return Path(results_dir) / "runs" / experiment / scale / f"{key}.json"


def write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)  # a crash never leaves half a record


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def load_records(results_dir: Path, experiment: str, scale: str) -> list[dict]:
    folder = Path(results_dir) / "runs" / experiment / scale
    return [load_json(p) for p in sorted(folder.glob("*.json"))]


def lookup(record: dict, dotted: str):
    node = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _label(value) -> str:
    if isinstance(value, list):
        return ",".join("W" + str(v) if len(str(v)) == 1 else str(v) for v in value)
    return str(value)


def _ordered(labels: set[str], order: list | None) -> list[str]:
    """Labels in the order the experiment lists them, then any others sorted."""
    first = [lab for lab in map(_label, order or []) if lab in labels]
    return first + sorted(labels - set(first))


def render_table(records: list[dict], spec: dict, title: str) -> tuple[str, str]:
    """(markdown, csv) of one experiment: a rows x cols pivot of `spec.value` (mean over seeds) and every run."""
    rows_key, cols_key, value_key = spec["rows"], spec["cols"], spec["value"]
    factor = spec.get("factor", 1.0)
    ok = [r for r in records if r.get("status") == "ok"]
    row_labels = _ordered({_label(lookup(r, rows_key)) for r in ok}, spec.get("row_order"))
    col_labels = _ordered({_label(lookup(r, cols_key)) for r in ok}, spec.get("col_order"))
    ok.sort(key=lambda r: (row_labels.index(_label(lookup(r, rows_key))),
                           col_labels.index(_label(lookup(r, cols_key))), r["seed"]))
    cells: dict[tuple[str, str], list[float]] = {}
    for r in ok:
        v = lookup(r, value_key)
        if v is not None:
            cells.setdefault((_label(lookup(r, rows_key)), _label(lookup(r, cols_key))), []).append(v * factor)

    def cell(rl, cl):
        vals = cells.get((rl, cl))
        if not vals:
            return "–"
        mean = sum(vals) / len(vals)
        return f"{mean:.{spec.get('digits', 1)}f}" + (f" (n={len(vals)})" if len(vals) > 1 else "")

    lines = [f"# {title}", ""]
    if spec.get("caption"):
        lines += [spec["caption"], ""]
    lines += [f"Value: `{value_key}`" + (f" x {factor:g}" if factor != 1 else "") +
              f"; rows: `{rows_key}`; columns: `{cols_key}`. '–' = no finished run.", ""]
    lines += ["| " + " | ".join([rows_key.split(".")[-1] + " \\ " + cols_key.split(".")[-1]] + col_labels) + " |",
              "|" + "---|" * (len(col_labels) + 1)]
    lines += ["| " + " | ".join([rl] + [cell(rl, cl) for cl in col_labels]) + " |" for rl in row_labels]

    columns = ["row", "col", "seed", "value", "trainable_params", "trainable_pct", "model", "task",
               "train_examples", "commit", "dirty", "hardware", "wall_seconds", "finished", "record"]
    runs = [{
        "row": _label(lookup(r, rows_key)), "col": _label(lookup(r, cols_key)), "seed": r["seed"],
        "value": None if lookup(r, value_key) is None else round(lookup(r, value_key) * factor, 4),
        "trainable_params": r["params"]["trainable"], "trainable_pct": round(r["params"]["trainable_pct"], 4),
        "model": r["config"]["model"]["name"], "task": r["config"]["task"]["name"],
        "train_examples": r["train_examples"], "commit": r["git"]["commit"], "dirty": r["git"]["dirty"],
        "hardware": r["hardware"], "wall_seconds": round(r["wall_seconds"], 1), "finished": r["finished"],
        "record": r["record"],
    } for r in ok]
    lines += ["", "## Runs", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(run[c]) for c in columns) + " |" for run in runs]
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        lines += ["", f"{len(failed)} run(s) failed: " + ", ".join(r["record"] for r in failed)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(runs)
    return "\n".join(lines) + "\n", buf.getvalue()


def write_table(results_dir: Path, experiment: str, scale: str, spec: dict, title: str) -> Path:
    """Render from the records on disk into a new versioned file pair; returns the Markdown path."""
    records = load_records(results_dir, experiment, scale)
    markdown, table_csv = render_table(records, spec, f"{title} — {experiment}, scale={scale}")
    git = git_state()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    version = f"{stamp}_{git['commit']}{'-dirty' if git['dirty'] else ''}"
    folder = Path(results_dir) / "tables" / experiment
    folder.mkdir(parents=True, exist_ok=True)
    md_path = folder / f"{experiment}_{scale}_{version}.md"
    header = f"<!-- version {version}, rendered {time.strftime('%Y-%m-%d %H:%M:%S')} from {len(records)} records -->\n"
    md_path.write_text(header + markdown)
    md_path.with_suffix(".csv").write_text(table_csv)
    return md_path


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    Callback = object


class TableCallback(Callback):
    """Hydra callback: after a multirun, render the experiment's table from all of its records."""

    def on_multirun_end(self, config, **kwargs) -> None:
        if not config.get("table"):
            return
        from omegaconf import OmegaConf

        spec = OmegaConf.to_container(config.table, resolve=True)
        path = write_table(Path(config.results_dir), config.experiment, config.scale_name, spec,
                           spec.get("title", config.experiment))
        print(f"table written: {path}")
