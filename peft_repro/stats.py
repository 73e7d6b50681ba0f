"""Bootstrap CIs over test items and runs, shared by the claims ledger and the tables' zero-shot marks.

A run (`tables.Run`: value, key, record, metric, factor) is resampled by its test items when its record keeps each
item's additive metric statistics (`test_items`, written by train.py; see `Task.item_stats`): the score of a resample
is recomputed from the summed statistics (corpus BLEU from n-gram counts, not a mean of per-item BLEU).
"""
from __future__ import annotations

import numpy as np

from .results import lookup
from .tasks import EvalItem, item_id, task_classes

N_BOOT = 10_000
SEED = 0


def item_stats(run) -> tuple[list[str], np.ndarray] | None:
    """(item ids, per-item metric statistics) of a run whose cell shows its task's primary metric, or None.

    Records keep them under `test_items`; older records get them from their samples when those are every test item
    and reproduce the recorded score. The statistics must give back the cell's value, or they are not used."""
    task_name = lookup(run.record, "config.task.name")
    task = task_classes().get(task_name)
    if task is None or run.metric != f"test.{task.primary_metric}":
        return None
    stored = run.record.get("test_items")
    if stored and stored.get("metric") == task.primary_metric:
        ids, stats = stored["ids"], np.asarray(stored["stats"], dtype=float)
    else:
        samples = run.record.get("samples") or []
        n_test = lookup(run.record, "config.task.max_eval_examples")
        if not samples or (len(samples) != n_test and len(samples) >= (run.record.get("config") or {}).get(
                "record_samples", 0)):
            return None
        items = [EvalItem(s["source"], s.get("references") or [], s.get("label")) for s in samples]
        ids, stats = [item_id(it) for it in items], np.asarray(
            task.item_stats([s["prediction"] for s in samples], items), dtype=float)
    if len(ids) != len(set(ids)) or not np.isclose(task.metric_from_stats(stats.sum(0)) * run.factor, run.value,
                                                   rtol=1e-6, atol=1e-9):
        return None
    return ids, stats


def bootstrap(a: list, b: list, paired: bool, items: list | None, runs: bool, seed: int = SEED) -> np.ndarray:
    """N_BOOT resampled differences mean(A) - mean(B): test items when `items` holds each run's `item_stats` (one
    draw shared by both sides: paired by item; corpus metrics recomputed from the summed statistics) and/or runs
    (paired: one draw of pairs for both sides)."""
    rng = np.random.default_rng(seed)
    if items:  # b may be empty: the CI of mean(A) alone
        common = sorted(set.intersection(*(set(ids) for ids, _ in items)))
        weights = rng.multinomial(len(common), np.full(len(common), 1 / len(common)), size=N_BOOT).astype(float)
        values = []
        for run, (ids, rows) in zip(a + b, items):
            order = dict(zip(ids, range(len(ids))))
            task = task_classes()[lookup(run.record, "config.task.name")]
            values.append(task.metric_from_stats(weights @ rows[[order[i] for i in common]]) * run.factor)
        values = np.stack(values, axis=1)  # (N_BOOT, runs of A then B)
    else:
        values = np.tile([r.value for r in a + b], (N_BOOT, 1)).astype(float)
    va, vb = values[:, :len(a)], values[:, len(a):]
    if runs:
        pick_a = rng.integers(0, len(a), (N_BOOT, len(a)))
        pick_b = pick_a if paired else rng.integers(0, max(len(b), 1), (N_BOOT, len(b)))
        va, vb = np.take_along_axis(va, pick_a, 1), np.take_along_axis(vb, pick_b, 1)
    return va.mean(1) - (vb.mean(1) if b else 0.0)


def percentile_ci(stats: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)
