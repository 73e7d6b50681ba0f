"""Time peft_repro's E2E evaluator against the naive way of computing the same five scores, in one run.

Naive: pycocoevalcap's per-metric classes as measure_scores.py drives them (a PTBTokenizer JVM for the references,
another for the outputs, a METEOR JVM fed one MR at a time, then ROUGE_L and CIDEr) and BLEU and NIST computed
each on its own. Ours: `score_e2e`, one JVM for the tokenizer and METEOR, overlapped with the Python metrics,
timed twice: with a fresh JVM (a run's first evaluation in its process; the JVM is closed after it, so its CPU time
counts) and with the process's JVM already running (every later evaluation of a sweep's worker process; that
JVM's CPU time is not counted: it only ends with the process).

    python scripts/bench_e2e_metrics.py [REFS SYS] [--repeat N]

Defaults to the full E2E test set of the conformance vectors ($PEFT_REPRO_SHARED, default ../shared).
The naive tokenizer writes temporary files next to its jar, so it needs a writable pycocoevalcap install.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from peft_repro.metrics import _coco
from peft_repro.metrics.e2e import format_scores, load_files, score_e2e

REPO = Path(__file__).resolve().parents[1]
TGEN = Path(os.environ.get("PEFT_REPRO_SHARED", REPO.parent / "shared")) / "conformance" / "e2e_metrics" / "tgen_test"


def naive(outputs: list[str], references: list[list[str]]) -> dict[str, float]:
    scores = {name: score_e2e(outputs, references, metrics=[name])[name] for name in ("BLEU", "NIST")}
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": o}] for i, o in enumerate(outputs)})
    for name, scorer in (("METEOR", Meteor()), ("ROUGE_L", Rouge()), ("CIDEr", Cider())):
        scores[name] = float(scorer.compute_score(gts, res)[0])
    return scores


def fresh(outputs: list[str], references: list[list[str]]) -> dict[str, float]:
    """score_e2e in a JVM of its own (the process's running JVM is set aside meanwhile)."""
    kept, _coco._jvm = _coco._jvm, None
    try:
        return score_e2e(outputs, references)
    finally:
        _coco.close_jvm()
        _coco._jvm = kept


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the JVMs): the work, whatever else runs."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def timed(fn, *args) -> tuple[float, float, dict]:
    start, start_cpu = time.perf_counter(), cpu_seconds()
    result = fn(*args)
    return time.perf_counter() - start, cpu_seconds() - start_cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ref_file", nargs="?", default=TGEN / "refs.txt")
    parser.add_argument("sys_file", nargs="?", default=TGEN / "sys.txt")
    parser.add_argument("--repeat", type=int, default=1, help="alternate the two this many times each")
    args = parser.parse_args()
    outputs, references = load_files(args.ref_file, args.sys_file)
    print(f"{len(outputs)} MRs, {sum(map(len, references))} references, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    runners = {"naive (per-metric JVMs)": naive, "score_e2e (fresh JVM)": fresh, "score_e2e (running JVM)": score_e2e}
    runs = {name: [] for name in runners}
    score_e2e(outputs[:1], references[:1])  # starts the running JVM, METEOR loaded (not timed)
    for _ in range(args.repeat):  # alternated, so both meet the same load
        for name, fn in runners.items():
            runs[name].append(timed(fn, outputs, references))
    printed = {format_scores(scores) for results in runs.values() for *_, scores in results}
    if len(printed) > 1:
        raise SystemExit("the scores differ:\n" + "\n".join(printed))
    print(printed.pop())
    medians = {}
    for name, results in runs.items():
        medians[name] = statistics.median(wall for wall, *_ in results)
        cpu = statistics.median(cpu for _, cpu, _ in results)
        print(f"{name:24} {medians[name]:5.1f} s wall  {cpu:5.1f} s CPU")
    naive_s, fresh_s, running_s = medians.values()
    print(f"speed-up: {naive_s / fresh_s:.2f}x with a fresh JVM, {naive_s / running_s:.2f}x with a running one")


if __name__ == "__main__":
    main()
