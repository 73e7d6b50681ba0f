"""Run records: provenance, I/O and resume.

Every run writes one JSON record under `results/runs/<experiment>/<scale>/`; the file name is derived from the
run's overrides, so re-running a sweep skips the cells that already have a record (a cut-off sweep resumes), and a
run of the same settings made elsewhere (`shares_runs_with`) is found instead of trained again. Tables and claims
are rendered from these records by `peft_repro.report`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

from .paths import repo_root


def git_state() -> dict:
    """The checkout's commit, read once per process (`__main__.main` reads it as a run starts): a process runs the
    code it imported, so its records name that commit even when the checkout moves on during a long sweep."""
    return dict(_git_state_at_first_call())


@functools.cache
def _git_state_at_first_call() -> dict:
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
    # the thread count says how much of the machine a run had: two lanes of two threads each ran several times slower
    threads = torch.get_num_threads()
    return f"CPU {cpu} ({os.cpu_count()} cores, {threads} torch thread{'s' if threads > 1 else ''})"


def peak_memory_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# overrides that change where or how fast a run goes, not what it computes
NOT_RESULT_KEYS = ("hydra.", "hydra/", "logger", "resume=", "results_dir=", "data_root=", "threads=", "record_samples=",
                   "zero_shot=", "lr_search=", "checkpoint_every_steps=", "shares_runs_with=", "task.test_metrics=")


# task settings that change only training or model selection, not the test items, prompt or decoding
TRAINING_ONLY = ("max_train_examples", "low_data", "max_dev_examples", "dev_decode", "dev_size")
# task settings that change only the test evaluation, not training or the dev scores the lr is chosen on
TEST_ONLY = ("max_eval_examples", "decode")


def eval_setting(config: dict) -> dict:
    """What a run's test score depends on besides the trained weights: the model and the task's test items, prompt
    and decoding. Runs with equal settings share one zero-shot record."""
    return {"model": {k: v for k, v in config["model"].items() if ("model", k) not in WHERE_FROM},
            "task": {k: v for k, v in config["task"].items()
                     if k not in TRAINING_ONLY and ("task", k) not in WHERE_FROM}}


def run_key(overrides: list[str]) -> str:
    """A file name for a run, readable and unique per set of overrides (order-independent)."""
    relevant = sorted(o for o in overrides if not o.startswith(NOT_RESULT_KEYS))
    slug = re.sub(r"[^A-Za-z0-9_.=,+-]+", "", ",".join(relevant))[:80] or "base"
    digest = hashlib.sha1("\n".join(relevant).encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


# experiment-level keys read only through interpolations into the method, trainer and task keys
EXPERIMENT_INPUTS = ("method_settings", "prompt_candidates", "init_words", "rank_budget")


# nested keys that say where inputs come from, not what is computed (the data fingerprint covers the data itself)
WHERE_FROM = (("task", "hub_fallback"), ("model", "cache_dir"))
# which test metrics a run scored where it ran (a machine without Java scores E2E's BLEU and NIST; `rescore` adds the
# rest from the outputs the record keeps, so the record keeps the key): not what the run computed
SCORED_THERE = (("task", "test_metrics"),)


def identity(config: dict) -> dict:
    """What a resolved config computes: paths, threads, logging, the test metrics scored where it ran
    (`SCORED_THERE`) and the table layout of older records aside, and the experiment-level inputs
    (`EXPERIMENT_INPUTS`), whose values take effect through the trainer and method keys they fill (a longer lr grid
    or a new prompt list changes no prefix run). A key set to null counts as absent: a new
    option whose null default keeps the old behaviour leaves older records valid."""
    def drop_nulls(node):
        if isinstance(node, dict):
            return {k: drop_nulls(v) for k, v in node.items() if v is not None}
        return node

    kept = {k: v for k, v in config.items() if k + "=" not in NOT_RESULT_KEYS
            and k not in ("logger", "hydra", "table", *EXPERIMENT_INPUTS)}
    for section, key in WHERE_FROM + SCORED_THERE:
        if isinstance(kept.get(section), dict):
            kept[section] = {k: v for k, v in kept[section].items() if k != key}
    return drop_nulls(kept)


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
    stamp = time.strftime('%Y%m%d-%H%M%S')
    target, n = path.with_name(f"{path.name}.superseded-{stamp}"), 1
    while target.exists():  # superseded twice within a second: keep both
        n += 1
        target = path.with_name(f"{path.name}.superseded-{stamp}-{n}")
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


def portable_config(config: dict) -> dict:
    """A resolved config as a record keeps it: the data and results folders relative to the repository, or omitted
    (None) when outside it (they say where files were, not what was computed)."""
    return {**config, **{key: portable_path(config[key]) for key in ("data_root", "results_dir") if config.get(key)}}


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

