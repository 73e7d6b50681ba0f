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
import sys
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
NOT_RESULT_KEYS = ("hydra.", "hydra/", "logger", "resume=", "results_dir=", "data_root=", "threads=", "record_samples=",
                   "zero_shot=", "lr_search=", "checkpoint_every_steps=", "shares_runs_with=")


# task settings that change only training or model selection, not the test items, prompt or decoding
TRAINING_ONLY = ("max_train_examples", "low_data", "max_dev_examples", "dev_decode", "dev_size", "hub_fallback")


def eval_setting(config: dict) -> dict:
    """What a run's test score depends on besides the trained weights: the model and the task's test items, prompt
    and decoding. Runs with equal settings share one zero-shot record."""
    return {"model": config["model"], "task": {k: v for k, v in config["task"].items() if k not in TRAINING_ONLY}}


def run_key(overrides: list[str]) -> str:
    """A file name for a run, readable and unique per set of overrides (order-independent)."""
    relevant = sorted(o for o in overrides if not o.startswith(NOT_RESULT_KEYS))
    slug = re.sub(r"[^A-Za-z0-9_.=,+-]+", "", ",".join(relevant))[:80] or "base"
    digest = hashlib.sha1("\n".join(relevant).encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


# experiment-level keys read only through interpolations into the method, trainer and task keys
EXPERIMENT_INPUTS = ("method_settings", "prompt_candidates", "init_words", "rank_budget")


def identity(config: dict) -> dict:
    """What a resolved config computes: paths, threads, logging and the table layout aside, and the experiment-level
    inputs (`EXPERIMENT_INPUTS`), whose values take effect through the trainer and method keys they fill (a longer lr
    grid or a new prompt list changes no prefix run). A key set to null counts as absent: a new option whose null
    default keeps the old behaviour leaves older records valid."""
    def drop_nulls(node):
        if isinstance(node, dict):
            return {k: drop_nulls(v) for k, v in node.items() if v is not None}
        return node

    return drop_nulls({k: v for k, v in config.items() if k + "=" not in NOT_RESULT_KEYS
                       and k not in ("logger", "hydra", "table", *EXPERIMENT_INPUTS)})


def same_settings(a: dict, b: dict, any_experiment: bool = False) -> bool:
    """Whether two resolved configs compute the same thing (`identity`); `any_experiment`: the experiment's name
    aside (two experiments of one setting, `shares_runs_with`, make the same runs)."""
    if any_experiment:
        a, b = {**a, "experiment": None}, {**b, "experiment": None}
    return identity(a) == identity(b)


def latest_per_setting(records: list[dict]) -> list[dict]:
    """One record per computed setting (`identity`, the seed included): the latest finished. Two records of the same
    settings come from a rerun under other code (e.g. a record made before a new option existed); the tables count
    the run once, as the newer code made it."""
    latest: dict[str, dict] = {}
    for record in records:  # the experiment's name aside: a table may pool experiments that share runs
        key = json.dumps([identity({**record["config"], "experiment": None}), record.get("seed")], sort_keys=True,
                         default=str)
        if key not in latest or str(record.get("finished", "")) > str(latest[key].get("finished", "")):
            latest[key] = record
    return [r for r in records if any(r is kept for kept in latest.values())]


def supersede(path: Path) -> Path:
    """Move a record aside (`*.json.superseded-<time>`, not read by `load_records`) instead of overwriting it."""
    target = path.with_name(f"{path.name}.superseded-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, target)
    return target


def find_done(path: Path, config: dict, data_fingerprint: str | None = None) -> Path | None:
    """The finished record of these settings: the run's own file, or one under another name in the same folder
    (a sweep that now lists a value explicitly, e.g. `task=mnli`, still finds the runs made with the default), or
    one in the folder of an experiment this one shares runs with (`shares_runs_with`: same setting, same runs).
    With `data_fingerprint`, only a record of the same data counts (records made before fingerprints are trusted)."""
    runs, own, scale = path.parents[2], path.parents[1].name, path.parent.name  # <runs>/<experiment>/<scale>/
    shared = [runs / name / scale for name in config.get("shares_runs_with") or [] if name != own]
    candidates = [path] + [p for p in sorted(path.parent.glob("*.json")) if p != path] + \
        [p for folder in shared for p in sorted(folder.glob("*.json"))]
    for candidate in candidates:
        if candidate.exists():
            done = load_json(candidate)
            # a diverged run is a result too: the same settings diverge again
            if done.get("status") in ("ok", "diverged") and \
                    same_settings(done["config"], config, any_experiment=candidate.parent != path.parent) and \
                    done.get("data_fingerprint", data_fingerprint) == data_fingerprint:
                return candidate
    return None


def resume_path(record_path: Path, config: dict, data_fingerprint: str | None) -> Path:
    """Where a run keeps its training state while it trains (not committed: .gitignore): named by its settings and
    data, so a run with other settings under the same name never continues from it."""
    tag = hashlib.sha1(json.dumps([identity(config), data_fingerprint], sort_keys=True, default=str).encode())
    return record_path.with_name(f"{record_path.stem}.{tag.hexdigest()[:8]}.resume.pt")


def portable_path(path) -> str | None:
    """A path as a record keeps it: relative to the repository when inside it, else omitted (None): no machine's
    absolute paths in committed records."""
    try:
        return str(Path(path).resolve().relative_to(repo_root().resolve()))
    except ValueError:
        return None


def state_path(record_path: Path) -> Path:
    """The trained state of an lr-grid point whose test evaluation is deferred (not committed: .gitignore)."""
    return record_path.with_name(record_path.stem + ".state.safetensors")


def record_path(results_dir: Path, experiment: str, scale: str, key: str) -> Path:
    return Path(results_dir) / "runs" / experiment / scale / f"{key}.json"


def write_record(path: Path, record: dict) -> None:
    write_atomic(path, json.dumps(record, indent=1, default=str))


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file of this process and a rename: a crash never leaves half a file, and two processes
    writing the same path never trip over each other's temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class MalformedRecord(ValueError):
    pass


def load_json(path: Path) -> dict:
    """A record; one that is not a JSON object (cut, edited by hand) is an error that names its file."""
    try:
        record = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedRecord(f"malformed record {path}: {e} (move it aside or delete it)") from e
    if not isinstance(record, dict):
        raise MalformedRecord(f"malformed record {path}: not a JSON object")
    return record


def load_records(results_dir: Path, experiment: str, scale: str) -> list[dict]:
    """Every record of one experiment and scale (`*.json` only: superseded ones are left out)."""
    return [load_json(path) for path in sorted((Path(results_dir) / "runs" / experiment / scale).glob("*.json"))]


def lookup(record: dict, dotted: str):
    node = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def lookup_first(record: dict, keys):
    """The value of the first of `keys` the record has (one table can show each task's own metric)."""
    for key in [keys] if isinstance(keys, str) else keys:
        if (value := lookup(record, key)) is not None:
            return value
    return None


def cell_label(value) -> str:
    if isinstance(value, list):
        return ",".join("W" + str(v) if len(str(v)) == 1 else str(v) for v in value)
    return str(value)


def _ordered(labels: set[str], order: list | None) -> list[str]:
    """Labels in the order the experiment lists them, then any others sorted."""
    first = [lab for lab in map(cell_label, order or []) if lab in labels]
    return first + sorted(labels - set(first))


def format_mean_sd(values: list[float], digits: int) -> str:
    """Mean, and with several runs their sample sd and count: '38.2 ± 1.1 (n=10)'; '–' when there is none."""
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {sd:.{digits}f} (n={len(values)})"


def _columns(spec: dict) -> list[dict]:
    """What a table shows per cell: one value key (`value`, cells pivoted by `cols`) or several (`metrics`)."""
    if spec.get("metrics"):
        return [{"digits": spec.get("digits", 1), "factor": 1.0, **m} for m in spec["metrics"]]
    return [{"name": "value", "value": spec["value"], "factor": spec.get("factor", 1.0),
             "digits": spec.get("digits", 1)}]


def _pivot(ok: list[dict], spec: dict) -> list[str]:
    """Markdown lines of one rows x cols pivot; with `metrics`, the columns are the metrics."""
    rows_key, columns = spec["rows"], _columns(spec)
    row_labels = _ordered({cell_label(lookup(r, rows_key)) for r in ok}, spec.get("row_order"))
    if spec.get("metrics"):
        col_labels = [m["name"] for m in columns]
        header = rows_key.split(".")[-1]
    else:
        col_labels = _ordered({cell_label(lookup(r, spec["cols"])) for r in ok}, spec.get("col_order"))
        header = rows_key.split(".")[-1] + " \\ " + spec["cols"].split(".")[-1]

    def values(rl, cl, metric):
        picked = [r for r in ok if cell_label(lookup(r, rows_key)) == rl
                  and (spec.get("metrics") or cell_label(lookup(r, spec["cols"])) == cl)]
        return [lookup_first(r, metric["value"]) * metric["factor"] for r in picked
                if lookup_first(r, metric["value"]) is not None]

    def cell(rl, cl):
        metric = next(m for m in columns if m["name"] == cl) if spec.get("metrics") else columns[0]
        return format_mean_sd(values(rl, cl, metric), metric["digits"])

    lines = ["| " + " | ".join([header] + col_labels) + " |", "|" + "---|" * (len(col_labels) + 1)]
    lines += ["| " + " | ".join([rl] + [cell(rl, cl) for cl in col_labels]) + " |" for rl in row_labels]
    if spec.get("params_row"):  # the trainable-parameter count of each column (a budget table prints them)
        counts = [sorted({r["params"]["trainable"] for r in ok if cell_label(lookup(r, spec["cols"])) == cl})
                  for cl in col_labels]
        lines.append("| " + " | ".join(["trainable params"] + ["/".join(f"{c:,}" for c in cs) or "–"
                                                                  for cs in counts]) + " |")
    return lines


def render_table(records: list[dict], spec: dict, title: str) -> tuple[str, str]:
    """(markdown, csv) of one experiment: a rows x cols pivot (mean ± sd over seeds and subsets), one per value of
    `spec.panels` if set (e.g. one per task), then every run."""
    columns = _columns(spec)
    ok = [r for r in records if r.get("status") == "ok"]
    ok.sort(key=lambda r: (str(lookup(r, spec.get("panels", "experiment"))), cell_label(lookup(r, spec["rows"])),
                           r["seed"], r["record"]))
    lines = [f"# {title}", ""]
    if spec.get("caption"):
        lines += [spec["caption"], ""]
    def shown(m):  # "value = `test.accuracy` x 100"; a list of keys reads "`a` or `b`"
        keys = "` or `".join([m["value"]] if isinstance(m["value"], str) else m["value"])
        return f"{m['name']} = `{keys}`" + (f" x {m['factor']:g}" if m["factor"] != 1 else "")

    axes = f"rows: `{spec['rows']}`" + (f"; columns: `{spec['cols']}`" if "cols" in spec else "")
    lines += [f"Cells: {', '.join(map(shown, columns))}; {axes}; mean ± sd (n runs) where a cell has several runs; "
              "'–' = no finished run.", ""]
    if spec.get("panels"):
        for panel in _ordered({cell_label(lookup(r, spec["panels"])) for r in ok}, spec.get("panel_order")):
            lines += [f"## {spec['panels'].split('.')[-1]} = {panel}", ""]
            lines += _pivot([r for r in ok if cell_label(lookup(r, spec["panels"])) == panel], spec) + [""]
    else:
        lines += _pivot(ok, spec) + [""]

    fields = ["row", "col", "seed", *[m["name"] for m in columns], "trainable_params", "trainable_pct", "model",
              "task", "train_examples", "commit", "dirty", "hardware", "wall_seconds", "finished", "record"]
    def scaled(r, m):
        value = lookup_first(r, m["value"])
        return None if value is None else round(value * m["factor"], 4)

    runs = [{
        "row": cell_label(lookup(r, spec["rows"])), "col": cell_label(lookup(r, spec.get("cols", "config.task.name"))),
        "seed": r["seed"], **{m["name"]: scaled(r, m) for m in columns},
        "trainable_params": r["params"]["trainable"], "trainable_pct": round(r["params"]["trainable_pct"], 4),
        "model": r["config"]["model"]["name"], "task": r["config"]["task"]["name"],
        "train_examples": r["train_examples"], "commit": r["git"]["commit"], "dirty": r["git"]["dirty"],
        "hardware": r["hardware"], "wall_seconds": round(r["wall_seconds"], 1), "finished": r["finished"],
        "record": r["record"],
    } for r in ok]
    lines += ["## Runs", "", "| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(str(run[c]) for c in fields) + " |" for run in runs]
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        lines += ["", f"{len(failed)} run(s) failed: " + ", ".join(r["record"] for r in failed)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(runs)
    return "\n".join(lines) + "\n", buf.getvalue()


def write_table(results_dir: Path, experiment: str, scale: str, spec: dict, title: str) -> Path:
    """Render from the records on disk into a new versioned file pair (none when the newest one says the same);
    returns the Markdown path."""
    from .lr_search import dev_selected  # lr_search reads records through this module

    records = load_records(results_dir, experiment, scale)
    # the runs at the learning rates chosen on dev, and the failed ones (the table counts them)
    records = dev_selected(latest_per_setting([r for r in records if r.get("status") == "ok"])) + [r for r in records
                                                                             if r.get("status") != "ok"]
    markdown, table_csv = render_table(records, spec, f"{title} — {experiment}, scale={scale}")
    folder = Path(results_dir) / "tables" / experiment
    versions = sorted(folder.glob(f"{experiment}_{scale}_*.md"))
    if versions and versions[-1].read_text().split("\n", 1)[-1] == markdown and \
            versions[-1].with_suffix(".csv").read_bytes() == table_csv.encode():
        return versions[-1]  # a rerun that changes nothing adds no version
    git = git_state()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    version = f"{stamp}_{git['commit']}{'-dirty' if git['dirty'] else ''}"
    folder.mkdir(parents=True, exist_ok=True)
    md_path = folder / f"{experiment}_{scale}_{version}.md"
    header = f"<!-- version {version}, rendered {time.strftime('%Y-%m-%d %H:%M:%S')} from {len(records)} records -->\n"
    write_atomic(md_path, header + markdown)
    write_atomic(md_path.with_suffix(".csv"), table_csv)
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
        try:
            path = write_table(Path(config.results_dir), config.experiment, config.scale_name, spec,
                               spec.get("title", config.experiment))
        except ValueError as err:  # Hydra would turn an exception into a warning and exit 0
            print(f"error: no table written: {err}", file=sys.stderr)
            sys.exit(2)  # SystemExit passes Hydra's callback guard: the sweep fails, its records stay
        print(f"table written: {path}")
