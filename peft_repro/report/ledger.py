"""The claims ledger's text: claims.md (the at-a-glance list, a summary line per claim and robustness check, the
glossary `READING`, a section per claim with its comparisons) and claims.csv (a row per comparison), from
`claims.evaluate`'s verdicts.
The rules that judge them are claims.py's; what is here only shows them, with the budget diagnostics (`last kept`,
`last rise`) a reviewer reads beside each comparison.
"""
from __future__ import annotations

import csv
import io

import numpy as np

from ..lr_search import dev_curve, record_primary
from ..results import lookup
from ..stats import N_BOOT, SEED
from .cells import Run, models_of, tasks_of
from .claims import (FAMILY_ALPHA, NOT_ON_SPLIT, PERHAPS_NOT_ON_SPLIT, VERDICTS, Comparison, at_plan, counted,
                     family_size, fewest_runs, looks_at, measurement, on_failing_side, planned_runs, toward)
from .spec import DASH, scale_note


def measured_at(comps: list[Comparison], scale: str) -> str:
    """Where a claim was judged: the scale, the base models and the tasks (a claim stated for MNLI and WikiSQL but
    measured on WikiSQL alone says so)."""
    runs = [r for c in comps for r in c.a + c.b]
    if not runs:
        return f"scale {scale}, no runs"
    return f"scale {scale}, " + ", ".join(models_of(runs)) + " on " + ", ".join(tasks_of(runs))


def _num(x: float | None) -> str:
    return DASH if x is None else f"{round(x, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00"


def _verdict(c: Comparison) -> str:
    """The verdict with its CI at the claim's stricter level where one applies (family-wise on the failing side, over
    the claim's looks): a decision it survives or not, or, undecided, the CI it would have to clear."""
    if c.family_ci is None:
        return c.verdict
    over, ci = _level(c), f"[{_num(c.family_ci[0])}, {_num(c.family_ci[1])}]"
    adjusted = c.fails_family_wise if c.holds_over_looks is None else c.holds_over_looks
    if adjusted is None:
        return f"{c.verdict} ({ci} {over})"
    if adjusted:
        return f"{c.verdict} ({ci} {over} too)"
    return f"inconclusive {over}: {ci} (it {c.verdict} at an unadjusted 95%)"


def _level(c: Comparison) -> str:
    """The stricter level a comparison's `family_ci` is at: "family-wise", "over its 3 looks" or both."""
    return " and ".join((["family-wise"] if on_failing_side(c) and c.family > 1 else [])
                        + ([f"over its {c.looks} looks"] if c.looks > 1 else []))


def _headline(res: dict) -> str:
    """A one-comparison claim's d and its CI at the level its verdict is judged at: the stricter one where one applies
    (then the 95% CI after it), else 95%. A claim of several comparisons (its section lists them all): where it
    fails, the comparison that fails it; where it holds by `>` comparisons, the weakest (lowest CI bound); else a
    dash."""
    comps = res["comparisons"]
    if len(comps) != 1:
        if res["verdict"] == "fails":
            c = next(c for c in comps if counted(c) == "fails")
            return f"{c.label}: {_ci_text(c)}"
        if res["verdict"] == "holds" and all(c.kind == "better" and c.ci for c in comps):
            c = min(comps, key=lambda c: c.ci[0])
            return f"weakest, {c.label}: {_ci_text(c)}"
        return DASH
    return DASH if comps[0].ci is None else _ci_text(comps[0])


def _ci_text(c: Comparison) -> str:
    at_95 = f"[{_num(c.ci[0])}, {_num(c.ci[1])}]"
    if not c.family_ci:
        return f"{_num(c.diff)} {at_95}"
    return f"{_num(c.diff)} [{_num(c.family_ci[0])}, {_num(c.family_ci[1])}] {_level(c)}; at 95% {at_95}"


def needed_to(c: Comparison) -> str | None:
    """The verdict the sizes `needed` names would reach ("hold" or "fail": the side d lies on); None where `needed`
    says no size decides ("no sample size", "not on this test split", "perhaps not")."""
    if not c.needed or c.needed.startswith((NOT_ON_SPLIT, PERHAPS_NOT_ON_SPLIT, "no sample size")):
        return None
    return toward(c)


def _needed_text(c: Comparison) -> str:
    return DASH if not c.needed else c.needed + (f" (to {to})" if (to := needed_to(c)) else "")


def _hw(c: Comparison, source: str) -> str:
    return f"{c.half_widths[source]:.2f}" if source in c.half_widths else DASH


def last_kept(runs: list[Run]) -> tuple[int, int] | None:
    """(runs that kept their last dev epoch, runs that chose an epoch on a dev curve of 2 or more), None without
    such runs: a side whose runs mostly kept their last epoch was still rising when training stopped (no plateau).
    A run that keeps its last epoch by rule (trainer.select final) or names none chose nothing and is not counted."""
    kept = []
    for run in runs:
        curve, selected = dev_curve(run.record), run.record.get("selected_epoch")
        if len(curve) > 1 and selected is not None and lookup(run.record, "config.trainer.select") != "final":
            kept.append(selected == curve[-1][0])
    return (sum(kept), len(kept)) if kept else None


def _last_kept_text(c: Comparison) -> str:
    """'8/10 · 2/10' (A · B); one dash where neither side has a dev curve."""
    sides = [last_kept(side) for side in (c.a, c.b)]
    return DASH if sides == [None, None] else " · ".join(DASH if k is None else f"{k[0]}/{k[1]}" for k in sides)


def last_rise(runs: list[Run]) -> float | None:
    """The mean over a side's runs of their dev score's change over their last epoch (the last epoch's minus the one
    before), in the comparison's units; None unless some run has a dev curve of 2 or more epochs in the compared
    metric (the curve is of the task's primary metric: a comparison in NIST has none)."""
    rises = [(curve[-1][1] - curve[-2][1]) * run.factor for run in runs
             if len(curve := dev_curve(run.record)) > 1 and run.metric == f"test.{record_primary(run.record)}"]
    return float(np.mean(rises)) if rises else None


def _last_rise_text(c: Comparison) -> str:
    """'+4.00 · +0.58' (A · B); one dash where neither side has a dev curve in the compared metric."""
    sides = [last_rise(side) for side in (c.a, c.b)]
    return DASH if sides == [None, None] else " · ".join(_num(r) for r in sides)


def reversed_by_one_epoch(c: Comparison) -> bool | None:
    """Whether one more epoch at each side's last-epoch dev pace (`last_rise`) would carry d across 0: the sides'
    rises differ against d's sign by more than |d|. None for a `same` comparison, or one without d or without a rise
    on each side.
    A heuristic for how much a comparison hangs on its training budget: a longer run re-schedules its rate, and dev
    is scored on its own split (greedy for generation)."""
    rises = [last_rise(side) for side in (c.a, c.b)]
    if c.kind != "better" or c.diff is None or None in rises:  # a `same` comparison has no direction to reverse
        return None
    drift = rises[0] - rises[1]
    return drift * c.diff < 0 and abs(drift) > abs(c.diff)


def shown_verdict(res: dict, scale: str | None) -> str:
    """The claim's verdict as the ledger prints it: "(interim)" before its plan is complete, or, without a plan at
    this scale, while a comparison has no results or too few runs (the verdict leaves those out: `overall`)."""
    plan = at_plan(res, scale)
    unmeasured = any(c.verdict in ("no results", "too few runs") for c in res["comparisons"])
    interim = (plan is False and res["verdict"] != "no results") or (
        plan is None and unmeasured and res["verdict"] in ("holds", "fails", "inconclusive"))
    return res["verdict"] + (" (interim)" if interim else "")


def at_a_glance(results: list[dict], scale: str | None = None, checks: list[dict] = ()) -> str:
    """The ledger in the numbers a powered scale is judged by: claims decided (how many of them at their plan, how many
    interim looks that may still turn), the fewest runs on a side of a measured comparison (a side that trains nothing
    is one run by nature), and the median CI half-width of the comparisons in percentage points (columns shown x100:
    BLEU, METEOR, ROUGE, accuracy; NIST and CIDEr have scales of their own), each measurement once (`measurement`),
    over all of them and over those whose CI counts the test items (a CI over runs alone is narrower);
    and the decided claims whose robustness `checks` do not agree with them."""
    verdicts = [res["verdict"] for res in results]
    decided = sum(v in ("holds", "fails") for v in verdicts)
    counts = ", ".join(f"{n} {v}" for v in ("holds", "fails") if (n := verdicts.count(v)))
    text = f"{decided} of {len(results)} claims decided" + (f" ({counts})" if counts else "")
    plans = [at_plan(res, scale) for res in results]
    if decided and any(p is not None for p in plans):  # an interim verdict may still turn: say how many are final
        decided_plans = [(v, p) for v, p in zip(verdicts, plans) if v in ("holds", "fails")]
        final = [v for v, p in decided_plans if p is True]
        final_counts = ", ".join(f"{n} {v}" for v in ("holds", "fails") if (n := final.count(v)))
        text += (", all at their plan" if len(final) == decided else
                 f", {len(final)} of them at their plan" + (f" ({final_counts})" if final else "")
                 + f" and {sum(p is False for _, p in decided_plans)} in interim looks")
    undecided = ", ".join(f"{n} {v}" for v in VERDICTS[2:] if (n := verdicts.count(v)))
    lines = [text + (f"; {len(results) - decided} not decided ({undecided})." if undecided else ".")]
    measured = list({measurement(c): c for res in results for c in res["comparisons"] if c.diff is not None}.values())
    if (fewest := fewest_runs(measured)) is not None:
        lines.append(f"Fewest runs on a side that trains, over the measured comparisons: {fewest}.")
    # judged: a CI that decides (2 or more runs on each side that trains); too few runs' item-only CI would narrow
    judged = [c for c in measured if c.verdict != "too few runs"]
    in_points = [c for c in judged if c.ci is not None and all(r.factor == 100 for r in c.a + c.b)]
    if in_points:
        with_items = [_half(c.ci) for c in in_points if "items" in c.ci_over]
        lines.append(f"Median 95% CI half-width of the {len(in_points)} judged comparisons (2 or more runs on each "
                     f"side that trains) in percentage points (BLEU, METEOR, ROUGE, accuracy; repeats counted once): "
                     f"{float(np.median([_half(c.ci) for c in in_points])):.2f}"
                     + (f"; of the {len(with_items)} whose CI counts the test items' noise too: "
                        f"{float(np.median(with_items)):.2f} (the other {len(in_points) - len(with_items)}, over runs "
                        f"alone, are narrower than a CI over items would be)" if len(with_items) < len(in_points)
                        and with_items else "") + ".")
    kept = [[last_kept(side) for side in (c.a, c.b)] for c in judged]
    if any(k for sides in kept for k in sides):
        rising = sum(any(k and 2 * k[0] > k[1] for k in sides) for sides in kept)
        lines.append(f"Of the {len(judged)} judged comparisons (every metric), those with a side whose runs mostly "
                     f"kept their last dev epoch (still rising when training stopped: `last kept`): {rising}.")
    turns = [(c, t) for c in judged if (t := reversed_by_one_epoch(c)) is not None]
    if turns:
        reversed_ = [c for c, t in turns if t]
        # a measurement two claims share is decided if either claim counts it so (their levels may differ)
        decided_ = {measurement(c) for res in results for c in res["comparisons"] if counted(c) in ("holds", "fails")}
        reversed_decided = [c.label for c in reversed_ if measurement(c) in decided_]
        lines.append(f"Of the {len(turns)} judged `>` comparisons with a dev curve in their metric on both sides, "
                     f"those that one more epoch at each side's last-epoch dev rise would reverse (the sides' "
                     f"`last rise` differ against d by more than |d|; a heuristic): {len(reversed_)} "
                     f"({len(reversed_decided)} of them decided"
                     + (f": {'; '.join(reversed_decided)}" if reversed_decided else "") + ").")
    split_bound = {kind: [res["id"] for res in results if res["verdict"] == "inconclusive" and any(
        c.needed.startswith(prefix) for c in res["comparisons"] if counted(c) == "inconclusive")]
        for kind, prefix in (("not", NOT_ON_SPLIT), ("perhaps", PERHAPS_NOT_ON_SPLIT))}
    perhaps = [claim for claim in split_bound["perhaps"] if claim not in split_bound["not"]]
    if split_bound["not"] or perhaps:
        lines.append("Inconclusive claims with a comparison no number of runs can decide on its test split (`needed`): "
                     + (", ".join(split_bound["not"]) or "none") + (f"; perhaps: {', '.join(perhaps)}" if perhaps
                                                                     else "") + ".")
    of_decided = [(res, check) for res in results if res["verdict"] in ("holds", "fails")
                  for check in checks if _check_of(check) == res["id"]
                  and check["verdict"] in ("holds", "fails", "inconclusive")]  # a check not yet judged says nothing
    if of_decided:
        disagree = [f"{res['id']} ({check['id']}: {check['verdict']})" for res, check in of_decided
                    if check["verdict"] != res["verdict"]]
        lines.append("Decided claims whose robustness check does not agree: " + "; ".join(disagree) + "."
                     if disagree else f"The {len(of_decided)} judged robustness check(s) of decided claims agree "
                     "with them.")
    if any(p is not None for p in plans):
        lines.append(f"Claims at their plan (every comparison measured, with its planned runs a side): "
                     f"{(n_plan := sum(p is True for p in plans))} of {len(results)}"
                     + (" (the other verdicts are interim looks: their runs are not all in)." if n_plan < len(results)
                        else "."))
    return "**At a glance**:\n\n" + "\n".join(f"- {line}" for line in lines)


def _half(ci: tuple[float, float]) -> float:
    return (ci[1] - ci[0]) / 2


READING = [
    "## How to read a comparison", "",
    "- **d** = mean(A) − mean(B) over the compared runs; `n A`, `n B`: the runs compared (a paired comparison leaves "
    "out runs without a partner, so d may differ from the table's means).",
    "- **95% CI** = d ± t·sqrt(SE_items² + SE_runs²), t at the Welch-Satterthwaite degrees of freedom (n − 1 from "
    "paired runs, k − 1 from k low-data subsets), never narrower than the runs' own t interval (`CI over` then "
    "says \"runs' floor\"). Rules: peft_repro/report/claims.py.",
    f"  - SE_items: the sd of {N_BOOT:,} bootstrap draws of the test items (numpy seed {SEED}), one draw for both "
    "sides (paired by item); BLEU is recomputed from the drawn items' n-gram counts.",
    "  - SE_runs: the sd over sqrt(n) of the differences over seeds and low-data subsets, paired by column, seed and "
    "subset where both sides have them (sides of different columns by seed and subset; unpaired runs left out), else "
    "Welch's. The seeds of one low-data subset are one draw: the SE is cluster-robust over the subsets.",
    "- **CI over**: the sources the CI counts; `±items` / `±runs`: the half-width from each alone. Without items "
    "(E2E's NIST, METEOR, ROUGE-L and CIDEr: their records keep no per-item statistics) the CI speaks for this test "
    "set only, and is narrower than one over items.",
    "- **Verdicts**: `>` holds if the CI lies above 0, fails if below, else is inconclusive; `≈` holds if the CI "
    "lies inside (−margin, margin), fails if entirely outside it. *Too few runs*: fewer than 2 runs (low-data: "
    "subsets) on a side that trains (the item-only CI is shown; it leaves out training noise); a side that trains "
    "nothing (a discrete prompt) is one run. *Interim*: the claim's plan is not complete (every comparison measured "
    "with its planned runs a side). A claim of several comparisons fails only family-wise, and a claim looked at "
    "several times holds only over its looks: its section says so, and the verdict column gives the CI at that "
    "level.",
    "- **needed**: the runs a side or test items that would decide an inconclusive comparison at the measured "
    "variance and difference (\"to hold\" or \"to fail\": the side d lies on), no more items than the test split "
    "holds (E2E: 630 MRs); \"not on this test split\" where its items alone are too noisy whatever the runs "
    "(\"perhaps not\" where only the seed x item part of their noise, which more runs shrink, makes them so). It is "
    "sized at the comparison's present level; a further stage acting on it would be one more look, judged at a "
    "stricter level still.",
    "- **last kept** (A · B): of a side's runs that chose an epoch on a dev curve, those whose kept (best) epoch was "
    "their last: most of them say the side still rose when training stopped, and a longer budget may move the "
    "comparison. **last rise** (A · B): the mean change of a side's dev score over its last epoch, in the compared "
    "metric (– without a dev curve in it); where the sides' rises differ by more than |d| against its sign, one "
    "more epoch at that pace would reverse the comparison.",
    "- Every CI is conditional on the learning rates chosen on dev (each method's grid at seed 0, or subset 0 seed 0 "
    "for low-data): the noise of that choice is not in it (each table's lr line says whether the choice is within "
    "seed noise: another seed could have chosen the runner-up). At the default scale dev score predicted test score "
    "across configurations but hardly across one configuration's seeds (docs/default_scale.md, session 21): a choice "
    "within seed noise is the seed's luck, and how far another choice would move a comparison is not measured.",
    "- **claims.csv**: a row per comparison. `claim_verdict` is the claim's verdict as the summary shows it; `verdict` "
    "the comparison's as its claim counts it (a decision its stricter level does not confirm is inconclusive), "
    "`verdict_at_95` the unadjusted one; `fails_family_wise`, `holds_over_looks` and `ci_family_*` give that level.",
]


def render_ledger(results: list[dict], scale: str) -> tuple[str, str]:
    """(claims.md, claims.csv): the lecture's claims, then the robustness checks (`checks:` in the specs)."""
    lecture = [res for res in results if res.get("role") != "check"]
    checks = [res for res in results if res.get("role") == "check"]
    d_ci = "d [CI at the verdict's level]"
    md = [f"# Claims ledger (scale `{scale}`)", "",
          "Terms (d, CI over, ±items, ±runs, looks, plan, needed, last kept, last rise): \"How to read a "
          "comparison\", after the summary tables.", "", at_a_glance(lecture, scale, checks), "",
          f"| claim | verdict | {d_ci} | comparisons | runs a side (planned) | measured at | robustness checks |",
          "|---|---|---|---|---|---|---|"]
    checks_of = {res["id"]: [check for check in checks if _check_of(check) == res["id"]] for res in lecture}
    md += [_summary_line(res, scale, checks_of[res["id"]]) for res in lecture]
    if checks:
        md += ["", "**Robustness checks** (not the lecture's claims, not counted above): a claim's comparison "
               "repeated under a changed design choice, e.g. a longer training budget. They say whether the claim's "
               "verdict depends on that choice.", "",
               f"| check | of claim | verdict | {d_ci} | comparisons | runs a side (planned) | measured at |",
               "|---|---|---|---|---|---|---|"]
        md += [_summary_line(res, scale) for res in checks]
    md += ["", *READING]
    rows = []
    for res in lecture + checks:
        md += _details(res, scale, rows, checks_of.get(res["id"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["claim", "check_of", "claim_verdict", "source", "comparison", "kind",
                                             "margin", "n_a", "n_b", "paired", "mean_diff", "ci_low", "ci_high",
                                             "ci_over", "half_width_items", "half_width_runs", "unpaired_left_out",
                                             "verdict", "verdict_at_95", "fails_family_wise", "looks",
                                             "holds_over_looks", "ci_family_low", "ci_family_high", "needed",
                                             "needed_to",
                                             "last_kept_a", "with_dev_curve_a", "last_kept_b", "with_dev_curve_b",
                                             "last_rise_a", "last_rise_b",
                                             "measured_at"])
    writer.writeheader()
    writer.writerows(rows)
    return "\n".join(md) + "\n", buf.getvalue()


def _check_of(res: dict) -> str | None:
    """The claim a robustness check repeats (None for a claim)."""
    return res.get("of") if res.get("role") == "check" else None


def _summary_line(res: dict, scale: str, its_checks: list[dict] | None = None) -> str:
    """A claim's (or a check's) line in the ledger's summary table: the verdicts as it counts them (a failure that is
    not family-wise: inconclusive); a claim's line ends with its robustness checks' verdicts (`its_checks` given)."""
    counts = ", ".join(f"{n} {v}" for v in VERDICTS if (n := res["counted"].count(v)))
    fewest, planned = fewest_runs(res["comparisons"]), planned_runs(res, scale)
    runs = DASH if fewest is None else f"{fewest}" + (f" ({planned})" if planned else "")
    of = f" {_check_of(res)} |" if _check_of(res) else ""
    line = (f"| {res['id']} |{of} **{shown_verdict(res, scale)}** | {_headline(res)} | {counts} | {runs} | "
            f"{measured_at(res['comparisons'], scale)} |")
    if its_checks is not None:
        line += " " + ("; ".join(f"{check['id']}: {shown_verdict(check, scale)}" for check in its_checks)
                       or DASH) + " |"
    return line


def _details(res: dict, scale: str, rows: list[dict], its_checks: list[dict] | None = None) -> list[str]:
    """A claim's (or a check's) section: its text, notes, comparisons and the checks of it; appends its CSV rows to
    `rows`."""
    what = f"A robustness check of `{_check_of(res)}`, not a lecture claim. " if _check_of(res) else ""
    md = ["", f"## {res['id']}: {shown_verdict(res, scale)}", "", f"> {res['text']}", "",
          f"{what}Source: {res.get('source', '?')} (experiments/{res['file']}). "
          f"Measured at {measured_at(res['comparisons'], scale)}.", ""]
    if its_checks:
        md += ["Robustness checks of this claim (sections below): " + "; ".join(
            f"`{check['id']}`, {shown_verdict(check, scale)}" for check in its_checks) + ".", ""]
    if res.get("note"):
        md += [f"Note: {res['note']}", ""]
    md += scale_note(res, scale)
    if (m := family_size(res["comparisons"])) > 1:
        md += [f"Family-wise: the claim fails only through a comparison that also fails at the Bonferroni level "
               f"1 - 0.05/{m} ({100 * (1 - FAMILY_ALPHA / m):.2f}%), for its {m} comparisons with a deciding CI.",
               ""]
    if (looks := looks_at(res, scale)) > 1:
        md += [f"Over its looks: the claim was judged {looks} times, and an undecided verdict changed its design "
               f"(its note says how), so a comparison holds only at the Bonferroni level 1 - 0.05/"
               f"{looks} ({100 * (1 - FAMILY_ALPHA / looks):.2f}%) too, and fails only at 1 - 0.05/({looks} x m), "
               f"m its comparisons with a deciding CI: "
               f"the verdict that testing every look at that level gives (its earlier looks, not clearing 95%, "
               f"cleared no stricter level either), conservative where the looks share runs.", ""]
    md += ["| comparison | n A | n B | paired | mean d | 95% CI | CI over | ±items | ±runs | verdict | needed "
           "| last kept | last rise |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["comparisons"]:
        ci = DASH if c.ci is None else f"[{_num(c.ci[0])}, {_num(c.ci[1])}]"
        margin = f" (margin {c.margin:g})" if c.kind == "same" else ""
        paired = ("yes" + (f" ({c.unpaired_left_out} unpaired left out)" if c.unpaired_left_out else "")
                  if c.paired else "no")
        md.append(f"| {c.label}{margin} | {len(c.a)} | {len(c.b)} | {paired} | {_num(c.diff)} | {ci} | "
                  f"{c.ci_over or DASH} | {_hw(c, 'items')} | {_hw(c, 'runs')} | {_verdict(c)} | "
                  f"{_needed_text(c)} | {_last_kept_text(c)} | {_last_rise_text(c)} |")
        rows.append({"claim": res["id"], "check_of": _check_of(res) or "",
                     "claim_verdict": shown_verdict(res, scale), "source": res.get("source", ""),
                     "comparison": c.label, "kind": c.kind,
                     "margin": c.margin if c.kind == "same" else "", "n_a": len(c.a), "n_b": len(c.b),
                     "paired": c.paired, "mean_diff": "" if c.diff is None else round(c.diff, 4),
                     "ci_low": "" if c.ci is None else round(c.ci[0], 4),
                     "ci_high": "" if c.ci is None else round(c.ci[1], 4), "ci_over": c.ci_over,
                     "half_width_items": round(c.half_widths["items"], 4) if "items" in c.half_widths else "",
                     "half_width_runs": round(c.half_widths["runs"], 4) if "runs" in c.half_widths else "",
                     "unpaired_left_out": c.unpaired_left_out, "verdict": counted(c),
                     "verdict_at_95": c.verdict,
                     "fails_family_wise": "" if c.fails_family_wise is None else c.fails_family_wise,
                     "looks": c.looks, "holds_over_looks": "" if c.holds_over_looks is None else c.holds_over_looks,
                     "ci_family_low": "" if c.family_ci is None else round(c.family_ci[0], 4),
                     "ci_family_high": "" if c.family_ci is None else round(c.family_ci[1], 4),
                     "needed": c.needed, "needed_to": needed_to(c) or "",
                     **{f"{column}_{side}": "" if kept is None else n
                        for side, kept in (("a", last_kept(c.a)), ("b", last_kept(c.b)))
                        for column, n in zip(("last_kept", "with_dev_curve"), kept or (None, None))},
                     **{f"last_rise_{side}": "" if (rise := last_rise(runs)) is None else round(rise, 4)
                        for side, runs in (("a", c.a), ("b", c.b))},
                     "measured_at": measured_at([c], scale)})
    return md
