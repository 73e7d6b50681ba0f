"""Evaluation time of one default-scale run, before and after issue 16's changes, measured in one run.

Each side is a source tree: `--before REV` (default 2b14382, the last commit before the changes) is checked out into
a temporary git worktree, `after` is this checkout. Each side has one worker process (one torch thread) that loads
the model and a LoRA trained here once, then evaluates phase after phase as told; the two workers take turns phase
by phase (before first, then after first, alternately), so both meet about the same load:
- e2e_main: dev (50 MRs, greedy, the per-epoch selection) and test (200 MRs, beam 5, all five metrics), with a LoRA
  (r=4 on Wq,Wv) trained here once (`--train-steps`) so that the outputs have their real lengths; the before side
  decodes at batch 8 as e2e_main did, the after side at e2e_main's batch 32;
- lora_rank_sweep on MNLI: label scoring of dev (100 pairs) and test (400 pairs) at eval batch 32.
A phase's seconds are its decoding (or label scoring) plus its metrics; both parts are in `parts`. `cpu_seconds`
counts the CPU time of the worker and of its child processes (the JVM), which other work on the machine disturbs
less than the wall time.
A sweep's worker process evaluates many runs, and what it pays for the E2E test metrics depends on whether the
process already ran one: "e2e test" is a run's first test evaluation in its process (the after side's JVM is closed
before it, so it starts one, METEOR's paraphrase table included), "e2e test metrics, next run" scores the same
predictions again in the same process (the before side starts a JVM for every evaluation; the after side's JVM is
already running). Two totals: `one_run` (a run alone in its process: the four phases) and `sweep_run` (a later run
of a sweep's process: the test metrics of the "next run" phase instead of the first). A sweep of N runs per process
pays (one_run + (N - 1) * sweep_run) / N per run. Both count one dev evaluation; a default-scale e2e_main run makes
one per epoch (3), an lr-grid point three and no test: `per_run` adds the phases up as one run of each experiment
makes them (`--epochs` dev evaluations, then the test).
The predictions and scores of the two sides must be identical. Prints JSON (median seconds per side and phase,
ratios, the hardware); `--out FILE` also writes it. Not a test: run it on an otherwise idle machine where possible.

    python scripts/bench_eval.py [--repeat 2] [--out results/bench/eval_<host>.json]
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

WORKER = r"""
import json, os, resource, sys, time
from pathlib import Path
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
import peft_repro
from peft_repro.methods import apply_method
from peft_repro.models import load_model
from peft_repro.tasks import build_task
spec = json.loads(sys.argv[1])
package = Path(peft_repro.__file__).parent
assert package == Path(spec["tree"], "peft_repro"), f"peft_repro imported from {package}"
# an editable install finds a module the side lacks in its own checkout: ask the side's files
if (package / "evaluation.py").exists():
    from peft_repro.evaluation import Evaluator
else:  # a side older than peft_repro/evaluation.py
    from peft_repro.train import Evaluator
from peft_repro.decoding import DecodeConfig
from peft_repro.metrics import _coco


def cpu_seconds():
    # this process, its finished children, and its running ones (a JVM kept for later evaluations)
    finished = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = time.process_time() + finished.ru_utime + finished.ru_stime
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


torch.set_num_threads(1)
model, tok = load_model(OmegaConf.create(spec["model"]))
adapted = apply_method(model, spec["method"])
if spec["state"]:
    adapted.load_trainable_state_dict(load_file(spec["state"]))
adapted.eval()
kept = {}
print("READY", flush=True)
for line in sys.stdin:
    phase = json.loads(line)
    if phase.get("fresh_jvm") and hasattr(_coco, "close_jvm"):
        _coco.close_jvm()  # a run's first evaluation in its process
    if phase.get("rescore"):  # the metrics of an earlier phase's predictions, again, in this process
        evaluator, preds, items = kept[phase["rescore"]]
        start, start_cpu = time.perf_counter(), cpu_seconds()
        scores = evaluator.task.score(preds, items, full=True)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
        print("RESULT " + json.dumps({"seconds": wall, "cpu_seconds": cpu, "parts": {"metrics": wall},
                                      "predictions": preds, "scores": scores}), flush=True)
        continue
    task_cfg = OmegaConf.create(phase["task"])
    evaluator = Evaluator(build_task(task_cfg, spec["data_root"]), tok, task_cfg, phase["eval_batch_size"])
    decode = DecodeConfig(**phase["decode"]) if phase["decode"] else None
    items = evaluator.task.eval_items(phase["split"])
    start, start_cpu = time.perf_counter(), cpu_seconds()
    preds = evaluator.predict(adapted, items, decode, desc=phase["name"])
    predicted = time.perf_counter()
    scores = evaluator.task.score(preds, items, full=phase["full"])
    end, cpu = time.perf_counter(), cpu_seconds() - start_cpu
    kept[phase["name"]] = evaluator, preds, items
    print("RESULT " + json.dumps({"seconds": end - start, "cpu_seconds": cpu,
                                  "parts": {"predict": predicted - start, "metrics": end - predicted},
                                  "predictions": preds, "scores": scores}), flush=True)
"""


def conf(path: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(REPO / "conf" / path), resolve=True)


def phases(side: str, args) -> list[dict]:
    e2e = conf("task/e2e.yaml") | {"max_train_examples": 200, "max_eval_examples": args.test_items,
                                   "max_dev_examples": args.dev_items}
    mnli = conf("task/mnli.yaml") | {"max_eval_examples": args.mnli_test_items, "max_dev_examples": args.mnli_dev_items}
    beam_batch = 8 if side == "before" else 32  # e2e_main's test decoding batch before and after
    return [
        {"name": "e2e dev", "task": e2e, "split": "dev", "full": False, "eval_batch_size": 32,
         "decode": {"num_beams": 1, "max_new_tokens": 64, "batch_size": 16 if side == "before" else 32}},
        {"name": "e2e test", "task": e2e, "split": "test", "full": True, "eval_batch_size": 32, "fresh_jvm": True,
         "decode": {"num_beams": 5, "max_new_tokens": 64, "batch_size": beam_batch}},
        {"name": NEXT_RUN, "rescore": "e2e test"},
        {"name": "mnli dev", "task": mnli, "split": "dev", "full": False, "eval_batch_size": 32, "decode": None},
        {"name": "mnli test", "task": mnli, "split": "test", "full": True, "eval_batch_size": 32, "decode": None},
    ]


def train_adapter(args, out: Path) -> Path:
    """A LoRA trained briefly on E2E with this checkout's trainer: outputs of realistic length to decode."""
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from peft_repro.decoding import DecodeConfig
    from peft_repro.methods import apply_method
    from peft_repro.models import load_model
    from peft_repro.tasks import build_task
    from peft_repro.train import TrainConfig, train

    torch.set_num_threads(1)
    model, tok = load_model(OmegaConf.create(conf("model/smollm2_135m.yaml")))
    adapted = apply_method(model, METHOD)
    task_cfg = OmegaConf.create(conf("task/e2e.yaml") | {"max_train_examples": 8 * args.train_steps,
                                                          "max_eval_examples": 4})
    cfg = TrainConfig(epochs=1, batch_size=8, lr=2e-3, warmup_steps=5, precision="fp32", save_checkpoint=False)
    out_state = train(adapted, tok, build_task(task_cfg, args.data_root), task_cfg, cfg,
                      DecodeConfig(max_new_tokens=8), None, out, evaluate_test=False)["state"]
    path = out / "lora.safetensors"
    save_file({k: v.contiguous() for k, v in out_state.items()}, str(path))
    return path


METHOD = {"name": "lora", "r": 4, "targets": ["q", "v"]}
NEXT_RUN = "e2e test metrics, next run"


class Side:
    """One side's worker process: the model loaded once, then one phase per request."""

    def __init__(self, tree: Path, name: str, state: Path, args):
        self.name, self.phases = name, {p["name"]: p for p in phases(name, args)}
        spec = {"tree": str(tree.resolve()), "model": conf("model/smollm2_135m.yaml"), "method": METHOD,
                "state": str(state), "data_root": args.data_root}
        env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec)], cwd=tree, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self._expect("READY")

    def run(self, phase: str) -> dict:
        self.proc.stdin.write(json.dumps(self.phases[phase]) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._expect("RESULT ")[len("RESULT "):])

    def _expect(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line
        self.stderr.seek(0)
        sys.exit(f"error: the {self.name} side failed:\n{self.stderr.read()[-3000:]}")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()
        self.stderr.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="2b14382", help="git revision of the before side")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved runs of each side")
    parser.add_argument("--train-steps", type=int, default=25)
    parser.add_argument("--test-items", type=int, default=200)
    parser.add_argument("--dev-items", type=int, default=50)
    parser.add_argument("--mnli-test-items", type=int, default=400)
    parser.add_argument("--mnli-dev-items", type=int, default=100)
    parser.add_argument("--data-root", default=os.environ.get("PEFT_REPRO_DATA_ROOT", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--epochs", type=int, default=3, help="dev evaluations of a run (per_run totals)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))  # this checkout, not another one an editable install points to
    from peft_repro.results import git_state, hardware

    names = [p["name"] for p in phases("after", args)]
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=REPO, check=True,
                       capture_output=True)
        try:
            state = train_adapter(args, Path(tmp))
            sides = {"before": Side(before, "before", state, args), "after": Side(REPO, "after", state, args)}
            turn = 0
            for _ in range(args.repeat):
                results = {"before": {}, "after": {}}
                for name in names:
                    order = ["before", "after"] if turn % 2 == 0 else ["after", "before"]
                    turn += 1
                    for side in order:
                        results[side][name] = sides[side].run(name)
                        print(f"{side:6} {name}: {results[side][name]['seconds']:.1f} s", file=sys.stderr)
                for side in sides:
                    runs[side].append(results[side])
            for side in sides.values():
                side.close()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=REPO, capture_output=True)

    seconds = {side: {n: statistics.median(r[n]["seconds"] for r in runs[side]) for n in names} for side in runs}
    cpu = {side: {n: statistics.median(r[n]["cpu_seconds"] for r in runs[side]) for n in names} for side in runs}
    parts = {side: {n: {part: statistics.median(r[n]["parts"][part] for r in runs[side])
                        for part in runs[side][0][n]["parts"]} for n in names} for side in runs}
    first = runs["before"][0]
    identical = {n: all(r[n]["predictions"] == first[n]["predictions"] for side in runs for r in runs[side])
                 for n in names}
    identical_scores = {n: all(r[n]["scores"] == first[n]["scores"] for side in runs for r in runs[side])
                        for n in names}
    one_run = {side: sum(v for n, v in seconds[side].items() if n != NEXT_RUN) for side in seconds}
    sweep_run = {side: one_run[side] - parts[side]["e2e test"]["metrics"] + seconds[side][NEXT_RUN]
                 for side in seconds}
    cpu_one_run = {side: sum(v for n, v in cpu[side].items() if n != NEXT_RUN) for side in cpu}
    # what one default-scale run of each experiment evaluates: dev once per epoch, then test
    as_run = {side: {"e2e_main": args.epochs * seconds[side]["e2e dev"] + seconds[side]["e2e test"],
                     "e2e_main, later run of a sweep": args.epochs * seconds[side]["e2e dev"]
                     + parts[side]["e2e test"]["predict"] + seconds[side][NEXT_RUN],
                     "lora_rank_sweep (mnli)": args.epochs * seconds[side]["mnli dev"] + seconds[side]["mnli test"]}
              for side in seconds}
    report = {
        "benchmark": "evaluation of one default-scale e2e_main run (dev + test) and of lora_rank_sweep on MNLI",
        "before": args.before, "after": git_state(), "hardware": hardware(), "threads": 1, "repeat": args.repeat,
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        "sizes": {"e2e dev": args.dev_items, "e2e test": args.test_items, "mnli dev": args.mnli_dev_items,
                  "mnli test": args.mnli_test_items},
        "seconds": seconds, "parts": parts, "identical_predictions": identical, "identical_scores": identical_scores,
        "speedup": {n: seconds["before"][n] / seconds["after"][n] for n in names},
        "total_seconds": {"one_run": one_run, "sweep_run": sweep_run},
        "speedup_total": one_run["before"] / one_run["after"],
        "speedup_total_sweep_run": sweep_run["before"] / sweep_run["after"],
        "per_run": {"epochs": args.epochs, "seconds": as_run,
                    "speedup": {n: as_run["before"][n] / as_run["after"][n] for n in as_run["after"]}},
        "cpu_seconds": cpu, "cpu_speedup": {n: cpu["before"][n] / cpu["after"][n] for n in names},
        "cpu_speedup_total": cpu_one_run["before"] / cpu_one_run["after"],
        "load_average": os.getloadavg(),
        "scores": {n: runs["after"][0][n]["scores"] for n in names},
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
