"""Score finished runs again from the outputs their records keep:
`python -m peft_repro.rescore RECORD_OR_FOLDER ... [--metrics NAME ...]`.

A run decoded where the E2E scorer cannot run (a GPU machine has no Java: METEOR, ROUGE-L and CIDEr need it) keeps
every test output (`record_samples` at least its test size) and the metrics it could compute (`task.test_metrics`,
e.g. [BLEU, NIST]); here the other metrics are computed from those outputs and the record's `test` gets them, with
`rescored` saying what, when, where and by which commit. The per-item statistics (`test_items`) do not change: they
belong to the primary metric, which the run computed already. A record whose outputs are not all kept is an error.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from . import results
from .tasks import EvalItem, task_classes


class NoTestResult(ValueError):
    """A diverged run, an lr-grid point whose test waits, or (without --metrics) a run scored on every metric of its
    task: nothing to score again (skipped in a folder)."""


def rescore(path: Path, metrics: list[str] | None) -> dict:
    record = results.load_json(path)
    if record.get("status") != "ok" or record.get("test") is None:
        raise NoTestResult(f"{path}: no test result to score again")
    if not metrics and (not record["config"]["task"].get("test_metrics") or record.get("rescored")):
        raise NoTestResult(f"{path}: scored on every metric already")
    samples, items = record.get("samples") or [], (record.get("test_items") or {}).get("ids") or []
    if len(samples) != len(items):
        raise ValueError(f"{path} keeps {len(samples)} of its {len(items)} test outputs; rescoring needs them all "
                         "(run with record_samples >= the test size)")
    task_cfg = OmegaConf.create(record["config"]["task"])
    if metrics:
        task_cfg.test_metrics = list(metrics)
    elif "test_metrics" in task_cfg:
        del task_cfg["test_metrics"]  # every metric of the task
    task = task_classes()[task_cfg.name](task_cfg, record["config"].get("data_root"))
    eval_items = [EvalItem(s["source"], s["references"], s.get("label")) for s in samples]
    scores = task.score([s["prediction"] for s in samples], eval_items, full=True)
    record["test"] = {**record["test"], **scores}
    record["rescored"] = {"metrics": sorted(scores), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                          "git": results.git_state(), "hardware": results.hardware()}
    results.write_record(path, record)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peft_repro.rescore", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="records, or folders of records")
    parser.add_argument("--metrics", nargs="+", help="only these metrics (default: all of the task's)")
    args = parser.parse_args(argv)
    paths = [(p, path.is_dir()) for path in args.paths for p in (sorted(path.glob("*.json")) if path.is_dir()
                                                                   else [path])]
    try:
        for path, in_folder in paths:
            try:
                print(f"{path.name}: {rescore(path, args.metrics)}")
            except NoTestResult as err:
                if not in_folder:
                    raise
                print(f"{path.name}: skipped ({str(err).split(': ', 1)[-1]})")
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
