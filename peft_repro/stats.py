"""CIs of a difference of means over test items and runs, shared by the claims ledger and the tables' zero-shot marks.

d = mean(A) - mean(B) has two sources of noise, and its 95% CI is d +- t * sqrt(SE_items^2 + SE_runs^2):
- test items: a run (`tables.Run`: value, key, record, metric, factor) whose record keeps each item's additive metric
  statistics (`test_items`, written by train.py; see `Task.item_stats`) is resampled by item (10,000 draws, one for
  both sides: paired by item, as Koehn 2004), its score recomputed from the summed statistics (corpus BLEU from
  n-gram counts, not a mean of item BLEUs); SE_items is the sd of the resampled d;
- runs (seeds, low-data subsets): SE_runs is the sd of the paired differences over sqrt(n), with n - 1 degrees of
  freedom (sides that do not pair: Welch's SE and degrees of freedom). Runs on one low-data subset (its seeds) are
  one cluster, not independent draws: the subset's data moves them together, and a low-data claim is about a random
  subset. Their SE is the cluster-robust one over the k subsets, k - 1 degrees of freedom (with one run a cluster it
  is the plain sd over sqrt(n)).
t is Student's at the Welch-Satterthwaite degrees of freedom of the sum (the items' term counts as infinitely many),
and the half-width is never below the runs' own t interval, t(runs' df) * SE_runs: without that floor the items'
term can narrow the CI (coverage 88% at 2 runs, 92% at 3, simulated with a known SE_items; with it 95-98%), while
t at the runs' degrees of freedom on the whole SE would turn a small item noise into t(1) = 12.7 times it. It errs
wide in one way: the runs' spread on fixed items already holds the seed x item part of the items' variance, which
SE_items counts again (at most sqrt(2) too wide, when that part is all there is).
Not a percentile bootstrap over the runs: with 3 seeds its interval cannot reach past the seeds' own range, and it
covers a mean about 76% of the time, not 95% (83% at 5 runs, 89% at 10: normal runs, simulated).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .results import lookup
from .tasks import EvalItem, item_ids, task_classes

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
        ids, stats = item_ids(items), np.asarray(
            task.item_stats([s["prediction"] for s in samples], items), dtype=float)
    if len(ids) != len(set(ids)) or not np.isclose(task.metric_from_stats(stats.sum(0)) * run.factor, run.value,
                                                   rtol=1e-6, atol=1e-9):
        return None
    return ids, stats


def bootstrap(a: list, b: list, items: list, seed: int = SEED) -> np.ndarray:
    """N_BOOT differences mean(A) - mean(B) over resampled test items, `items` holding each run's `item_stats` (one
    draw shared by both sides; corpus metrics recomputed from the summed statistics); b may be empty (mean(A))."""
    rng = np.random.default_rng(seed)
    common = sorted(set.intersection(*(set(ids) for ids, _ in items)))
    weights = rng.multinomial(len(common), np.full(len(common), 1 / len(common)), size=N_BOOT).astype(float)
    values = []
    for run, (ids, rows) in zip(a + b, items):
        order = dict(zip(ids, range(len(ids))))
        task = task_classes()[lookup(run.record, "config.task.name")]
        values.append(task.metric_from_stats(weights @ rows[[order[i] for i in common]]) * run.factor)
    values = np.stack(values, axis=1)  # (N_BOOT, runs of A then B)
    return values[:, :len(a)].mean(1) - (values[:, len(a):].mean(1) if b else 0.0)


@dataclass
class DiffCI:
    diff: float
    ci: tuple[float, float]
    se_items: float = 0.0
    se_runs: float = 0.0
    df_runs: float = math.inf
    level: float = 0.95

    def half_width(self, source: str) -> float:
        """The CI half-width from one source alone: "items" (normal) or "runs" (t at the runs' degrees of freedom)."""
        if source == "items":
            return t_quantile(0.5 + self.level / 2, math.inf) * self.se_items
        return t_quantile(0.5 + self.level / 2, self.df_runs) * self.se_runs

    def floored(self) -> bool:
        """Whether items and runs both count and the runs' own t interval is the CI (`half_width`'s floor): wider
        than the Satterthwaite interval of the two together, which then lies inside it."""
        return self.se_items > 0 and self.se_runs > 0 and math.isclose(
            (self.ci[1] - self.ci[0]) / 2, self.half_width("runs"), rel_tol=1e-12)

    def predicted_half_width(self, runs_factor: float = 1.0, items_factor: float = 1.0,
                             level: float | None = None) -> float:
        """The CI half-width with `runs_factor` times the runs (their independent draws: runs, or low-data
        subsets) and `items_factor` times the test items, at the measured variance (each SE shrinks as 1/sqrt(n);
        the runs' degrees of freedom, draws - 1, grow with them: exactly for paired draws, roughly for Welch's);
        `level`: another confidence level than the CI's."""
        df_runs = (self.df_runs + 1) * runs_factor - 1 if math.isfinite(self.df_runs) else math.inf
        return half_width(self.se_items / math.sqrt(items_factor), self.se_runs / math.sqrt(runs_factor), df_runs,
                          level or self.level)


def half_width(se_items: float, se_runs: float, df_runs: float, level: float = 0.95) -> float:
    """t at the Welch-Satterthwaite degrees of freedom times sqrt(SE_items^2 + SE_runs^2), floored at the runs' own
    t interval (module docstring)."""
    p = 0.5 + level / 2
    df = math.inf if se_runs == 0 or not math.isfinite(df_runs) else \
        (se_items ** 2 + se_runs ** 2) ** 2 / (se_runs ** 4 / df_runs)
    return max(t_quantile(p, df) * math.hypot(se_items, se_runs), t_quantile(p, df_runs) * se_runs)


def cluster(run) -> tuple:
    """The runs' unit of independent draws a run belongs to: its low-data subset within its column (a run's key is
    ([column,] seed, subset), the subset last and None where there is none), else the run alone (runs pooled from
    several rows share keys, and are still separate draws)."""
    return (run.key[:-2], run.key[-1]) if run.key[-1] is not None else ("run", id(run))


def n_clusters(runs: list) -> int:
    """How many independent draws (`cluster`) the runs are: what a CI over runs needs 2 or more of."""
    return len({cluster(r) for r in runs})


def mean_variance(values: list[float], clusters: list) -> tuple[float, int]:
    """(variance of the mean, degrees of freedom) of values drawn in 2 or more clusters: the cluster-robust estimate
    k/(k-1) * sum over the k clusters of (the cluster's sum of x - mean)^2 / n^2, with k - 1 degrees of freedom; with
    one value a cluster it is the plain var/n with n - 1. Unbiased for clusters of equal size (5 subsets x 2 seeds);
    low where their sizes differ much (simulated in session 23: sizes 1, 1, 2, 2, 2 gave 95% of the variance and
    93.5% coverage, 1, 1, 1, 1, 6 gave 45% and 86%)."""
    x = np.asarray(values, dtype=float)
    deviations = x - x.mean()
    groups = list(dict.fromkeys(clusters))
    k = len(groups)
    if k < 2:
        raise ValueError(f"a variance over runs needs 2 or more independent clusters, got {k}")
    sums = np.array([deviations[[c == g for c in clusters]].sum() for g in groups])
    return float(k / (k - 1) * (sums ** 2).sum() / len(x) ** 2), k - 1


def run_se(a: list, b: list, paired: bool) -> tuple[float, float]:
    """(SE, degrees of freedom) of mean(A) - mean(B) from the runs' spread: the paired differences (a and b in pair
    order), else Welch over the sides of 2 or more clusters (a side of one run, such as a zero-shot one or a discrete
    prompt, trains nothing and adds no spread); runs of one low-data subset are one cluster (`cluster`)."""
    if paired:
        var, df = mean_variance([x.value - y.value for x, y in zip(a, b)], [cluster(x) for x in a])
        return math.sqrt(var), df
    terms = [mean_variance([r.value for r in side], [cluster(r) for r in side]) for side in (a, b)
             if n_clusters(side) >= 2]
    var = sum(v for v, _ in terms)
    if var == 0:
        return 0.0, math.inf
    return math.sqrt(var), var ** 2 / sum(v ** 2 / df for v, df in terms)


def difference_ci(a: list, b: list, paired: bool, items: list | None, runs: bool, level: float = 0.95) -> DiffCI:
    """The CI of mean(A) - mean(B) (b empty: of mean(A)) over test items (`items`: each run's `item_stats`) and/or
    runs (`runs`; `paired`: a and b in pair order)."""
    diff = float(np.mean([r.value for r in a]) - (np.mean([r.value for r in b]) if b else 0.0))
    se_items = float(bootstrap(a, b, items).std(ddof=1)) if items else 0.0
    se_runs, df_runs = run_se(a, b, paired) if runs else (0.0, math.inf)
    half = half_width(se_items, se_runs, df_runs, level)
    return DiffCI(diff, (diff - half, diff + half), se_items, se_runs, df_runs, level)


@functools.lru_cache(maxsize=4096)  # a report asks for the same few (p, df) many times
def t_quantile(p: float, df: float) -> float:
    """Student's t quantile for 0.5 <= p < 1 and any df > 0 (fractional, as Welch-Satterthwaite gives; inf: the
    normal one), by bisection on the CDF."""
    if not math.isfinite(df) or df > 1e5:  # there t and normal quantiles differ by < 1e-4 of their value
        return NormalDist().inv_cdf(p)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def _t_cdf(t: float, df: float) -> float:
    """P(T <= t) for t >= 0: 1 - I_x(df/2, 1/2) / 2 with x = df / (df + t^2)."""
    return 1 - 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (continued fraction, modified Lentz; Numerical Recipes
    6.4); to about 1e-12 for a, b < 1e4 (the fraction needs about sqrt(a) terms)."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below this point
        return 1 - _betainc(b, a, 1 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + num * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + num / (c if abs(c) > tiny else tiny)
        f *= c * d
        if abs(1 - c * d) < 1e-14:
            break
    return front * (f - 1) / a
