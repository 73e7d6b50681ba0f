"""The claims ledger: each lecture claim (`claims:` in experiments/*.yaml) checked against our runs.

A claim's `check` (a mapping, or a list of them) names a rendered table and pairs of sides [A, B]; a side is a row
label, a list of row labels, or {row: label(s), col: column(s)}; lists pool cells. Sides without `col` are compared
once per entry of the check's `columns`. Each comparison looks at d = mean(A) - mean(B) over our runs:

- `kind: better` (A > B): holds when the 95% bootstrap CI of d lies above 0, fails when it lies below 0, else
  inconclusive.
- `kind: same` (A within noise of B, needs `margin`, in the column's units): holds when the CI lies inside
  (-margin, margin), fails when it lies entirely outside it, else inconclusive.

The CI is the 2.5-97.5 percentile of 10,000 bootstrap means (numpy, seed 0). Runs are paired (resampled as
differences) when both sides hold exactly the same runs by (pooled cell, seed, low-data subset); otherwise each side
is resampled on its own. Fewer than 2 runs on a side: "too few runs"; none: "no results". Differences within
TOLERANCE of zero count as zero (float noise, e.g. BLEU 1e-16 against 5e-17, is no evidence). A claim's verdict
comes from its measured comparisons (those with results; the report counts the rest): it fails if any fails,
holds if all hold, else takes the first of inconclusive / too few runs; "no results" if none was measured.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from .results import lookup
from .tables import DASH, Run, SpecError, Table

N_BOOT = 10_000
SEED = 0
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
    diff: float | None = None
    ci: tuple[float, float] | None = None
    verdict: str = "no results"


def bootstrap_ci(a: np.ndarray, b: np.ndarray, paired: bool, n_boot: int = N_BOOT, seed: int = SEED):
    """95% percentile bootstrap CI of mean(a) - mean(b); paired: of the mean of a - b (a, b aligned)."""
    rng = np.random.default_rng(seed)
    if paired:
        d = a - b
        stats = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    else:
        stats = (a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
                 - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def judge(c: Comparison) -> Comparison:
    if not c.a or not c.b:
        return c
    keys_a, keys_b = [r.key for r in c.a], [r.key for r in c.b]
    c.paired = len(set(keys_a)) == len(keys_a) and sorted(keys_a) == sorted(keys_b)
    a = np.array([r.value for r in sorted(c.a, key=lambda r: r.key)]) if c.paired else np.array([r.value for r in c.a])
    b = np.array([r.value for r in sorted(c.b, key=lambda r: r.key)]) if c.paired else np.array([r.value for r in c.b])
    c.diff = float(a.mean() - b.mean())
    if min(len(a), len(b)) < 2:
        c.verdict = "too few runs"
        return c
    c.ci = lo, hi = bootstrap_ci(a, b, c.paired)
    if c.kind == "better":
        c.verdict = "holds" if lo > TOLERANCE else "fails" if hi < -TOLERANCE else "inconclusive"
    else:
        m = c.margin
        c.verdict = "holds" if -m < lo and hi < m else "fails" if lo > m or hi < -m else "inconclusive"
    return c


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


def _pool(table: Table, rows: list[str], cols: list) -> list[Run]:
    """The runs of the cells rows x cols; the key gets the cell's index so that pooled cells pair one to one."""
    names = [str(c) for c in table.columns]
    runs = []
    for i, (row, col) in enumerate((r, c) for r in rows for c in cols):
        if str(col) not in names:
            raise SpecError(f"table {table.spec['table']} has no column {col!r}")
        runs += [Run(run.value, (i, *run.key), run.record) for run in table.row(row).cells[str(col)].runs]
    return runs


def comparisons(check: dict, tables: dict[str, Table]) -> list[Comparison]:
    if not isinstance(check, dict) or check.get("table") not in tables:
        raise SpecError(f"check {check!r}: `table` must name a reference table")
    table, kind = tables[check["table"]], check.get("kind", "better")
    if kind not in ("better", "same") or (kind == "same" and not isinstance(check.get("margin"), (int, float))):
        raise SpecError(f"check {check!r}: kind must be better, or same with a numeric margin")
    out = []
    for pair in check.get("pairs") or []:
        if not isinstance(pair, list) or len(pair) != 2:
            raise SpecError(f"check pair {pair!r} is not [A, B]")
        (rows_a, cols_a), (rows_b, cols_b) = map(_side, pair)
        loop = [None] if cols_a is not None and cols_b is not None else check.get("columns")
        if not loop:
            raise SpecError(f"check pair {pair!r}: give each side a col, or the check `columns`")
        for col in loop:
            ca, cb = cols_a or [col], cols_b or [col]
            name_a, name_b = (f"{'+'.join(rows)} @ {'+'.join(map(str, cols))}"
                              for rows, cols in ((rows_a, ca), (rows_b, cb)))
            label = f"{name_a} {'>' if kind == 'better' else '≈'} {name_b}"
            out.append(judge(Comparison(label, kind, check.get("margin", 0), _pool(table, rows_a, ca),
                                        _pool(table, rows_b, cb))))
    if not out:
        raise SpecError(f"check {check!r} compares nothing")
    return out


def overall(verdicts: list[str]) -> str:
    measured = [v for v in verdicts if v != "no results"]
    if not measured:
        return "no results"
    if "fails" in measured:
        return "fails"
    if all(v == "holds" for v in measured):
        return "holds"
    return next(v for v in VERDICTS[2:] if v in measured)


def evaluate(claims: list[dict], tables: dict[str, Table]) -> list[dict]:
    """Each claim with its comparisons and overall verdict."""
    results = []
    for claim in claims:
        if not claim.get("id") or not claim.get("text") or not claim.get("check"):
            raise SpecError(f"experiments/{claim.get('file')}: a claim needs id, text and check: {claim!r}")
        checks = claim["check"] if isinstance(claim["check"], list) else [claim["check"]]
        comps = [c for check in checks for c in comparisons(check, tables)]
        results.append({**claim, "comparisons": comps, "verdict": overall([c.verdict for c in comps])})
    return results


def measured_at(comps: list[Comparison], scale: str) -> str:
    models = sorted({str(lookup(r.record, "config.model.name")) for c in comps for r in c.a + c.b})
    return f"scale {scale}, " + (", ".join(models) if models else "no runs")


def _num(x: float | None) -> str:
    return DASH if x is None else f"{round(x, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00"


def render(results: list[dict], scale: str) -> tuple[str, str]:
    """(claims.md, claims.csv)."""
    md = [f"# Claims ledger (scale `{scale}`)", "",
          f"Each comparison: d = mean(A) - mean(B) over our runs, 95% percentile bootstrap CI ({N_BOOT:,} resamples, "
          f"numpy seed {SEED}), paired by (seed, low-data subset) when both sides have the same runs. "
          "`>`: holds if the CI is above 0, fails if below, else inconclusive. `≈`: holds if the CI lies inside "
          "(-margin, margin), fails if entirely outside. Fewer than 2 runs on a side: too few runs. "
          "Rules: peft_repro/claims.py.", "",
          "| claim | verdict | comparisons | measured at |", "|---|---|---|---|"]
    for res in results:
        counts = ", ".join(f"{n} {v}" for v in VERDICTS if (n := sum(c.verdict == v for c in res["comparisons"])))
        md.append(f"| {res['id']} | **{res['verdict']}** | {counts} | {measured_at(res['comparisons'], scale)} |")
    rows = []
    for res in results:
        md += ["", f"## {res['id']}: {res['verdict']}", "", f"> {res['text']}", "",
               f"Source: {res.get('source', '?')} (experiments/{res['file']}). "
               f"Measured at {measured_at(res['comparisons'], scale)}.", ""]
        if res.get("note"):
            md += [f"Note: {res['note']}", ""]
        md += ["| comparison | n A | n B | paired | mean d | 95% CI | verdict |", "|---|---|---|---|---|---|---|"]
        for c in res["comparisons"]:
            ci = DASH if c.ci is None else f"[{_num(c.ci[0])}, {_num(c.ci[1])}]"
            margin = f" (margin {c.margin:g})" if c.kind == "same" else ""
            md.append(f"| {c.label}{margin} | {len(c.a)} | {len(c.b)} | {'yes' if c.paired else 'no'} | "
                      f"{_num(c.diff)} | {ci} | {c.verdict} |")
            rows.append({"claim": res["id"], "source": res.get("source", ""), "comparison": c.label, "kind": c.kind,
                         "margin": c.margin if c.kind == "same" else "", "n_a": len(c.a), "n_b": len(c.b),
                         "paired": c.paired, "mean_diff": "" if c.diff is None else round(c.diff, 4),
                         "ci_low": "" if c.ci is None else round(c.ci[0], 4),
                         "ci_high": "" if c.ci is None else round(c.ci[1], 4), "verdict": c.verdict,
                         "measured_at": measured_at([c], scale)})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["claim", "source", "comparison", "kind", "margin", "n_a", "n_b", "paired",
                                             "mean_diff", "ci_low", "ci_high", "verdict", "measured_at"])
    writer.writeheader()
    writer.writerows(rows)
    return "\n".join(md) + "\n", buf.getvalue()
