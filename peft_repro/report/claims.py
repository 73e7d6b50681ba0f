"""The claims ledger: each lecture claim (`claims:` in experiments/*.yaml) checked against our runs.

A claim's `check` (a mapping, or a list of them) compares cells of its file's table (or of the table `table:` names)
in pairs of sides [A, B]; a side is a row label, a list of row labels, or {row: label(s), col: column(s)}; lists pool cells. Sides without `col` are compared
once per entry of the check's `columns`. Each comparison looks at d = mean(A) - mean(B) over our runs:

- `kind: better` (A > B): holds when the 95% CI of d (below) lies above 0, fails when it lies below 0, else
  inconclusive.
- `kind: same` (A within noise of B, needs `margin`, in the column's units): holds when the CI lies inside
  (-margin, margin), fails when it lies entirely outside it, else inconclusive.

The 95% CI is d +- t * sqrt(SE_items^2 + SE_runs^2) (peft_repro/stats.py), from
- test items, when every run's record has its items' metric statistics (`test_items`; older records: their samples,
  when those are all test items): the sd of 10,000 bootstrap draws of the items (numpy, seed 0), one draw for both
  sides (paired by item, as Koehn 2004), the score of each run recomputed on the drawn items (corpus BLEU from their
  summed n-gram counts, not a mean of item BLEUs);
- and runs (seeds, low-data subsets), when each side has 2 or more: the paired differences' sd over sqrt(n), paired
  by (column, seed, subset) where each side has each key once (sides of different columns, e.g. r=4 against r=64,
  pair their columns in order, so by seed and subset; runs without a partner are left out and counted), else
  Welch's SE of the two sides; the seeds of one low-data subset are one cluster (a low-data claim is about a random
  subset, and a subset's data moves its seeds together): the SE is cluster-robust over the k subsets, k - 1 degrees
  of freedom;
with Student's t at the Welch-Satterthwaite degrees of freedom (the runs': n - 1 when paired, else Welch's; the
items': infinitely many), the half-width never below the runs' own t interval (peft_repro/stats.py says why). A
percentile bootstrap over 3 seeds, used until session 14, covers about 76% instead of 95%.
`ci_over` names what the CI is over. Fewer than 2 runs (low-data: subsets) on a side that trains: "too few runs" (the
item-level CI is still shown; it leaves out training noise); a side that trains nothing (a discrete prompt: no trainable
parameters) has no training noise, and its one run is the whole side; none: "no results". Differences within TOLERANCE
of zero count as zero (float noise, e.g. BLEU 1e-16 against 5e-17, is no evidence). A claim's verdict comes from its
measured comparisons (those with results; the report counts the rest): it holds if all hold, fails if any fails
family-wise, else is inconclusive; a comparison with too few runs counts as not yet measured (the claim is "too few
runs" only if no other is measured), "no results" if none was measured. What a scale leaves to another (the claim's
`left_out: {scale: {rows, columns}}`, e.g. MNLI at the default scale) is not compared there.
A robustness check (`checks:`, role "check") is judged as a claim and reported apart from them: it repeats the
comparison of the claim it names (`of`) under a changed design choice, and is not one of the lecture's claims.
Before the claim's plan is complete (`planned_runs`, and every comparison measured) the ledger marks its verdict
interim: more runs are coming whatever it says. Family-wise: a claim of m comparisons that could each fail (holds,
fails or inconclusive) fails only through a comparison whose CI at the Bonferroni level 1 - 0.05/m is on the failing
side too (30 independent comparisons at 95% each would let one fail about 1 time in 2 when every difference is 0);
"all hold" needs no such correction (each must clear its own CI). Looks: a claim whose undecided verdict changed its
design (more test items, more seeds) declares how many times it was judged (`looks: {scale: n}`, the last one
counted); each comparison must then hold at 1 - 0.05/n and fail at 1 - 0.05/(n x m) (Bonferroni over the looks; an
unadjusted 95% verdict after looking until it cleared overstates). Interim looks at a fixed plan change nothing and
are not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..results import lookup
from ..stats import DiffCI, difference_ci, item_stats, n_clusters, t_quantile
from .cells import Run, Table, tasks_of, trains_nothing
from .spec import SpecError

VERDICTS = ("holds", "fails", "inconclusive", "too few runs", "no results")
TOLERANCE = 1e-9


@dataclass
class Comparison:
    label: str
    kind: str
    margin: float
    a: list[Run]
    b: list[Run]
    paired: bool = False
    unpaired_left_out: int = 0  # runs without a partner on the other side (paired comparisons only)
    diff: float | None = None
    ci: tuple[float, float] | None = None
    ci_over: str = ""           # what the CI is over: items, seeds (x subsets), or both
    half_widths: dict = field(default_factory=dict)  # CI half-width from each source alone: {"items": h, "runs": h}
    stats: DiffCI | None = None  # the CI's parts (SEs, degrees of freedom): what `needed` extrapolates
    needed: str = ""            # inconclusive: how many more runs or items would decide it at the measured variance
    fails_family_wise: bool | None = None  # a failing comparison of a claim of several: still failing at 1 - 0.05/m
    family_ci: tuple[float, float] | None = None  # its CI at that level (over its looks too: `judge_family`)
    holds_over_looks: bool | None = None  # a holding comparison of a claim looked at `looks` times: still holding
    looks: int = 1                        # at 1 - 0.05/looks (its CI is `family_ci`)
    family: int = 1                       # m: the claim's comparisons with a deciding CI
    sizes: tuple[int, int | None] = (0, None)  # runs a side and test items measured: what `needed` scales
    items_available: int | None = None  # the test split's items (`test_pools`): `needed` names no more than these
    verdict: str = "no results"


def _pairs(c: Comparison) -> tuple[list[Run], list[Run]]:
    """Runs paired by (column, seed, low-data subset) where each side has each key once; the rest is left out."""
    keys_a, keys_b = [r.key for r in c.a], [r.key for r in c.b]
    common = set(keys_a) & set(keys_b)
    if len(set(keys_a)) < len(keys_a) or len(set(keys_b)) < len(keys_b) or not common:
        return c.a, c.b  # rows pooled on a side (replicates), or nothing in common: independent sides
    c.paired = True
    c.unpaired_left_out = len(c.a) + len(c.b) - 2 * len(common)
    a = sorted((r for r in c.a if r.key in common), key=lambda r: r.key)
    return a, sorted((r for r in c.b if r.key in common), key=lambda r: r.key)


def judge(c: Comparison) -> Comparison:
    if not c.a or not c.b:
        return c
    fixed = trains_nothing(c.a) or trains_nothing(c.b)
    # n A / n B count the runs compared (unpaired ones left out are counted apart); a side that trains nothing has
    # no seeds to pair with
    a, b = c.a, c.b = (c.a, c.b) if fixed else _pairs(c)
    c.diff = float(np.mean([r.value for r in a]) - np.mean([r.value for r in b]))
    items = [item_stats(r) for r in a + b]
    by_items = all(items)
    items = items if by_items else None
    trained = [side for side in (a, b) if not trains_nothing(side)]
    enough = all(n_clusters(side) >= 2 for side in trained)  # seeds of one low-data subset are one draw
    by_runs = bool(trained) and enough
    runs_name = ("seeds x subsets" if any(r.key[-1] is not None for r in a + b) else "seeds") \
        if all(len({r.key for r in side}) == len(side) for side in (a, b)) else "pooled runs"
    c.ci_over = " x ".join(["items"] * by_items + [runs_name] * by_runs)
    if c.ci_over:
        c.stats = difference_ci(a, b, c.paired, items, by_runs)
        c.ci = lo, hi = c.stats.ci
        c.half_widths = {source: c.stats.half_width(source) for source, on in (("items", by_items),
                                                                               ("runs", by_runs)) if on}
        if c.stats.floored():
            c.ci_over += " (runs' floor)"
    if not (enough and c.ci_over):
        c.verdict = "too few runs"  # an item-level CI leaves out the training noise: shown, but decides nothing
        return c
    c.verdict = decide(c, lo, hi)
    c.sizes = max(len(a), len(b)), len(set.intersection(*(set(ids) for ids, _ in items))) if items else None
    if c.verdict == "inconclusive":
        c.needed = needed(c)
    return c


def decide(c: Comparison, lo: float, hi: float) -> str:
    """The verdict of a CI [lo, hi] for this comparison's kind (module docstring)."""
    if c.kind == "better":
        return "holds" if lo > TOLERANCE else "fails" if hi < -TOLERANCE else "inconclusive"
    m = c.margin
    return "holds" if -m < lo and hi < m else "fails" if lo > m or hi < -m else "inconclusive"


MAX_FACTOR = 1000  # sizes beyond 1000 times the measured ones are not a plan
NOT_ON_SPLIT = "not on this test split"  # `needed`: no runs decide on the whole split (named at a glance)
PERHAPS_NOT_ON_SPLIT = "perhaps " + NOT_ON_SPLIT


def needed(c: Comparison, level: float | None = None) -> str:
    """At the measured variance and difference (`c.stats`: each SE shrinks as 1/sqrt(n), the runs' degrees of
    freedom grow with them): the fewest runs a side (both sides grown alike; low-data runs in subsets, whose seeds
    are one draw: more subsets, each with as many runs), or test items (the runs as they are),
    whose CI (at `level`, else the CI's own) would exclude 0 (`better`), or fit inside the margin or lie outside it
    (`same`). Items stay within the test split where its size is known (`items_available`), and runs on the whole
    split are named too where they take a fifth fewer runs or more. Where no runs decide on the whole split: "not on
    this test split" when its items alone leave the CI too wide even with the seed x item part of SE_items gone (at
    most sqrt(2) of it: peft_repro/stats.py), "perhaps not" when only without that part."""
    n_runs, n_items = c.sizes
    # runs in low-data subsets shrink the runs' SE only as more subsets come (`stats.cluster`): count those
    n_units = max(n_clusters(c.a), n_clusters(c.b)) or n_runs
    per_unit = n_runs / n_units

    def runs_text(units: int) -> str:
        return (f"~{units:,} runs a side" if per_unit == 1 else
                f"~{units:,} subsets a side of {per_unit:g} runs each (~{round(units * per_unit):,} runs)")
    # better: the CI must clear 0; same: fit inside the margin (holds) or clear it (fails)
    room = abs(c.diff) if c.kind == "better" else abs(c.margin - abs(c.diff))
    if room <= TOLERANCE:
        return "no sample size: the measured difference is " + ("0" if c.kind == "better" else "at the margin")
    pool = c.items_available if n_items and (c.items_available or 0) >= n_items else None

    def runs_at(items_factor: float) -> int | None:  # in units: runs, or subsets
        return _fewest(lambda k: c.stats.predicted_half_width(runs_factor=k / n_units, items_factor=items_factor,
                                                              level=level) < room, n_units) if c.stats.se_runs else None
    out = []
    if runs := runs_at(1.0):
        out.append(runs_text(runs))
    items = n_items and c.stats.se_items and _fewest(
        lambda k: c.stats.predicted_half_width(items_factor=k / n_items, level=level) < room, n_items, pool)
    if items:
        out.append(f"~{items:,} test items")
    if items or not (pool and c.stats.se_items):  # the runs as they are decide on more items, or no split size
        return " or ".join(out) or "more runs and more test items together"
    whole = pool / n_items
    if whole > 1 and (n := runs_at(whole)) and not (runs and n > 0.8 * runs):  # worth naming: a fifth fewer
        out.append(f"{runs_text(n)} on all {pool:,} test items")
    if out:
        return " or ".join(out)
    items_alone = t_quantile(0.5 + (level or c.stats.level) / 2, math.inf) * c.stats.se_items / math.sqrt(whole)
    if items_alone / math.sqrt(2) >= room:
        return (f"{NOT_ON_SPLIT}: all {pool:,} items of its test split give ±{items_alone:.2f} alone (at least "
                f"±{items_alone / math.sqrt(2):.2f} with any runs), and {room:.2f} would decide")
    if items_alone >= room:
        return (f"{PERHAPS_NOT_ON_SPLIT}: all {pool:,} items of its test split give ±{items_alone:.2f} alone at "
                f"the measured item noise (±{items_alone / math.sqrt(2):.2f} without its seed x item part), and "
                f"{room:.2f} would decide")
    return f"over {runs_text(n_units * MAX_FACTOR)[1:]} on all {pool:,} test items"


def test_pools(tables: dict[str, Table]) -> dict[str, int]:
    """Per task, the test items a run can be scored on, for runs whose records do not say (`split_size`, which a
    comparison prefers; records since session 22 name it): the smallest split any record of the task names (a split
    loaded from the hub can be larger than the offline one), else the most that any record of the task scored
    uncapped (`max_eval_examples` null: its whole test split). A task with neither is missing: its size unknown."""
    scored, named = {}, {}
    for table in tables.values():
        for record in table.records:
            task, items = lookup(record, "config.task.name"), record.get("test_items") or {}
            if items.get("split_size"):
                named[task] = min(named.get(task, math.inf), items["split_size"])
            if items.get("ids") and lookup(record, "config.task.max_eval_examples") is None:
                scored[task] = max(scored.get(task, 0), len(items["ids"]))
    return {**scored, **named}


def split_size(runs: list[Run]) -> int | None:
    """The test items every one of these runs could have been scored on: the smallest split its records name
    (`test_items.split_size`; a split loaded from the hub can be larger than the offline one), or None."""
    sizes = [(run.record.get("test_items") or {}).get("split_size") for run in runs]
    return min((s for s in sizes if s), default=None)


def _fewest(decides, measured: int, cap: int | None = None) -> int | None:
    """The smallest size above `measured` for which `decides(size)` (monotone), up to MAX_FACTOR times it, or `cap`."""
    hi = min(measured * MAX_FACTOR, cap or math.inf)
    if hi <= measured or not decides(hi):
        return None
    lo = measured  # decides(lo) is False: the measured CI did not decide
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if not decides(mid) else (lo, mid)
    return hi


def _side(item) -> tuple[list[str], list | None]:
    """(row labels, columns or None) of a side: "row", [rows], or {row: ..., col: ...}."""
    if isinstance(item, dict):
        rows, cols = item.get("row"), item.get("col")
    else:
        rows, cols = item, None
    as_list = (lambda v: v if isinstance(v, list) else [v])
    if rows is None:
        raise SpecError(f"claim side {item!r} has no row")
    return [str(r) for r in as_list(rows)], None if cols is None else as_list(cols)


def _pool(table: Table, rows: list[str], cols: list, col_keys: list) -> list[Run]:
    """The runs of the cells rows x cols; the key gets the column's `col_keys` entry, so that pooled columns pair
    column by column (rows pooled on one side are replicates: their keys repeat, and the sides are then unpaired:
    Welch's SE)."""
    names = [str(c) for c in table.columns]
    runs = []
    for row, (col, col_key) in ((r, c) for r in rows for c in zip(cols, col_keys)):
        if str(col) not in names:
            raise SpecError(f"table {table.spec['table']} has no column {col!r}")
        runs += [Run(run.value, (col_key, *run.key), run.record, run.metric, run.factor)
                 for run in table.row(row).cells[str(col)].runs]
    return runs


def _column_keys(cols_a: list, cols_b: list) -> tuple[list, list]:
    """The column part of each side's run keys: the same columns pair column by column; sides of as many other
    columns (r=4 against r=64) pair them in order, so that their runs pair by seed and subset; anything else gets keys
    of its own (the sides are then unpaired)."""
    names_a, names_b = [str(c) for c in cols_a], [str(c) for c in cols_b]
    if sorted(names_a) == sorted(names_b):
        return names_a, names_b
    if len(names_a) == len(names_b):
        return list(range(len(names_a))), list(range(len(names_b)))
    return [("A", c) for c in names_a], [("B", c) for c in names_b]


def comparisons(check: dict, tables: dict[str, Table], left_out: dict | None = None,
                pools: dict[str, int] | None = None) -> list[Comparison]:
    """The check's comparisons; `left_out` ({rows, columns}): what this scale leaves to another (the claim's
    `left_out`), taken out of pooled sides, and comparisons left with an empty side are not made."""
    if not isinstance(check, dict) or check.get("table") not in tables:
        raise SpecError(f"check {check!r}: `table` must name a reference table")
    table, kind = tables[check["table"]], check.get("kind", "better")
    if kind not in ("better", "same") or (kind == "same" and not isinstance(check.get("margin"), (int, float))):
        raise SpecError(f"check {check!r}: kind must be better, or same with a numeric margin")
    out_rows = {str(r) for r in (left_out or {}).get("rows") or []}
    out_cols = {str(c) for c in (left_out or {}).get("columns") or []}
    out, pools = [], test_pools(tables) if pools is None else pools
    for pair in check.get("pairs") or []:
        if not isinstance(pair, list) or len(pair) != 2:
            raise SpecError(f"check pair {pair!r} is not [A, B]")
        (rows_a, cols_a), (rows_b, cols_b) = map(_side, pair)
        loop = [None] if cols_a is not None and cols_b is not None else check.get("columns")
        if not loop:
            raise SpecError(f"check pair {pair!r}: give each side a col, or the check `columns`")
        rows_a, rows_b = ([r for r in rows if r not in out_rows] for rows in (rows_a, rows_b))
        for col in loop:
            whole_a, whole_b = cols_a or [col], cols_b or [col]
            if len(whole_a) == len(whole_b):  # sides that pair column by column lose their column pairs together
                kept = [(a, b) for a, b in zip(whole_a, whole_b) if str(a) not in out_cols and str(b) not in out_cols]
                ca, cb = [a for a, _ in kept], [b for _, b in kept]
            else:
                ca, cb = ([c for c in cols if str(c) not in out_cols] for cols in (whole_a, whole_b))
            if not (rows_a and rows_b and ca and cb):
                continue  # a side left out whole
            name_a, name_b = (f"{'+'.join(rows)} @ {'+'.join(map(str, cols))}"
                              for rows, cols in ((rows_a, ca), (rows_b, cb)))
            label = f"{name_a} {'>' if kind == 'better' else '≈'} {name_b}"
            keys_a, keys_b = _column_keys(ca, cb)
            runs_a, runs_b = _pool(table, rows_a, ca, keys_a), _pool(table, rows_b, cb, keys_b)
            tasks = tasks_of(runs_a + runs_b)
            available = split_size(runs_a + runs_b) or (pools.get(tasks[0]) if len(tasks) == 1 else None)
            c = judge(Comparison(label, kind, check.get("margin", 0), runs_a, runs_b, items_available=available))
            compared = [[str(col) for col, key in zip(cols, keys) if any(run.key[0] == key for run in side)]
                        for cols, keys, side in ((ca, keys_a, c.a), (cb, keys_b, c.b))]
            if c.a and c.b and (compared[0] != list(map(str, ca)) or compared[1] != list(map(str, cb))):
                # a pool of which some columns have no compared runs yet: it is those columns' comparison so far
                c.label += (f" (so far {'+'.join(compared[0])} only)" if compared[0] == compared[1] else
                            f" (so far {'+'.join(compared[0])} against {'+'.join(compared[1])})")
            out.append(c)
    if not out and not (check.get("pairs") and (out_rows or out_cols)):
        raise SpecError(f"check {check!r} compares nothing")
    return out


def overall(verdicts: list[str]) -> str:
    """A claim's verdict from its comparisons' (module docstring). One with too few runs is not yet measured, as one
    with no results: a new cell's first seed leaves the claim's other verdicts standing (an interim look, as long as
    its plan is not complete), and decides the claim only where nothing else is measured."""
    measured = [v for v in verdicts if v not in ("no results", "too few runs")]
    if not measured:
        return "too few runs" if "too few runs" in verdicts else "no results"
    if "fails" in measured:
        return "fails"
    if all(v == "holds" for v in measured):
        return "holds"
    return next(v for v in VERDICTS[2:] if v in measured)


def measurement(c: Comparison) -> tuple:
    """What a comparison measures: its kind and the runs on each side. A pool of sizes of which only one has runs
    (low-data at 50 alone) is the same measurement as that size's comparison, and counts once."""
    def side(runs):
        return tuple(sorted(((r.record.get("record", ""), r.metric, r.key, r.value) for r in runs), key=repr))
    return c.kind, c.margin, side(c.a), side(c.b)


FAMILY_ALPHA = 0.05


def family_size(comps: list[Comparison]) -> int:
    """The comparisons of a claim that could fail it: those with a CI that decides (not too few runs, not unmeasured),
    each measurement once (a pool of sizes of which only one has runs is that size's comparison: `measurement`)."""
    return len({measurement(c) for c in comps if c.verdict in ("holds", "fails", "inconclusive")})


def judge_family(comps: list[Comparison], looks: int = 1) -> list[str]:
    """The comparisons' verdicts as the claim counts them: with m > 1 comparisons, a failing one counts only if it
    still fails at the Bonferroni level 1 - 0.05/m (else it counts as inconclusive); `fails_family_wise` says which,
    `family_ci` gives that CI (for an undecided comparison too: the CI it would have to clear). Where only failing is
    left (the difference on the failing side), `needed` is the size that would fail family-wise. A claim judged at
    `looks` points where an undecided verdict changed its design (the claim's `looks`: more test items, more seeds) is
    judged at 1 - 0.05/looks, Bonferroni over its looks (conservative where the looks share runs): a holding
    comparison that does not hold there (`holds_over_looks` False) counts as inconclusive, and a failing one must fail
    at 1 - 0.05/(m x looks)."""
    m = family_size(comps)
    out = []
    for c in comps:
        c.looks, c.family = looks, m
        if m * looks > 1 and c.verdict in ("fails", "inconclusive") and on_failing_side(c):
            level = 1 - FAMILY_ALPHA / (m * looks)
            h = c.stats.predicted_half_width(level=level)
            c.family_ci = c.diff - h, c.diff + h
            if c.verdict == "fails":
                c.fails_family_wise = decide(c, *c.family_ci) == "fails"
            if not c.fails_family_wise:
                c.needed = needed(c, level)
        elif looks > 1 and c.verdict in ("holds", "inconclusive"):  # the holding side, over its looks
            level = 1 - FAMILY_ALPHA / looks
            h = c.stats.predicted_half_width(level=level)
            c.family_ci = c.diff - h, c.diff + h
            if c.verdict == "holds":
                c.holds_over_looks = decide(c, *c.family_ci) == "holds"
            if not c.holds_over_looks:
                c.needed = needed(c, level)
        out.append(counted(c))
    return out


def on_failing_side(c: Comparison) -> bool:
    """Whether the measured difference lies on the side that would fail the comparison (below 0 for `better`,
    outside the margin for `same`): the family-wise level then applies (`judge_family`)."""
    return c.diff is not None and (c.diff < 0 if c.kind == "better" else abs(c.diff) > c.margin)


def counted(c: Comparison) -> str:
    """A comparison's verdict as its claim counts it (`judge_family`): a failure that is not family-wise, or a hold
    that does not survive the claim's looks, is inconclusive."""
    return "inconclusive" if False in (c.fails_family_wise, c.holds_over_looks) else c.verdict


def toward(c: Comparison) -> str:
    """The verdict an undecided comparison leans to, by its measured difference: what `needed` would decide."""
    if c.kind == "better":
        return "hold" if c.diff > 0 else "fail"
    return "hold" if abs(c.diff) < c.margin else "fail"


def _check_left_out(claim: dict, checks: list[dict], left_out: dict | None) -> None:
    """A left-out row or column must be one the claim compares (a typo would leave out nothing, silently)."""
    sides = [_side(item) for check in checks for pair in check.get("pairs") or [] for item in pair]
    rows = {r for side_rows, _ in sides for r in side_rows}
    cols = {str(c) for check in checks for c in check.get("columns") or []} | \
        {str(c) for _, side_cols in sides for c in side_cols or []}
    for kind, named, known in (("row", (left_out or {}).get("rows") or [], rows),
                               ("column", (left_out or {}).get("columns") or [], cols)):
        if unknown := [x for x in named if str(x) not in known]:
            raise SpecError(f"{claim.get('role', 'claim')} {claim['id']}: left_out names {kind}s it does not compare: "
                            f"{unknown}")


def _check_rows_at_scale(claim: dict, checks: list[dict], tables: dict[str, Table], scale: str | None) -> None:
    """A claim may not compare a row its table leaves out at this scale (`ours.leave_out_at_scale`): say so, rather
    than "no row"; the claim's own `left_out` is the way to leave a comparison to another scale."""
    for check in checks:
        spec = tables[check["table"]].spec if isinstance(check, dict) and check.get("table") in tables else {}
        gone = set(((spec.get("ours") or {}).get("leave_out_at_scale") or {}).get(scale) or [])
        compared = {r for pair in check.get("pairs") or [] for item in pair for r in _side(item)[0]} if gone else set()
        if compared & gone:
            raise SpecError(f"{claim.get('role', 'claim')} {claim['id']} compares {sorted(compared & gone)}, which "
                            f"table {check['table']} leaves out at scale {scale} (ours.leave_out_at_scale): leave the "
                            f"comparison to another scale with the claim's left_out")


def evaluate(claims: list[dict], tables: dict[str, Table], scale: str | None = None) -> list[dict]:
    """Each claim with its comparisons (those of this scale: `left_out`) and overall verdict."""
    results, pools = [], test_pools(tables)
    for claim in claims:
        if not claim.get("id") or not claim.get("text") or not claim.get("check"):
            raise SpecError(f"experiments/{claim.get('file')}: a {claim.get('role', 'claim')} needs id, text and check: "
                            f"{claim!r}")
        checks = claim["check"] if isinstance(claim["check"], list) else [claim["check"]]
        left_out = (claim.get("left_out") or {}).get(scale)
        _check_left_out(claim, checks, left_out)
        _check_rows_at_scale(claim, checks, tables, scale)
        comps = [c for check in checks for c in comparisons(check, tables, left_out, pools)]
        as_counted = judge_family(comps, looks_at(claim, scale))
        results.append({**claim, "comparisons": comps, "counted": as_counted, "verdict": overall(as_counted)})
    return results


def fewest_runs(comps: list[Comparison]) -> int | None:
    """The fewest runs on a side that trains, over the comparisons with results (None: none)."""
    sides = [len(side) for c in comps if c.diff is not None for side in (c.a, c.b) if not trains_nothing(side)]
    return min(sides) if sides else None


def looks_at(res: dict, scale: str | None) -> int:
    """The times the claim was judged at this scale with its design changed after an undecided look (`looks`)."""
    return int((res.get("looks") or {}).get(scale, 1))


def planned_runs(res: dict, scale: str | None) -> int | None:
    """The runs a side the claim's design plans at this scale (`planned_runs: {default: 5}` in its spec)."""
    return (res.get("planned_runs") or {}).get(scale)


def at_plan(res: dict, scale: str | None) -> bool | None:
    """Whether every comparison of the claim at this scale is measured, with its planned runs on each side that
    trains (None: no plan at this scale). A verdict before that is an interim look: more runs or comparisons are
    coming whatever it says (what the scale leaves to another is not part of its plan: `left_out`)."""
    planned = planned_runs(res, scale)
    if planned is None or not res["comparisons"]:  # no plan here, or the scale leaves the whole claim to another
        return None
    fewest = fewest_runs(res["comparisons"])
    return all(c.diff is not None for c in res["comparisons"]) and fewest is not None and fewest >= planned
