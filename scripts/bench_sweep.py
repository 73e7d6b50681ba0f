"""Wall time of one sweep under several Hydra launchers, interleaved, with each cell's test metrics compared.

Each launcher runs the same sweep command into its own empty results folder (so every cell trains), in turns
(basic, local_parallel, fused, ... then again): the wall time counts the whole command (imports, model loads,
zero-shot record, training, evaluation, table). Cells must score alike under every launcher (test metrics equal;
losses equal up to float noise). Prints JSON with the median wall time per launcher and the ratios against the
first; `--out FILE` also writes it. Not a test: run it on an otherwise idle machine.

    python scripts/bench_sweep.py [--repeat 2] [--out results/bench/sweep_smoke_<host>.json] [-- EXTRA OVERRIDES]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = {
    "basic": [],  # Hydra's default: one job after another in this process
    "local_parallel": ["hydra/launcher=local_parallel"],  # 2 joblib workers, one torch thread each
    "fused": ["hydra/launcher=fused"],  # one process, all threads
    "fused_2_processes": ["hydra/launcher=fused", "hydra.launcher.processes=2"],
}


def run_sweep(args, launcher: str, folder: Path) -> float:
    command = [sys.executable, "-m", "peft_repro", f"+experiment={args.experiment}", f"scale={args.scale}",
               "logger=none", f"results_dir={folder}", f"hydra.sweep.dir={folder}/multirun", *LAUNCHERS[launcher],
               *args.overrides]
    start = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{launcher} failed:\n{out.stderr[-3000:]}")
    return seconds


def cells(folder: Path, args) -> dict:
    from peft_repro.results import load_records

    return {r["record"]: r for r in load_records(folder, args.experiment, args.scale)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="lora_rank_sweep")
    parser.add_argument("--scale", default="smoke")
    parser.add_argument("--launchers", nargs="+", default=list(LAUNCHERS), choices=list(LAUNCHERS))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("overrides", nargs="*", help="after --: more overrides for every launcher's sweep")
    args = parser.parse_args()
    from peft_repro.results import git_state, hardware

    seconds = {name: [] for name in args.launchers}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for turn in range(args.repeat):
            for name in args.launchers:
                folder = Path(tmp) / f"{name}-{turn}"
                seconds[name].append(run_sweep(args, name, folder))
                print(f"{name} turn {turn}: {seconds[name][-1]:.1f} s", file=sys.stderr, flush=True)
        reference = cells(Path(tmp) / f"{args.launchers[0]}-0", args)
        agreement = {}
        for name in args.launchers:
            ours = cells(Path(tmp) / f"{name}-0", args)
            same_cells = ours.keys() == reference.keys()
            losses = [abs(a.get("loss", 0) - b.get("loss", 0)) for key in reference if key in ours
                      for a, b in zip(ours[key]["history"], reference[key]["history"])]
            agreement[name] = {"cells": len(ours), "same_cells": same_cells,
                               "test_equal": same_cells and all(ours[k]["test"] == reference[k]["test"]
                                                                for k in reference),
                               "max_loss_difference": max(losses, default=None)}
    first = args.launchers[0]
    median = {name: statistics.median(values) for name, values in seconds.items()}
    report = {"experiment": args.experiment, "scale": args.scale, "overrides": args.overrides,
              "hardware": hardware(), "cpu_count": os.cpu_count(), "git": git_state(), "repeat": args.repeat,
              "seconds": seconds, "median_seconds": median,
              f"speedup_vs_{first}": {name: median[first] / m for name, m in median.items()},
              "agreement_with_" + first: agreement}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
