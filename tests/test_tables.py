"""`python -m peft_repro.report`: reference tables beside ours, the claims ledger, LaTeX, CLI, on hand-made records."""
import csv
import dataclasses
import io
import json
import math
import re

import numpy as np
import pytest

from peft_repro import report, stats
from peft_repro.paths import repo_root, results_dir
from peft_repro.report import cells, claims, costs, ledger, render, spec
from peft_repro.report.__main__ import main as report_main

DEMO = """
table: demo
title: "Demo table"
model: gpt2-medium
task: e2e
metrics: [BLEU, NIST]
rows:
  - method: FT
    values:
      - {source: "paper v1", BLEU: 68.2, NIST: 8.62}
      - {source: "paper ACL", BLEU: 68.8, NIST: 8.71}
  - method: Prefix
    values: [{source: "paper ACL", BLEU: 70.3, NIST: 8.82}]
ours:
  experiment: demo
  columns:
    BLEU: {metric: test.BLEU, factor: 100}
    NIST: {metric: test.NIST, digits: 2}
  rows:
    - {method: FT, where: {config.method.name: full}}
    - {method: Prefix, where: {config.method.name: prefix}}
    - {method: LoRA, where: {config.method.name: lora}}
"""

# a grid for the claims: rows are methods, one column x, runs by seed (and low-data subset)
GRID = """
table: grid
title: "Grid"
model: gpt2-medium
columns: [x]
ours:
  experiment: grid
  metric: test.score
  rows: [{method: A, where: {config.method.name: a}}, {method: B, where: {config.method.name: b}},
         {method: C, where: {config.method.name: c}}, {method: D, where: {config.method.name: d}},
         {method: E, where: {config.method.name: e}}, {method: A2, where: {config.method.name: a2}},
         {method: F, where: {config.method.name: f}}]
claims:
  - {id: clear, text: "A > B", check: {kind: better, table: grid, columns: [x], pairs: [[A, B]]}}
  - {id: crossing, text: "C > D", check: {kind: better, table: grid, columns: [x], pairs: [[C, D]]}}
  - {id: reversed, text: "B > A", check: {kind: better, table: grid, columns: [x], pairs: [[B, A]]}}
  - {id: one_run, text: "E > B", check: {kind: better, table: grid, columns: [x], pairs: [[E, B]]}}
  - {id: missing, text: "F > B", check: {kind: better, table: grid, columns: [x], pairs: [[F, B]]}}
  - id: same
    text: "A2 within 1 of A"
    check: {kind: same, margin: 1, table: grid, pairs: [[{row: A2, col: x}, {row: A, col: x}]]}
  - {id: not_same, text: "B within 1 of A", check: {kind: same, margin: 1, table: grid, columns: [x], pairs: [[B, A]]}}
  - id: mixed
    text: "A > B and C > D"
    check:
      - {kind: better, table: grid, columns: [x], pairs: [[A, B]]}
      - {kind: better, table: grid, columns: [x], pairs: [[C, D]]}
"""
SCORES = {"a": [10, 11, 12, 13], "b": [0, 1, 2, 3], "c": [1, 5, 3, 4], "d": [2, 4, 3, 5], "e": [20],
          "a2": [10.1, 11.1, 12.1, 13.1]}


def record(experiment, method, test, seed=0, subset=None, trainable=1000, pct=100.0, status="ok"):
    return {
        "status": status, "record": f"{experiment}-{method}-{seed}-{subset}", "experiment": experiment,
        "scale": "default", "seed": seed,
        "config": {"model": {"name": "tiny_llama"}, "method": {"name": method},
                   "task": {"name": "e2e", "max_eval_examples": 4,
                            "low_data": None if subset is None else {"size": 50, "subset": subset}}},
        "git": {"commit": "abc", "dirty": False}, "params": {"trainable": trainable, "trainable_pct": pct},
        "train_examples": 16, "test": test,
    }


def write_records(results, experiment, records):
    folder = results / "runs" / experiment / "default"
    folder.mkdir(parents=True, exist_ok=True)
    for rec in records:
        (folder / f"{rec['record']}.json").write_text(json.dumps(rec))
    return folder


@pytest.fixture
def demo(tmp_path):
    """(experiments dir, results dir) with the demo and grid tables and their records."""
    exp = tmp_path / "experiments"
    exp.mkdir()
    (exp / "demo.yaml").write_text(DEMO)
    (exp / "grid.yaml").write_text(GRID)
    results = tmp_path / "results"
    folder = write_records(results, "demo", [
        *(record("demo", "full", {"BLEU": b, "NIST": n}, seed=s) for s, (b, n) in
          enumerate([(0.60, 8.0), (0.62, 8.1), (0.64, 8.2)])),
        {**record("demo", "prefix", {"BLEU": 0.70, "NIST": 9.0}, trainable=10, pct=1.0), "bf16": True},
        record("demo", "lora", {"BLEU": 0.99, "NIST": 9.9}, status="failed"),  # not ok: ignored
        record("demo", "full", {}, seed=9, status="diverged"),  # left out, and named
    ])
    write_records(results, "zero_shot", [record("zero_shot", "zero_shot", {"BLEU": 0.61, "NIST": 7.0}, trainable=0,
                                                pct=0.0)])
    (folder / "x.json.superseded-20260101-000000").write_text("not json")  # not *.json: ignored
    write_records(results, "grid", [record("grid", m, {"score": v}, seed=s % 2, subset=s // 2)
                                    for m, values in SCORES.items() for s, v in enumerate(values)])
    return exp, results


def build(exp, results):
    specs, claim_specs = spec.load_specs(exp)
    built = cells.build_tables(specs, results, "default")
    return built, {c["id"]: c for c in claims.evaluate(claim_specs, built)}


def test_trainable_column_mixes_records_with_and_without_stored_counts():
    def run(trainable, stored=None):
        params = {"trainable": trainable, "trainable_pct": 4.62}
        if stored is not None:
            params.update(stored=stored, stored_pct=0.0856)
        return cells.Run(value=0.5, key=(0, None), record={"params": params})

    # records written before params.stored existed sit beside newer ones in the same row
    assert render.fmt_trainable([run(6210944), run(6210944, 115200)]) == "6,210,944 (4.62%); stored 115,200 (0.0856%)"
    assert render.fmt_trainable([run(6210944), run(5760, 5760)]) == "5,760–6,210,944"
    assert render.fmt_trainable([run(None)]) == "–"


def test_a_failing_render_leaves_no_report_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "render_latex", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        report.write_report(tmp_path, "default", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_costs_sum_each_methods_records_and_count_grid_points_apart(tmp_path):
    def timed(method, seed, wall, test=True):
        rec = record("demo", method, {"BLEU": 0.5} if test else None, seed=seed)
        return {**rec, "wall_seconds": wall, "train_seconds": wall - 60, "test_seconds": 60 if test else None,
                "hardware": "CPU test"}

    write_records(tmp_path, "demo", [timed("lora", 0, 600), timed("lora", 1, 1200), timed("lora", 2, 1800),
                                     {**timed("lora", 3, 360, test=False), "record": "grid"},
                                     timed("full", 0, 3600)])
    write_records(tmp_path, "demo", [{**timed("lora", 4, 300), "hardware": "CPU test, 1 torch thread"}])
    resumed = {**timed("lora", 5, 600), "wall_seconds": 120, "hardware": "CPU resumed"}  # its clock: since the resume
    write_records(tmp_path, "demo", [resumed])
    md = costs.render_costs(tmp_path, "default").splitlines()
    assert "| demo | lora | 3 | 1 | 1.10 | 20.0 | 19.0 | 1.0 | CPU test |" in md  # (600+1200+1800+360) / 3600 h
    assert "| demo | lora | 1 | 0 | 0.08 | 5.0 | 4.0 | 1.0 | CPU test, 1 torch thread |" in md  # its own row
    assert "| demo | lora | 1 | 0 | 0.17 | 10.0 | 9.0 | 1.0 | CPU resumed |" in md  # train + test, not 2 min
    assert "| demo | full | 1 | 0 | 1.00 | 60.0 | 59.0 | 1.0 | CPU test |" in md
    assert md[-1] == "Total: 7 records, 2.4 hours of wall time summed over runs on CPU."
    write_records(tmp_path, "demo", [{**timed("lora", 6, 1800), "hardware": "NVIDIA H200 x1"}])
    assert costs.render_costs(tmp_path, "default").splitlines()[-1] == (
        "Total: 8 records, 2.9 hours of wall time summed over runs: 2.4 on CPU, 0.5 on GPU.")


def test_table_renders_papers_beside_ours(demo):
    built, _ = build(*demo)
    md = render.render_markdown({"demo": built["demo"]}, "default").splitlines()
    start = md.index("| method | source | BLEU | NIST | trainable / note |")
    assert md[start:start + 9] == [
        "| method | source | BLEU | NIST | trainable / note |",
        "|---|---|---|---|---|",
        "| Zero-shot | ours | 61.0 | 7.00 | 0 (0%) |",
        "| FT | paper v1 | 68.2 | 8.62 |  |",
        "| FT | paper ACL | 68.8 | 8.71 |  |",
        "| FT | ours | 62.0 ± 2.0 (n=3)† | 8.10 ± 0.10 (n=3) | 1,000 (100%) |",  # 60-64 vs 61: † (not above)
        "| Prefix | paper ACL | 70.3 | 8.82 |  |",
        "| Prefix | ours | 70.0 (n=1) | 9.00 (n=1) | 10 (1%) |",  # one trained run: n=1; zero-shot trains nothing
        "| LoRA | ours | – | – | – |",
    ]
    assert "- FT: tiny_llama; e2e: 16 train / 4 test examples; seeds 0, 1, 2; commit abc (3 runs)" in md
    assert "- LoRA: no runs" in md
    assert "- Prefix: tiny_llama; e2e: 16 train / 4 test examples; seeds 0; precision bf16; commit abc (1 run)" in md
    assert "Left out: 1 run(s) of `demo` whose training diverged: `demo-full-9-None`" in md
    assert any(line.startswith("Paper: gpt2-medium, e2e. Ours: tiny_llama, experiment `demo`, scale `default`") for line in md)


def test_claim_verdicts(demo):
    _, res = build(*demo)
    verdict = {cid: r["verdict"] for cid, r in res.items()}
    assert verdict == {"clear": "holds", "crossing": "inconclusive", "reversed": "fails", "one_run": "too few runs",
                       "missing": "no results", "same": "holds", "not_same": "fails", "mixed": "inconclusive"}
    clear = res["clear"]["comparisons"][0]
    assert (clear.label, len(clear.a), len(clear.b), clear.paired) == ("A @ x > B @ x", 4, 4, True)
    assert clear.diff == pytest.approx(10.0) and 0 < clear.ci[0] <= clear.ci[1]
    lo, hi = res["crossing"]["comparisons"][0].ci
    assert lo < 0 < hi
    assert res["one_run"]["comparisons"][0].ci is None
    assert res["same"]["comparisons"][0].ci == pytest.approx((0.1, 0.1))  # paired: every difference is 0.1


def test_runs_pair_on_common_keys_and_pooled_rows_resample_independently():
    a = [cells.Run(v, (50, s, None), {}) for s, v in enumerate([1.0, 2.0, 3.0])]
    b = [cells.Run(v, (50, s, None), {}) for s, v in enumerate([0.0, 4.0])]  # seed 2 has no partner: left out
    c = claims.judge(claims.Comparison("a > b", "better", 0, a, b))
    assert c.paired and c.unpaired_left_out == 1 and c.diff == pytest.approx(-0.5) and c.ci_over == "seeds"
    assert c.verdict == "inconclusive" and c.needed.endswith("runs a side")
    pooled = [cells.Run(v, (50, 0, None), {}) for v in [1.0, 2.0, 3.0]]  # three rows (init words) of one seed
    c = claims.judge(claims.Comparison("a > b", "better", 0, pooled, b))
    assert not c.paired and c.unpaired_left_out == 0 and c.diff == pytest.approx(0.0)


def test_seeds_of_one_low_data_subset_are_one_draw_of_the_runs():
    # 3 subsets x 2 seeds; each subset's seeds differ by the same amount: the subsets, not the seeds, vary
    diffs = {0: 1.0, 1: 3.0, 2: 5.0}
    a = [cells.Run(diffs[k], ("50", s, k), {}) for k in diffs for s in (0, 1)]
    b = [cells.Run(0.0, ("50", s, k), {}) for k in diffs for s in (0, 1)]
    c = claims.judge(claims.Comparison("a > b", "better", 0, a, b))
    assert c.paired and c.ci_over == "seeds x subsets" and c.stats.df_runs == 2  # 3 subsets, not 6 runs
    assert c.stats.se_runs == pytest.approx(2.0 / math.sqrt(3))  # sd of the subsets' means 1, 3, 5 over sqrt(3)
    # one value a cluster: the plain var/n; clusters of unequal size: the cluster-robust estimate by hand
    assert stats.mean_variance([1.0, 2.0, 4.0], [0, 1, 2]) == (pytest.approx(np.var([1, 2, 4], ddof=1) / 3), 2)
    x, groups = np.array([1.0, 2.0, 4.0, 7.0]), [0, 0, 1, 2]
    by_hand = 3 / 2 * ((x[:2] - x.mean()).sum() ** 2 + (x[2] - x.mean()) ** 2 + (x[3] - x.mean()) ** 2) / 16
    assert stats.mean_variance(list(x), groups) == (pytest.approx(by_hand), 2)
    # an undecided one asks for more subsets, each with its seeds
    noisy = [cells.Run(v, ("50", s, k), {}) for k, v in enumerate([1.0, -0.5, 2.5]) for s in (0, 1)]
    c = claims.judge(claims.Comparison("a > b", "better", 0, noisy, b))
    k = int(c.needed[1:].split()[0])
    assert c.verdict == "inconclusive" and c.needed == f"~{k} subsets a side of 2 runs each (~{2 * k} runs)"
    assert c.stats.predicted_half_width(runs_factor=k / 3) < c.diff <= c.stats.predicted_half_width(
        runs_factor=(k - 1) / 3)
    # two seeds of one subset a side are one draw: too few runs to judge over runs
    one = claims.judge(claims.Comparison("a > b", "better", 0, a[:2], b[:2]))
    assert one.verdict == "too few runs"
    # subset-less runs pooled from several rows share keys and stay separate draws (Welch over 3 runs)
    pooled = [cells.Run(v, ("50", 0, None), {}) for v in [1.0, 2.0, 3.0]]
    assert stats.run_se(pooled, [], False) == (pytest.approx(math.sqrt(1 / 3)), pytest.approx(2))


def e2e_run(outputs: list[str], seed: int = 0, repeat_every: int = 0) -> cells.Run:
    """A run record of E2E with its items' statistics, as train.py writes them; `repeat_every`: every such item
    asks item 0's MR again (as WikiSQL's test split repeats questions)."""
    from peft_repro.metrics.e2e import score_e2e
    from peft_repro.tasks import EvalItem, item_ids
    from peft_repro.tasks.e2e import E2ETask

    items = [EvalItem(f"mr{0 if repeat_every and i % repeat_every == 0 else i}\n",
                      [f"the place {i} serves food", f"place {i} is a pub"]) for i in range(len(outputs))]
    bleu = score_e2e(outputs, [it.references for it in items], metrics=["BLEU"])["BLEU"]
    record = {"config": {"task": {"name": "e2e"}}, "seed": seed, "test": {"BLEU": bleu},
              "test_items": {"metric": "BLEU", "ids": item_ids(items),
                             "stats": E2ETask.item_stats(outputs, items)}}
    return cells.Run(bleu * 100, (None, seed, None), record, "test.BLEU", 100)


def test_item_bootstrap_recomputes_corpus_bleu_and_labels_what_it_resampled():
    good = [f"the place {i} serves food" for i in range(30)]
    bad = [f"place {i} food" if i % 3 else f"the place {i} serves food" for i in range(30)]
    c = claims.judge(claims.Comparison("good > bad", "better", 0, [e2e_run(good)], [e2e_run(bad)]))
    # one run a side: the CI is over test items only and decides nothing
    assert c.ci_over == "items" and c.verdict == "too few runs" and c.ci[0] > 0 and "runs" not in c.half_widths
    assert c.diff == pytest.approx(e2e_run(good).value - e2e_run(bad).value)
    both = claims.judge(claims.Comparison("good > bad", "better", 0, [e2e_run(good, s) for s in (0, 1)],
                                          [e2e_run(bad, s) for s in (0, 1)]))
    assert both.ci_over == "items x seeds" and both.paired and both.verdict == "holds"
    # the statistics must give back the recorded score, else the run is resampled by seed only
    run = e2e_run(good)
    run.record["test_items"]["stats"][0][1] += 5
    assert claims.item_stats(run) is None


def test_repeated_test_sources_keep_their_own_items_in_the_bootstrap():
    from peft_repro.tasks import EvalItem, item_id, item_ids

    good = [f"the place {i} serves food" for i in range(30)]
    run = e2e_run(good, repeat_every=10)  # items 0, 10 and 20 share one MR
    ids = run.record["test_items"]["ids"]
    assert len(set(ids)) == 30 and ids[10] == ids[0] + "#2" and ids[20] == ids[0] + "#3"
    assert claims.item_stats(run) is not None
    items = [EvalItem(f"mr{i}", []) for i in range(3)]
    assert item_ids(items) == [item_id(it) for it in items]  # no repeats: the ids records have always had


def test_float_noise_is_no_difference_and_unmeasured_comparisons_do_not_decide():
    a = [cells.Run(v, (0, s), {}) for s, v in enumerate([1.1e-16, 1.1e-16])]
    b = [cells.Run(v, (0, s), {}) for s, v in enumerate([4.7e-17, 4.7e-17])]  # BLEU "0" of two sizes
    assert claims.judge(claims.Comparison("a > b", "better", 0, a, b)).verdict == "inconclusive"
    assert claims.overall(["holds", "holds", "no results"]) == "holds"
    assert claims.overall(["holds", "no results", "fails"]) == "fails"
    assert claims.overall(["no results", "no results"]) == "no results"
    # a comparison whose new cell has one seed so far is not yet measured: the others' verdicts stand
    assert claims.overall(["holds", "too few runs", "no results"]) == "holds"
    assert claims.overall(["inconclusive", "too few runs"]) == "inconclusive"
    assert claims.overall(["too few runs", "no results"]) == "too few runs"


def test_the_ledger_counts_runs_that_kept_their_last_dev_epoch():
    """`last kept`: of a side's runs that chose an epoch on a dev curve (2 or more epochs of the primary metric),
    those whose kept epoch was the last; a run without a curve (a discrete prompt, a one-epoch run), without a kept
    epoch or keeping the last by rule (trainer.select final) is not counted."""
    def run(selected, epochs=3, select="best_dev"):
        history = [{"step": e, "epoch": e, "dev_BLEU": 0.5} for e in range(epochs)] + [{"step": 99, "epoch": 9}]
        return cells.Run(50.0, (None, None), {"config": {"task": {"name": "e2e"}, "trainer": {"select": select}},
                                              "history": history, "selected_epoch": selected})
    rising, plateau = [run(2), run(2), run(1), run(2, select="final")], [run(0), run(1), run(2, epochs=1), run(None)]
    assert ledger.last_kept(rising) == (2, 3) and ledger.last_kept(plateau) == (0, 2)
    assert ledger.last_kept([run(0, epochs=1)]) is None
    c = claims.judge(claims.Comparison("a > b", "better", 0, rising, plateau))
    md, csv_text = ledger.render_ledger([{"id": "c", "text": "t", "file": "f.yaml", "verdict": c.verdict,
                                   "counted": [c.verdict], "comparisons": [c]}], "default")
    row = next(csv.DictReader(io.StringIO(csv_text)))
    assert "| 2/3 · 0/2 |" in md
    assert ledger._last_kept_text(claims.Comparison("x", "better", 0, [], [])) == "–"  # no results: one dash
    columns = ("last_kept_a", "with_dev_curve_a", "last_kept_b", "with_dev_curve_b")
    assert [row[k] for k in columns] == ["2", "3", "0", "2"]
    # at a glance: a comparison with a side still rising in most of its runs (2 of 3), of the measured ones
    flat = claims.judge(claims.Comparison("b > b", "better", 0, plateau[:2], [run(1), run(0)]))
    assert ledger.at_a_glance([{"verdict": c.verdict, "comparisons": [c, flat]}]).endswith(
        "Of the 2 judged comparisons (every metric), those with a side whose runs mostly kept their last dev epoch "
        "(still rising when training stopped: `last kept`): 1.")


def test_the_ledger_gives_each_sides_last_epoch_dev_rise_and_what_one_more_epoch_would_reverse():
    """`last rise`: the mean over a side's runs of the dev score's last-epoch change, in the compared metric's units
    (x factor); a metric without a dev curve (NIST: the curve is BLEU's) has none. At a glance: the `>` comparisons
    whose sides' rises differ against d by more than |d|."""
    def run(value, curve, seed, metric="test.BLEU"):
        history = [{"step": e, "epoch": e, "dev_BLEU": v} for e, v in enumerate(curve)]
        return cells.Run(value, (seed, None), {"config": {"task": {"name": "e2e"}}, "history": history},
                         metric, 100.0)
    rising = [run(48.0, [0.40, 0.50], 0), run(49.0, [0.45, 0.47], 1)]  # +10 and +2: +6.00
    flat = [run(50.0, [0.50, 0.50], 0), run(50.0, [0.49, 0.50], 1)]    # 0 and +1: +0.50
    assert ledger.last_rise(rising) == pytest.approx(6.0) and ledger.last_rise(flat) == pytest.approx(0.5)
    assert ledger.last_rise([run(8.0, [0.4, 0.5], 0, metric="test.NIST")]) is None
    assert ledger.last_rise([run(8.0, [0.4], 0)]) is None  # one epoch: no rise
    turns = claims.judge(claims.Comparison("a > b", "better", 0, rising, flat))  # d = -1.5, A gains 5.5 more
    mirror = claims.judge(claims.Comparison("b > a", "better", 0, flat, rising))  # d = +1.5, B gains 5.5 more
    holds = claims.judge(claims.Comparison("b > b", "better", 0, flat, [run(40.0, [0.4, 0.4], s) for s in (0, 1)]))
    assert [ledger.reversed_by_one_epoch(c) for c in (turns, mirror, holds)] == [True, True, False]
    assert ledger._last_rise_text(turns) == "+6.00 · +0.50"
    md, csv_text = ledger.render_ledger([{"id": "c", "text": "t", "file": "f.yaml", "verdict": turns.verdict,
                                   "counted": [turns.verdict], "comparisons": [turns]}], "default")
    assert md.count("| +6.00 · +0.50 |") == 1
    row = next(csv.DictReader(io.StringIO(csv_text)))
    assert (float(row["last_rise_a"]), float(row["last_rise_b"])) == pytest.approx((6.0, 0.5))
    assert ("Of the 3 judged `>` comparisons with a dev curve in their metric on both sides, those that one more "
            "epoch at each side's last-epoch dev rise would reverse (the sides' `last rise` differ against d by more "
            "than |d|; a heuristic): 2 (0 of them decided).") in ledger.at_a_glance(
        [{"verdict": "x", "comparisons": [turns, mirror, holds]}])
    # decided as the claim counts it: a failure at 95% that is not family-wise is not a decision
    for fails_family_wise, decided in ((False, "0 of them decided"), (None, "1 of them decided: a > b"),
                                       (True, "1 of them decided: a > b")):
        failing = dataclasses.replace(turns, verdict="fails", fails_family_wise=fails_family_wise)
        assert f"reverse (the sides' `last rise` differ against d by more than |d|; a heuristic): 2 ({decided})." \
               in ledger.at_a_glance([{"verdict": "x", "comparisons": [failing, mirror, holds]}])
    assert ledger.reversed_by_one_epoch(claims.Comparison("a ≈ b", "same", 1, turns.a, turns.b, diff=-1.5)) is None


def test_claims_report_lists_each_claim(demo):
    built, res = build(*demo)
    md, csv_text = ledger.render_ledger(list(res.values()), "default")
    # one comparison: its d and 95% CI in the summary (4 runs a side, no plan)
    assert "| clear | **holds** | +10.00 [+10.00, +10.00] | 1 holds | 4 | scale default, tiny_llama on e2e |" in md
    assert "| missing | **no results** | – | 1 no results | – | scale default, tiny_llama on e2e |" in md
    assert "| A @ x > B @ x | 4 | 4 | yes | +10.00 | [+" in md
    assert len(csv_text.strip().splitlines()) == 1 + 9  # header + one line per comparison
    glance = md.split("**At a glance**:\n\n")[1].split("\n\n")[0].splitlines()  # one line per count
    assert glance == ["- 4 of 8 claims decided (2 holds, 2 fails); 4 not decided (2 inconclusive, 1 too few runs, 1 no "
                      "results).", "- Fewest runs on a side that trains, over the measured comparisons: 1."]
    # the median CI half-width counts comparisons in percentage points (x100) only: BLEU's, not NIST's
    bleu = [cells.Run(v, (None, s, None), {}, "test.BLEU", 100) for s, v in enumerate([50.0, 52.0, 54.0])]
    nist = [cells.Run(v, (None, s, None), {}, "test.NIST", 1) for s, v in enumerate([7.0, 7.5, 8.0])]
    compared = [claims.judge(claims.Comparison("a > b", "better", 0, a, [cells.Run(r.value - 1, r.key, {}, r.metric,
                                                                                   r.factor) for r in a]))
                for a in (bleu, nist)]
    glance = ledger.at_a_glance([{"verdict": "holds", "comparisons": compared}])
    assert glance.endswith("Median 95% CI half-width of the 1 judged comparisons (2 or more runs on each side that "
                           "trains) in percentage "
                           "points (BLEU, METEOR, ROUGE, accuracy; repeats counted once): 0.00.")
    # the same runs compared again (a pool of sizes with one size measured) count once; other runs count
    wider = claims.judge(claims.Comparison("a > c", "better", 0, bleu, [cells.Run(r.value - 5 * r.key[1], r.key, {},
                                                                                r.metric, r.factor) for r in bleu]))
    glance = ledger.at_a_glance([{"verdict": "holds", "comparisons": [*compared, compared[0]]},
                                 {"verdict": "holds", "comparisons": [wider]}])
    assert "Median 95% CI half-width of the 2 judged comparisons" in glance
    # CIs over runs alone (metrics without item statistics) are narrower: the median of those over items too is named
    over_items = dataclasses.replace(wider, ci_over="items x seeds")
    glance = ledger.at_a_glance([{"verdict": "holds", "comparisons": [compared[0], over_items]}])
    half = (over_items.ci[1] - over_items.ci[0]) / 2
    assert glance.endswith(f": {half / 2:.2f}; of the 1 whose CI counts the test items' noise too: {half:.2f} (the "
                           "other 1, over runs alone, are narrower than a CI over items would be).")


def test_both_paper_versions_and_empty_cells(tmp_path):
    specs, claim_specs = spec.load_specs(repo_root() / "experiments")
    built = cells.build_tables(specs, tmp_path, "default")  # no records at all
    md = render.render_markdown(built, "default")
    assert "| FT | Li & Liang, prefix-tuning, arXiv 2101.00190v1, Table 1 | 68.2 | 8.62 |" in md
    assert "| FT | Li & Liang, prefix-tuning, ACL 2021, Table 1 | 68.8 | 8.71 |" in md
    assert "| FT | ours | – | – | – | – | – | – |" in md
    assert {r["verdict"] for r in claims.evaluate(claim_specs, built)} == {"no results"}


def test_latex_is_well_formed(demo):
    built, _ = build(*demo)
    tex = render.render_latex(built, "default")
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == len(built)
    assert tex.count("\\toprule") == tex.count("\\midrule") == tex.count("\\bottomrule") == len(built)
    assert tex.count("{") - tex.count("\\{") == tex.count("}") - tex.count("\\}")
    for block in re.findall(r"\\begin\{tabular\}\{(\w+)\}(.*?)\\end\{tabular\}", tex, re.S):
        width, body = len(block[0]), block[1]
        rows = [line for line in body.splitlines() if line.endswith("\\\\")]
        assert rows and all(len(re.findall(r"(?<!\\)&", line)) == width - 1 for line in rows)
    assert "62.0 $\\pm$ 2.0 (n=3)" in tex and "FT & paper v1 & 68.2 & 8.62" in tex
    assert not re.search(r"(?<!\\)%", tex.split("\n", 1)[1])  # only the first line is a comment


def test_cli_writes_a_new_version_only_when_something_changed(tmp_path, capsys):
    write_records(tmp_path, "e2e_main", [record("e2e_main", "full", {"BLEU": 0.6, "NIST": 8.0})])
    assert report_main(["--results-dir", str(tmp_path)]) == 0
    assert report_main(["--results-dir", str(tmp_path)]) == 0  # nothing changed: no new version
    assert len(list((tmp_path / "reports" / "default").iterdir())) == 1
    write_records(tmp_path, "e2e_main", [record("e2e_main", "full", {"BLEU": 0.62, "NIST": 8.1}, seed=1)])
    assert report_main(["--results-dir", str(tmp_path)]) == 0
    versions = sorted((tmp_path / "reports" / "default").iterdir())
    assert len(versions) == 2
    assert re.fullmatch(r"\d{8}-\d{6}_\w+(-dirty)?(-\d+)?", versions[0].name)
    for folder in versions:
        assert sorted(p.name for p in folder.iterdir()) == ["claims.csv", "claims.md", "costs.md", "tables.md",
                                                            "tables.tex"]
    printed = capsys.readouterr().out.split()
    assert len(printed) == 15 and all(p.startswith(str(tmp_path / "reports" / "default")) for p in printed)
    assert len(set(printed[:5]) & set(printed[5:10])) == 5  # the unchanged rerun names the first version's files


def test_cli_malformed_record_exits_2(tmp_path, capsys):
    folder = tmp_path / "runs" / "e2e_main" / "default"
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text("{not json")
    assert report_main(["--results-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: malformed record ") and "broken.json" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_malformed_yaml_is_an_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("table: [unclosed\n")
    with pytest.raises(spec.SpecError, match="bad.yaml"):
        spec.load_specs(tmp_path)
    (tmp_path / "bad.yaml").write_text("metrics: [x]\nclaims:\n  - {id: c, text: t, check: {table: nowhere, "
                                       "pairs: [[A, B]]}}\n")
    with pytest.raises(spec.SpecError, match="must name a reference table"):
        claims.evaluate(spec.load_specs(tmp_path)[1], {})
    (tmp_path / "bad.yaml").write_text("table: good\nmetrics: [x]\n")  # one file per experiment, named as it
    with pytest.raises(spec.SpecError, match="differs from the file's name"):
        spec.load_specs(tmp_path)


def test_a_claim_checks_its_own_files_table_and_a_side_that_trains_nothing_is_one_run(tmp_path):
    """A discrete prompt has no trainable parameters: its one run is its whole side (no seed would change it), so
    EMB (3 seeds) > DISCRETE is decided; a trained side with one run still decides nothing."""
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "prompts.yaml").write_text("""
columns: [x]
ours:
  metric: test.score
  rows: [{method: EMB, where: {config.method.name: emb}}, {method: DISCRETE, where: {config.method.name: discrete}},
         {method: ONE, where: {config.method.name: one}}]
claims:
  - {id: emb_beats_discrete, text: t, check: {kind: better, columns: [x], pairs: [[EMB, DISCRETE]]}}
  - {id: emb_beats_one, text: t, check: {kind: better, columns: [x], pairs: [[EMB, ONE]]}}
""")
    write_records(tmp_path, "prompts", [
        *(record("prompts", "emb", {"score": v}, seed=s) for s, v in enumerate([10.0, 11.0, 12.0])),
        record("prompts", "discrete", {"score": 3.0}, trainable=0, pct=0.0),
        record("prompts", "one", {"score": 3.0}, trainable=10, pct=0.1)])
    specs, claim_specs = spec.load_specs(tmp_path / "exp")
    res = {c["id"]: c for c in claims.evaluate(claim_specs, cells.build_tables(specs, tmp_path, "default"))}
    decided = res["emb_beats_discrete"]["comparisons"][0]
    assert (decided.verdict, decided.ci_over, len(decided.a), len(decided.b)) == ("holds", "seeds", 3, 1)
    # the discrete side adds no spread: the CI is the EMB seeds' t interval (sd 1, 2 degrees of freedom) about 11 - 3
    half = 4.302653 / 3 ** 0.5
    assert decided.ci == pytest.approx((8.0 - half, 8.0 + half), abs=1e-5)
    assert res["emb_beats_one"]["verdict"] == "too few runs"


def test_smoke_results_live_in_results_smoke(monkeypatch):
    monkeypatch.delenv("PEFT_REPRO_RESULTS", raising=False)
    assert results_dir("smoke") == repo_root() / "results" / "smoke"
    assert results_dir("default") == repo_root() / "results"


def test_lora_rank_table_cells_are_the_mean_and_sd_of_their_records(tmp_path):
    """experiments/lora_rank_sweep.yaml over records made here: each cell is the mean ± sample sd (n) of the runs of its
    task, targets and rank, computed by hand; other cells stay empty; the caption names the model and data sizes."""
    def lora(task, targets, r, value, seed=0, status="ok"):
        metric = "accuracy" if task == "mnli" else "logical_form_accuracy"
        rec = record("lora_rank_sweep", "lora", {metric: value}, seed=seed, trainable=64 * r * len(targets),
                     pct=0.5, status=status)
        rec["record"] = f"{task}-{'-'.join(targets)}-{r}-{seed}"
        rec["config"].update(model={"name": "smollm2_135m"}, method={"name": "lora", "targets": targets, "r": r},
                             task={"name": task, "max_eval_examples": 400, "max_train_examples": 480})
        rec["train_examples"] = 480
        return rec

    write_records(tmp_path, "lora_rank_sweep", [
        lora("mnli", ["q"], 1, 0.30), lora("mnli", ["q"], 1, 0.35, seed=1), lora("mnli", ["q"], 1, 0.37, seed=2),
        lora("mnli", ["q"], 1, 0.99, seed=3, status="failed"),  # not ok: left out
        lora("mnli", ["q"], 64, 0.40),
        lora("mnli", ["q", "v"], 1, 0.90),                      # other targets: another row
        lora("wikisql", ["q"], 1, 0.10),                        # other task: another row
    ])
    specs, _ = spec.load_specs(repo_root() / "experiments")
    built = cells.build_tables({"lora_rank_sweep": specs["lora_rank_sweep"]}, tmp_path, "default")
    md = render.render_markdown(built, "default").splitlines()
    # 30, 35, 37: mean 34.0, sd sqrt((16 + 1 + 9) / 2) = 3.6
    assert "| Wq (mnli) | ours | 34.0 ± 3.6 (n=3) | – | – | – | 40.0 (n=1) | 64–4,096 |" in md, md
    assert "| Wq,Wv (mnli) | ours | 90.0 (n=1) | – | – | – | – | 128 (0.5%) |" in md
    assert "| Wq (wikisql) | ours | 10.0 (n=1) | – | – | – | – | 64 (0.5%) |" in md
    assert "| Wq,Wk,Wv,Wo (mnli) | ours | – | – | – | – | – | – |" in md
    assert any(line.startswith("- Wq (mnli): smollm2_135m; mnli: 480 train / 400 test examples; seeds 0, 1, 2;")
               for line in md), md


def test_committed_records_render():
    """Every table renders from the committed records (what they hold changes with each sweep: no number here)."""
    specs, _ = spec.load_specs(repo_root() / "experiments")
    built = cells.build_tables(specs, repo_root() / "results", "default")
    md = render.render_markdown(built, "default")
    assert all(spec["title"] in md for spec in specs.values())


def test_accuracy_tables_get_zero_shot_and_majority_rows_and_marks():
    spec = {"table": "t", "columns": ["mnli"], "file": "t.yaml",
            "ours": {"experiment": "x", "factor": 100, "metric": "test.accuracy", "rows": [
                {"method": "LoRA", "where": {"config.method.name": "lora"}},
                {"method": "FT", "where": {"config.method.name": "full"}}]}}
    def mnli(method, acc, seed=0, **test):
        rec = record("x", method, {"accuracy": acc, **test}, seed=seed, trainable=1000 * (method != "zero_shot"))
        rec["config"]["task"] = {"name": "mnli", "max_eval_examples": 400, "max_train_examples": 480}
        return rec
    zero_shot = mnli("zero_shot", 0.33, majority_rate=0.354)
    zero_shot["config"]["task"].pop("max_train_examples")  # training-only settings do not separate test settings
    other = mnli("zero_shot", 0.50, majority_rate=0.354)
    other["config"]["task"]["max_eval_examples"] = 100  # other test items: not this table's zero-shot
    table = cells.build_table(spec, [mnli("lora", 0.35), mnli("lora", 0.37, seed=1), mnli("lora", 0.36, seed=2),
                                      mnli("full", 0.60), mnli("full", 0.62, seed=1)], [other, zero_shot])
    lines = render.matrix(table)
    assert lines[1][:3] == ["Zero-shot", "ours", "33.0"] and lines[2][:3] == ["Majority class", "ours", "35.4"]
    assert lines[3][2] == "36.0 ± 1.0 (n=3)‡"  # 36 +- 2.5 (t, 2 df) reaches the majority rate 35.4, not the zero-shot 33
    assert lines[4][2] == "61.0 ± 1.4 (n=2)"


def test_rows_of_several_metrics_in_one_column_get_a_zero_shot_row_each():
    """Low-data XSum's rows show ROUGE-1 and ROUGE-2 in the same size columns: one zero-shot row per metric (the
    claim's ROUGE-2 among them), not the first row's metric alone."""
    spec = {"table": "t", "columns": [50], "file": "t.yaml",
            "ours": {"experiment": "x", "factor": 100, "column_key": "config.task.low_data.size", "rows": [
                {"method": "FT R-1", "metric": "test.rouge1", "where": {"config.method.name": "full"}},
                {"method": "FT R-2", "metric": "test.rouge2", "where": {"config.method.name": "full"}}]}}

    def xsum(method, r1, r2):
        rec = record("x", method, {"rouge1": r1, "rouge2": r2}, trainable=1000 * (method != "zero_shot"))
        rec["config"]["task"] = {"name": "xsum", "max_eval_examples": 60, "low_data": {"size": 50}}
        return rec
    zero_shot = xsum("zero_shot", 0.11, 0.02)
    zero_shot["config"]["task"].pop("low_data")
    lines = render.matrix(cells.build_table(spec, [xsum("full", 0.26, 0.06)], [zero_shot]))
    assert [line[:3] for line in lines[1:5]] == [["Zero-shot (rouge1)", "ours", "11.0"],
                                                 ["Zero-shot (rouge2)", "ours", "2.0"],
                                                 ["FT R-1", "ours", "26.0 (n=1)"], ["FT R-2", "ours", "6.0 (n=1)"]]


def test_the_majority_mark_uses_the_cells_own_items_when_zero_shot_kept_none():
    """One MNLI run of 37% on 400 pairs (its items kept) against a majority rate of 35.4%: its item CI (+-4.7)
    reaches the rate (‡), though the zero-shot record has no items to compare with (so no †, and no CI for it)."""
    correct = [1.0] * 148 + [0.0] * 252
    rec = {"config": {"task": {"name": "mnli"}}, "test": {"accuracy": 0.37},
           "test_items": {"metric": "accuracy", "ids": [f"pair{i}" for i in range(400)],
                          "stats": [[c, 1.0] for c in correct]}}
    cell = cells.Cell([cells.Run(37.0, (None, 0, None), rec, "test.accuracy", 100)], 1, "test.accuracy")
    zero_shot = cells.Run(33.0, (None, None), {"config": {"task": {"name": "mnli"}}}, "test.accuracy", 100)
    assert cells.mark(cell, zero_shot, 35.4) == cells.NOT_ABOVE_MAJORITY
    assert cells.mark(cell, zero_shot, 30.0) == ""


def test_cli_on_a_folder_without_records_is_a_one_line_error(tmp_path, capsys):
    assert report_main(["--results-dir", str(tmp_path / "typo"), "--scale", "default"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run records under") and err.count("\n") == 1
    assert not (tmp_path / "typo").exists()  # nothing written


def test_a_rerun_of_the_same_settings_counts_once_the_newer_record():
    from peft_repro.results import latest_per_setting

    old = {**record("demo", "full", {"BLEU": 0.5}), "finished": "2026-11-26 10:00:00"}
    new = {**record("demo", "full", {"BLEU": 0.6}), "finished": "2026-11-28 10:00:00", "record": "demo-full-new"}
    other_seed = {**record("demo", "full", {"BLEU": 0.7}, seed=1), "finished": "2026-11-20 10:00:00"}
    assert latest_per_setting([old, new, other_seed]) == [new, other_seed]


RANKS = """
table: ranks
title: "Ranks"
model: gpt2-medium
columns: [4, 64]
ours:
  experiment: ranks
  column_key: config.method.r
  metric: test.score
  rows: [{method: LoRA, where: {config.method.name: lora}}]
claims:
  - id: small_rank
    text: "r=4 beats r=64"
    check: {kind: better, table: ranks, pairs: [[{row: LoRA, col: 4}, {row: LoRA, col: 64}]]}
  - id: pooled_in_other_orders
    text: "LoRA over both ranks within 1 of itself, the columns listed in two orders"
    check: {kind: same, margin: 1, table: ranks, pairs: [[{row: LoRA, col: [4, 64]}, {row: LoRA, col: ["64", 4]}]]}
"""


def test_sides_of_different_columns_pair_by_seed(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "ranks.yaml").write_text(RANKS)

    def ranked(r, seed, score):
        rec = record("ranks", "lora", {"score": score}, seed=seed)
        rec["config"]["method"]["r"] = r
        return {**rec, "record": f"ranks-{r}-{seed}"}

    # r=64 trails r=4 by exactly 1 in every seed, while the seeds spread by 10: only a paired CI sees the gap
    write_records(tmp_path / "results", "ranks", [ranked(4, s, v) for s, v in enumerate([10.0, 20.0, 30.0])] +
                  [ranked(64, s, v) for s, v in enumerate([9.0, 19.0])])  # seed 2 of r=64 has not run
    _, res = build(tmp_path / "experiments", tmp_path / "results")
    c = res["small_rank"]["comparisons"][0]
    assert c.paired and c.unpaired_left_out == 1 and (len(c.a), len(c.b)) == (2, 2)
    assert c.diff == pytest.approx(1.0) and c.ci == pytest.approx((1.0, 1.0)) and c.verdict == "holds"
    # the same columns in another order (and spelled as a string) pair column by column: every difference is 0
    c = res["pooled_in_other_orders"]["comparisons"][0]
    assert c.paired and c.diff == 0 and c.ci == pytest.approx((0.0, 0.0))
    assert c.label == "LoRA @ 4+64 ≈ LoRA @ 64+4"
    # a pool of which one column has no runs yet says so: it is that column's comparison so far
    write_records(tmp_path / "fewer", "ranks", [ranked(4, s, v) for s, v in enumerate([10.0, 20.0, 30.0])])
    _, res = build(tmp_path / "experiments", tmp_path / "fewer")
    assert res["pooled_in_other_orders"]["comparisons"][0].label == "LoRA @ 4+64 ≈ LoRA @ 64+4 (so far 4 only)"


def test_scale_notes_render_at_their_scale_only(tmp_path):
    (tmp_path / "experiments").mkdir()
    noted = RANKS.replace("claims:", "scale_notes: {default: \"r=64 left to scale=gpu\"}\nclaims:", 1).replace(
        '    text: "r=4 beats r=64"', '    text: "r=4 beats r=64"\n    scale_notes: {default: "see the table"}')
    (tmp_path / "experiments" / "ranks.yaml").write_text(noted)
    built, res = build(tmp_path / "experiments", tmp_path / "results")
    assert "At scale `default`: r=64 left to scale=gpu" in render.render_markdown(built, "default")
    assert "At scale `smoke`" not in render.render_markdown(built, "smoke")
    assert "At scale `default`: see the table" in ledger.render_ledger(list(res.values()), "default")[0]
    (tmp_path / "experiments" / "ranks.yaml").write_text(RANKS.replace("claims:", "scale_notes: [gpu]\nclaims:", 1))
    with pytest.raises(spec.SpecError, match="scale_notes"):
        spec.load_specs(tmp_path / "experiments")


def test_runs_ci_is_a_t_interval_that_covers_95_percent_at_three_seeds():
    """Three paired seeds: the CI is the paired t interval (2 degrees of freedom), not the bootstrap's range of the
    seeds; over normal noise it covers the true difference about 95% of the time (the percentile bootstrap: ~76%)."""
    assert stats.t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert stats.t_quantile(0.975, 9) == pytest.approx(2.262157, abs=1e-5)
    df, q = 3.5, stats.t_quantile(0.995, 3.5)  # fractional df (Welch): the density integrates to 0.995 up to q
    x = np.linspace(0, q, 200_001)
    density = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) * (1 + x * x / df) ** -(
        (df + 1) / 2)
    assert 0.5 + np.trapezoid(density, x) == pytest.approx(0.995, abs=1e-7)
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        a = [cells.Run(v, (0, s, None), {}) for s, v in enumerate(rng.normal(1.0, 1.0, 3))]
        b = [cells.Run(v, (0, s, None), {}) for s, v in enumerate(rng.normal(0.0, 1.0, 3))]
        lo, hi = claims.judge(claims.Comparison("a > b", "better", 0, a, b)).ci
        covered += lo <= 1.0 <= hi
    assert 0.93 < covered / 2000 < 0.97


def test_item_noise_never_narrows_the_runs_t_interval_and_more_items_never_widen_it():
    """Welch-Satterthwaite degrees of freedom, floored at the runs' own t interval: without the floor, adding the
    items' term would lower t faster than it grows the SE (a review measured 92% coverage at 3 seeds); t at the runs'
    degrees of freedom on the whole SE would blow up item noise when the runs agree (t(1) = 12.7)."""
    small = stats.DiffCI(0.0, (0.0, 0.0), se_items=0.5, se_runs=1.0, df_runs=2)
    assert small.predicted_half_width() == pytest.approx(small.half_width("runs")) == pytest.approx(4.302653, abs=1e-5)
    large = stats.DiffCI(0.0, (0.0, 0.0), se_items=3.0, se_runs=1.0, df_runs=2)
    df = (9 + 1) ** 2 / (1 / 2)
    assert large.predicted_half_width() == pytest.approx(stats.t_quantile(0.975, df) * math.hypot(3, 1))
    assert large.predicted_half_width() > large.half_width("runs")
    agree = stats.DiffCI(0.0, (0.0, 0.0), se_items=1.0, se_runs=0.0, df_runs=1)
    assert agree.predicted_half_width() == pytest.approx(1.959964, abs=1e-5)  # runs that agree add nothing
    for ci in (small, large):
        widths = [ci.predicted_half_width(items_factor=f) for f in (1, 1.5, 2, 4, 10, 100)]
        assert widths == sorted(widths, reverse=True)
        widths = [ci.predicted_half_width(runs_factor=f) for f in (1, 4 / 3, 5 / 3, 2, 4)]
        assert widths == sorted(widths, reverse=True)


def test_ci_over_says_when_the_runs_floor_is_the_ci():
    """Small item noise beside the runs' spread at 2 degrees of freedom: the runs' own t interval is wider than the
    Satterthwaite one, and the label says the CI is that floor; large item noise: the combined interval, no label."""
    floored = stats.DiffCI(0.0, (-stats.t_quantile(0.975, 2), stats.t_quantile(0.975, 2)), 0.5, 1.0, 2)
    assert floored.floored()
    half = stats.half_width(3.0, 1.0, 2)
    assert half > stats.t_quantile(0.975, 2) and not stats.DiffCI(0.0, (-half, half), 3.0, 1.0, 2).floored()
    a = [cells.Run(v, (0, s, None), {}) for s, v in enumerate([2.0, 2.2, 1.8])]
    b = [cells.Run(0.0, (0, s, None), {}) for s in range(3)]
    assert claims.judge(claims.Comparison("a > b", "better", 0, a, b)).ci_over == "seeds"  # no items: no floor


def test_needed_for_same_counts_runs_that_would_show_a_difference_outside_the_margin():
    a = [cells.Run(v, (0, s, None), {}) for s, v in enumerate([3.0, 1.0, 2.5])]
    b = [cells.Run(v, (0, s, None), {}) for s, v in enumerate([0.0, 0.5, 0.0])]
    c = claims.judge(claims.Comparison("a ≈ b", "same", 1.0, a, b))  # d = 2 against a margin of 1
    assert c.verdict == "inconclusive" and c.needed.endswith(" runs a side")


def test_a_claim_below_its_planned_runs_is_an_interim_look(tmp_path):
    """`planned_runs: {default: 5}`: a claim measured with 3 runs a side, or with a comparison not yet measured, is
    an interim look: the ledger marks its verdict and shows 3 (5), and the at-a-glance line counts the claims at their
    plan and which decided ones are final; a malformed plan is a spec error."""
    a = [cells.Run(v, (0, s, None), {}) for s, v in enumerate([2.0, 2.2, 1.8])]
    b = [cells.Run(0.0, (0, s, None), {}) for s in range(3)]
    compared = claims.judge(claims.Comparison("a > b", "better", 0, a, b))
    queued = claims.Comparison("c > b", "better", 0, [], [])

    def ledger_md(plan, comps=(compared,)):
        res = {"id": "x", "text": "t", "file": "x.yaml", "comparisons": list(comps),
               "counted": [c.verdict for c in comps], "verdict": compared.verdict, "planned_runs": plan}
        return ledger.render_ledger([res], "default")[0]

    md = ledger_md({"default": 5})
    assert "| x | **holds (interim)** | +2.00 [+1.50, +2.50] | 1 holds | 3 (5) |" in md  # 2.00 ± 4.30 x 0.2 / sqrt(3)
    assert "## x: holds (interim)" in md
    assert "at their plan (every comparison measured, with its planned runs a side): 0 of 1 (the other" in md
    assert "1 of 1 claims decided (1 holds), 0 of them at their plan and 1 in interim looks." in md
    at_plan = ledger_md({"default": 3})
    assert "1 of 1 claims decided (1 holds), all at their plan." in at_plan
    assert "| x | **holds** |" in at_plan and "planned runs a side): 1 of 1." in at_plan
    assert "| x | **holds (interim)** | – | 1 holds, 1 no results | 3 (3) |" in ledger_md({"default": 3},
                                                                                         (compared, queued))
    # without a plan at the scale, a comparison not yet measured (no results, too few runs) makes the verdict interim
    lone = claims.judge(claims.Comparison("d > b", "better", 0, a[:1], b))
    assert lone.verdict == "too few runs" and "| x | **holds (interim)** |" in ledger_md(None, (compared, lone))
    assert "| x | **holds** |" in ledger_md(None)
    assert "at their plan" not in ledger_md({"gpu": 5}) and "(interim)" not in ledger_md({"gpu": 5})  # no plan here
    (tmp_path / "grid.yaml").write_text(GRID.replace("- {id: clear,", "- {id: clear, planned_runs: {default: 1},"))
    with pytest.raises(spec.SpecError, match="planned_runs"):
        spec.load_specs(tmp_path)


def test_what_a_scale_leaves_to_another_is_not_compared_there(tmp_path):
    """`left_out: {default: {rows, columns}}`: at that scale, comparisons with a side left out are not made and pooled
    sides lose the left-out columns (the pooled label says which sizes it averages); at other scales all are made."""
    (tmp_path / "grid.yaml").write_text(GRID)
    table = cells.build_tables({"grid": spec.load_specs(tmp_path)[0]["grid"]}, tmp_path, "default")["grid"]
    check = {"kind": "better", "table": "grid", "columns": ["x"], "pairs": [["A", "B"], ["C", "D"]]}
    assert [c.label for c in claims.comparisons(check, {"grid": table})] == ["A @ x > B @ x", "C @ x > D @ x"]
    assert [c.label for c in claims.comparisons(check, {"grid": table}, {"rows": ["D"]})] == ["A @ x > B @ x"]
    assert claims.comparisons(check, {"grid": table}, {"columns": ["x"]}) == []
    pooled = {"kind": "better", "table": "grid", "pairs": [[{"row": ["A", "C"], "col": "x"}, {"row": "B", "col": "x"}]]}
    assert [c.label for c in claims.comparisons(pooled, {"grid": table}, {"rows": ["C"]})] == ["A @ x > B @ x"]
    claim = {"id": "c", "text": "A > B", "check": check, "left_out": {"default": {"rows": ["C"]}}}
    assert len(claims.evaluate([claim], {"grid": table}, "default")[0]["comparisons"]) == 1
    assert len(claims.evaluate([claim], {"grid": table}, "gpu")[0]["comparisons"]) == 2
    with pytest.raises(spec.SpecError, match="does not compare"):  # a typo would leave out nothing
        claims.evaluate([{**claim, "left_out": {"default": {"rows": ["c"]}}}], {"grid": table}, "default")
    # sides that pair column by column in order lose their column pairs together: no new pairing appears
    table.columns = ["1", "2", "8", "64"]
    for row in table.rows:
        row.cells.update({c: row.cells["x"] for c in table.columns})
    ordered = {"kind": "better", "table": "grid",
               "pairs": [[{"row": "A", "col": [1, 2]}, {"row": "B", "col": [8, 64]}]]}
    assert [c.label for c in claims.comparisons(ordered, {"grid": table}, {"columns": [2]})] == ["A @ 1 > B @ 8"]
    assert claims.comparisons(ordered, {"grid": table}, {"columns": [2, 8]}) == []
    (tmp_path / "grid.yaml").write_text(GRID.replace("- {id: clear,", "- {id: clear, left_out: {default: [C]},"))
    with pytest.raises(spec.SpecError, match="left_out"):
        spec.load_specs(tmp_path)


def test_needed_sizes_decide_at_the_measured_variance_and_exceed_what_was_measured():
    """`needed` extrapolates the CI's own formula: the size it names decides, one less does not."""
    a = [cells.Run(v, (0, s, None), {}) for s, v in enumerate([1.0, 2.5, 1.6])]
    b = [cells.Run(v, (0, s, None), {}) for s, v in enumerate([0.0, 2.4, 0.3])]
    c = claims.judge(claims.Comparison("a > b", "better", 0, a, b))
    assert c.verdict == "inconclusive" and c.needed.startswith("~") and c.needed.endswith(" runs a side")
    n = int(c.needed[1:].split()[0])
    assert n > 3
    assert c.stats.predicted_half_width(runs_factor=n / 3) < c.diff <= c.stats.predicted_half_width(
        runs_factor=(n - 1) / 3)


def test_needed_names_no_more_test_items_than_the_split_holds():
    """Where the test split's size is known (`test_pools`: the most items an uncapped record of the task scored),
    `needed` stays within it: runs on the whole split (named beside runs alone when they save a fifth), or "not on
    this test split" when its items alone are too noisy even without SE_items' seed x item part ("perhaps not" when
    only without it)."""
    z = 1.959964
    c = claims.Comparison("a ≈ b", "same", 1.0, [], [])
    c.diff, c.sizes = 1.32, (5, 200)  # past the margin by 0.32: failing needs a half-width under 0.32
    c.stats = stats.DiffCI(1.32, (-2.0, 4.7), se_items=0.83 / z, se_runs=1.5, df_runs=4)
    assert claims.needed(c) == "more runs and more test items together"  # the split's size unknown
    c.items_available = 630  # at 630 items: ±0.47, and at least 0.47 / sqrt(2) = 0.33 > 0.32
    assert claims.needed(c) == ("not on this test split: all 630 items of its test split give ±0.47 alone (at "
                                "least ±0.33 with any runs), and 0.32 would decide")
    c.diff = 1.4  # 0.40 to decide: between 0.33 and 0.47
    assert claims.needed(c).startswith(
        "perhaps not on this test split: all 630 items of its test split give ±0.47 alone")
    c.kind, c.diff = "better", 0.6  # 0.47 < 0.6: enough runs on all 630 items decide it
    n = int(claims.needed(c)[1:].split()[0])
    assert claims.needed(c) == f"~{n} runs a side on all 630 test items"
    assert c.stats.predicted_half_width(runs_factor=n / 5, items_factor=630 / 200) < 0.6 <= \
        c.stats.predicted_half_width(runs_factor=(n - 1) / 5, items_factor=630 / 200)
    c.items_available = 200  # every item already: nothing more to draw
    assert claims.needed(c).startswith(
        "perhaps not on this test split: all 200 items of its test split give ±0.83 alone")
    c.items_available, c.stats.se_runs = 630, 10.0  # the runs so noisy that 1000 times as many do not decide
    assert claims.needed(c) == "over 5,000 runs a side on all 630 test items"
    # items alone decide within the split: named, and capped at it
    c.stats, c.diff = stats.DiffCI(1.0, (-0.1, 2.1), se_items=0.55, se_runs=0.05, df_runs=4), 1.0
    n = int(claims.needed(c).split("~")[-1].split()[0].replace(",", ""))
    assert claims.needed(c).endswith(f"~{n:,} test items") and 200 < n <= 630
    c.items_available = n - 1
    assert claims.needed(c).endswith(f" runs a side on all {n - 1:,} test items")  # the split, and a few more runs
    pools = {"t": cells.Table({"table": "t"}, [], [], records=[
        {"config": {"task": {"name": "e2e", "max_eval_examples": None}}, "test_items": {"ids": ["x"] * 630}},
        {"config": {"task": {"name": "e2e", "max_eval_examples": None}}, "test_items": {"ids": ["x"] * 600}},
        {"config": {"task": {"name": "e2e", "max_eval_examples": None}}, "test_items": None},
        {"config": {"task": {"name": "e2e", "max_eval_examples": 200}}, "test_items": {"ids": ["x"] * 200}},
        {"config": {"task": {"name": "xsum", "max_eval_examples": 200}}, "test_items": {"ids": ["x"] * 200}}])}
    assert claims.test_pools(pools) == {"e2e": 630}  # the most; capped records say nothing of their split's size
    # a record naming its split's size names it for the task's older records too (the smallest named: offline)
    pools["t"].records += [{"config": {"task": {"name": "xsum", "max_eval_examples": 60}},
                            "test_items": {"ids": ["x"] * 60, "split_size": size}} for size in (1000, 11334)]
    assert claims.test_pools(pools) == {"e2e": 630, "xsum": 1000}
    # records since session 22 name their split's size: a comparison takes the smallest its runs name
    runs = [cells.Run(1.0, (0,), {"test_items": {"ids": ["x"], "split_size": size}}) for size in (1000, 11334)]
    assert claims.split_size(runs) == 1000 and claims.split_size([cells.Run(1.0, (0,), {})]) is None


def test_at_a_glance_names_the_claims_a_test_split_cannot_decide():
    def claim(name, *needs):
        comps = [claims.Comparison(f"{name} {i}", "better", 0, [], [], verdict="inconclusive", needed=n)
                 for i, n in enumerate(needs)]
        return {"id": name, "verdict": "inconclusive", "comparisons": comps}
    results = [claim("x", "~8 runs a side", "not on this test split: all 630 items of its test split give ±0.59 (...)"),
               claim("y", "perhaps not on this test split: all 630 items of its test split give ±0.49 (...)"),
               claim("z", "~6 runs a side")]
    assert ("- Inconclusive claims with a comparison no number of runs can decide on its test split (`needed`): x; "
            "perhaps: y.") in ledger.at_a_glance(results).splitlines()
    assert "test split" not in ledger.at_a_glance(results[2:])


def test_where_at_scale_filters_the_records_of_that_scale_only_and_keeps_the_rows_lr_choice(tmp_path):
    """e2e_main at the default scale shows only its runs tested on every MR (`where_at_scale`); its lr line still
    lists the grid points, made with the smaller test set."""
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "demo.yaml").write_text(DEMO.replace(
        "  experiment: demo\n", "  experiment: demo\n  where_at_scale: {default: {config.task.max_eval_examples: null}}\n"))
    search = {"grid": [1e-4, 1e-3], "seed": 0}

    def run(lr, seed, bleu, n_test, tested=True):
        rec = record("demo", "full", {"BLEU": bleu, "NIST": 8.0} if tested else None, seed=seed)
        rec["record"] += f"-{lr}-{n_test}"
        rec["config"] |= {"seed": seed, "trainer": {"lr": lr}, "lr_search": search if n_test else None}
        rec["config"]["task"]["max_eval_examples"] = n_test
        return rec | {"dev": {"BLEU": {1e-4: 0.3, 1e-3: 0.5}[lr]}}

    write_records(tmp_path / "results", "demo", [run(1e-4, 0, 0.3, 4, tested=False), run(1e-3, 0, 0.5, 4),
                                                 run(1e-3, 0, 0.52, None), run(1e-3, 1, 0.56, None)])
    specs, _ = spec.load_specs(tmp_path / "experiments")
    table = cells.build_tables(specs, tmp_path / "results", "default")["demo"]
    assert [r.value for r in table.row("FT").cells["BLEU"].runs] == pytest.approx([52.0, 56.0])
    # seeds 0 and 1 at the chosen rate: seed 0's two trainings (4 test items and all) count once
    noise = " (runner-up 20.0 below; dev sd over seeds at the chosen rate 0.0, 1 df)"
    assert table.row("FT").lr_choice == (
        "0.0001: 30.0, 0.001: 50.0 (chosen, at the grid's edge: a wider grid may do better)" + noise)
    assert spec.at_scale(specs["demo"], "smoke") is specs["demo"]  # other scales: every record, as before
    left_out = {**specs["demo"], "ours": {**specs["demo"]["ours"], "leave_out_at_scale": {"default": ["LoRA"]}}}
    assert [spec.row_label(r) for r in spec.at_scale(left_out, "default")["ours"]["rows"]] == ["FT", "Prefix"]
    assert spec.at_scale(left_out, "smoke")["ours"]["rows"] == specs["demo"]["ours"]["rows"]
    # a rate past the top that diverged was tried: the choice is inside the rates tried, no longer on an edge
    diverged = {k: v for k, v in run(1e-3, 0, 0.5, 4).items() if k != "dev"}
    diverged = diverged | {"record": "diverged-0.01", "status": "diverged", "test": None,
                           "config": diverged["config"] | {"trainer": {"lr": 1e-2}}}
    write_records(tmp_path / "results", "demo", [diverged])
    table = cells.build_tables(specs, tmp_path / "results", "default")["demo"]
    assert table.row("FT").lr_choice == "0.0001: 30.0, 0.001: 50.0 (chosen), 0.01: diverged" + noise
    # a diverged run with the settings of a finished one (another experiment's, pooled) takes no rate out of the choice
    twin = diverged | {"record": "diverged-0.001", "config": run(1e-3, 0, 0.5, 4)["config"]}
    write_records(tmp_path / "results", "demo", [run(1e-4, 1, 0.40, None), twin])  # 1e-4 seed 1: not chosen
    table = cells.build_tables(specs, tmp_path / "results", "default")["demo"]
    assert [r.value for r in table.row("FT").cells["BLEU"].runs] == pytest.approx([52.0, 56.0])


def test_lr_line_names_the_setting_of_each_search_in_a_row():
    """A row whose runs come from two searches (e2e_main_budget's FT at 3 and at 6 epochs) says which line is which;
    one search needs no name."""
    def point(lr, epochs, bleu):
        return {"status": "ok", "seed": 0, "dev": {"BLEU": bleu},
                "config": {"seed": 0, "task": {"name": "e2e"}, "method": {"name": "full"},
                           "trainer": {"lr": lr, "epochs": epochs}, "lr_search": {"grid": [1e-4, 1e-3], "seed": 0}}}
    three = [point(1e-4, 3, 0.3), point(1e-3, 3, 0.5)]
    six = [point(1e-4, 6, 0.6), point(1e-3, 6, 0.4)]
    edge = " (chosen, at the grid's edge: a wider grid may do better)"
    assert cells.lr_choice(three) == "0.0001: 30.0, 0.001: 50.0" + edge
    assert cells.lr_choice(three + six) == (
        f"trainer.epochs=3: 0.0001: 30.0, 0.001: 50.0{edge}; trainer.epochs=6: 0.0001: 60.0{edge}, 0.001: 40.0")
    # a search of one point is no line, and no reason to name the other
    assert cells.lr_choice(three + six[:1]) == cells.lr_choice(three)
    # values print as JSON; a setting one search lacks is "unset"
    named = cells.group_names([json.dumps({"method": {"targets": ["q", "v"], "init_text": "a"}}),
                               json.dumps({"method": {"targets": ["q"]}})])
    assert list(named.values()) == ['method.init_text="a", method.targets=["q", "v"]: ',
                                    'method.init_text=unset, method.targets=["q"]: ']


def test_lr_line_says_whether_the_choice_is_within_seed_noise():
    """The runner-up's gap against sqrt(2) x the dev scores' sd over the seeds at the chosen rate in the searched
    configuration (its r), pooled over its data draws (low-data subsets: each its own dev set); a seed's repeated
    trainings count once; runs at another r take the choice but not the sd; no note without a runner-up or without
    two seeds at one point."""
    def run(lr, dev, seed=0, subset=0, r=4, status="ok"):
        return {"status": status, "seed": seed, "dev": {"BLEU": dev},
                "config": {"seed": seed, "task": {"name": "e2e", "low_data": {"size": 50, "subset": subset}},
                           "method": {"name": "lora", "r": r}, "trainer": {"lr": lr},
                           "lr_search": {"grid": [1e-4, 1e-3], "seed": 0,
                                         "reference": {"task.low_data.subset": 0, "method.r": 4}}}}
    grid = [run(1e-4, 0.48), run(1e-3, 0.50)]
    assert cells.lr_choice(grid).endswith("50.0 (chosen, at the grid's edge: a wider grid may do better)")
    # subset 0: seeds 0, 1 at 50, 54 (seed 1 trained twice, 53 and 55); subset 1: 40, 42. The subsets' means differ
    # by 11: pooled within them, sd = sqrt((8 + 2) / 2) = 2.24; r = 8's seeds (10 points apart) are left out
    runs = [run(1e-3, 0.53, seed=1), run(1e-3, 0.55, seed=1), run(1e-3, 0.40, subset=1),
            run(1e-3, 0.42, seed=1, subset=1), run(1e-4, 0.99, seed=1, subset=1),  # not at the chosen rate
            run(1e-3, 0.30, r=8), run(1e-3, 0.40, seed=1, r=8)]
    note = "dev sd over seeds at the chosen rate 2.2, 2 df"
    assert cells.lr_choice(grid + runs).endswith(f"(runner-up 2.0 below; {note}: within seed noise)")
    # a gap between sd and sqrt(2) x sd is still within the noise of two single runs; past it, no flag
    assert cells.lr_choice([run(1e-4, 0.47)] + grid[1:] + runs).endswith(
        f"(runner-up 3.0 below; {note}: within seed noise)")
    assert cells.lr_choice([run(1e-4, 0.46)] + grid[1:] + runs).endswith(f"(runner-up 4.0 below; {note})")
    # a diverged runner-up is no runner-up
    assert "runner-up" not in cells.lr_choice([run(1e-4, None, status="diverged")] + grid[1:] + runs)
    # the report counts the searches once each, keyed by the runs that made them, with the same verdict as the line
    named = [{**r, "record": f"run{i}"} for i, r in enumerate(grid)]
    assert cells.lr_noise(grid) == {} and list(cells.lr_noise(named + runs).values()) == [True]
    assert list(cells.lr_noise([{**named[0], "dev": {"BLEU": 0.46}}, named[1], *runs]).values()) == [False]
    shared = cells.Row("A", [], "", {}, lr_noise=cells.lr_noise(named + runs))
    wide = [{**named[0], "record": "run2", "dev": {"BLEU": 0.46}}, {**named[1], "record": "run3"}]
    other = cells.Row("B", [], "", {}, lr_noise=cells.lr_noise(wide + runs))
    tables = {"t": cells.Table({"table": "t"}, [], [shared, other]), "u": cells.Table({"table": "u"}, [], [shared])}
    assert render.lr_noise_summary(tables).startswith(
        "Learning rates: of the 2 searches with two or more seeds at their chosen rate (each counted once), 1 chose")
    assert render.lr_noise_summary({"u": cells.Table({"table": "u"}, [], [cells.Row("C", [], "", {})])}) == ""


def test_rows_that_take_the_reference_choice_share_its_lr_line(tmp_path):
    """prefix_init: the grid runs with one init word (`lr_search.reference`) and every word trains at its choice; the
    table says so: the other words share one line, which names the reference (an audit found the line read as if
    only that word had been tuned)."""
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "words.yaml").write_text("""
table: words
title: "Init words"
model: gpt2-medium
metrics: [BLEU]
ours:
  experiment: words
  columns: {BLEU: {metric: test.BLEU, factor: 100}}
  rows:
    - {method: apple, where: {config.method.init_text: apple}}
    - {method: pear, where: {config.method.init_text: pear}}
    - {method: plum, where: {config.method.init_text: plum}}
""")
    search = {"grid": [1e-4, 1e-3], "seed": 0, "reference": {"method.init_text": "apple"}}

    def run(word, lr, dev, tested=True):
        rec = record("words", "prefix", {"BLEU": dev + 0.1} if tested else None)
        rec["record"] += f"-{word}-{lr}"
        rec["config"] |= {"seed": 0, "trainer": {"lr": lr}, "lr_search": search}
        rec["config"]["method"]["init_text"] = word
        return rec | {"dev": {"BLEU": dev}}

    write_records(tmp_path / "results", "words", [run("apple", 1e-4, 0.3, tested=False), run("apple", 1e-3, 0.5),
                                                  run("pear", 1e-3, 0.4)])
    specs, _ = spec.load_specs(tmp_path / "experiments")
    table = cells.build_tables(specs, tmp_path / "results", "default")["words"]
    line = "0.0001: 30.0, 0.001: 50.0 (chosen, at the grid's edge: a wider grid may do better)"
    assert table.row("apple").lr_choice == line
    assert table.row("pear").lr_choice == table.row("plum").lr_choice == line + " (at method.init_text=apple)"
    md = render.render_markdown({"words": table}, "default").splitlines()
    assert f"- apple: {line}" in md and f"- pear, plum: {line} (at method.init_text=apple)" in md


def test_a_claim_of_several_comparisons_fails_only_through_a_family_wise_failure():
    """Bonferroni on the failing side: 3 comparisons, one just below 0 at 95% (paired t: -1 +- 0.99) but not at
    1 - 0.05/3, leave the claim inconclusive; one far below fails it; alone, the mild one fails its claim."""
    def compare(diffs):
        a = [cells.Run(d, (0, s, None), {}) for s, d in enumerate(diffs)]
        b = [cells.Run(0.0, (0, s, None), {}) for s in range(len(diffs))]
        return claims.judge(claims.Comparison("a > b", "better", 0, a, b))

    holding = [compare([2.0, 2.2, 1.8]), compare([3.0, 3.1, 2.9])]
    mild = compare([-1.0, -1.4, -0.6])
    assert mild.verdict == "fails" and mild.ci[1] < 0
    assert claims.overall(claims.judge_family([mild, *holding])) == "inconclusive" and mild.fails_family_wise is False
    assert mild.family_ci[1] > 0 and mild.needed.endswith(" runs a side")  # the runs that would fail it family-wise
    n = int(mild.needed[1:].split()[0])
    assert mild.stats.predicted_half_width(runs_factor=n / 3, level=1 - 0.05 / 3) < 1.0 < \
        mild.stats.predicted_half_width(runs_factor=(n - 1) / 3, level=1 - 0.05 / 3)
    strong = compare([-5.0, -5.2, -4.8])
    assert claims.overall(claims.judge_family([strong, *holding])) == "fails" and strong.fails_family_wise
    alone = compare([-1.0, -1.4, -0.6])
    assert claims.overall(claims.judge_family([alone])) == "fails" and alone.fails_family_wise is None
    assert claims.overall(claims.judge_family(holding)) == "holds"
    mild = compare([-1.0, -1.4, -0.6])
    counted = claims.judge_family([mild, *holding])
    res = {"id": "x", "text": "t", "file": "x.yaml", "comparisons": [mild, *holding], "counted": counted,
           "verdict": claims.overall(counted)}
    md, csv_text = ledger.render_ledger([res], "default")
    assert "| x | **inconclusive** | – | 2 holds, 1 inconclusive | 3 |" in md  # the summary counts as the verdict does
    lo, hi = mild.family_ci
    assert f"inconclusive family-wise: [{lo:+.2f}, {hi:+.2f}] (it fails at an unadjusted 95%)" in md and ",False," in csv_text
    # claims.csv: the claim's verdict, and each comparison's as the claim counts it beside the unadjusted one
    row = next(r for r in csv.DictReader(io.StringIO(csv_text)) if r["fails_family_wise"] == "False")
    assert (row["claim_verdict"], row["verdict"], row["verdict_at_95"]) == ("inconclusive", "inconclusive", "fails")
    # the summary line of a claim of several comparisons names the one that fails it, or where it holds the weakest
    strong = compare([-5.0, -5.2, -4.8])
    fails = {**res, "comparisons": [strong, *holding], "counted": claims.judge_family([strong, *holding]),
             "verdict": "fails"}
    lo, hi = strong.family_ci
    assert f"| x | **fails** | a > b: -5.00 [{lo:+.2f}, {hi:+.2f}] family-wise; at 95% " in ledger.render_ledger(
        [fails], "default")[0]
    holds = {**res, "comparisons": holding, "counted": ["holds", "holds"], "verdict": "holds"}
    assert f"| x | **holds** | weakest, a > b: +2.00 [{holding[0].ci[0]:+.2f}, {holding[0].ci[1]:+.2f}] |" in \
        ledger.render_ledger([holds], "default")[0]


def test_a_claim_judged_at_several_looks_must_hold_at_the_bonferroni_level_over_them():
    """A claim whose design changed after undecided looks (`looks: n`) holds only where its CI at 1 - 0.05/n clears 0
    too: looking until the 95% CI clears overstates. One look changes nothing."""
    def compare(diffs):
        a = [cells.Run(d, (0, s, None), {}) for s, d in enumerate(diffs)]
        b = [cells.Run(0.0, (0, s, None), {}) for s in range(len(diffs))]
        return claims.judge(claims.Comparison("a > b", "better", 0, a, b))

    diffs = [1.0, 1.6, 0.7, 1.3, 0.9]  # paired t at 4 df: 95% CI [+0.66, +1.54], 98.33% [+0.47, +1.73]
    assert claims.judge_family([compare(diffs)]) == ["holds"]
    barely = [0.3, 1.3, 0.4, 1.1, 0.6]  # 95% CI [+0.20, +1.29]: holds unadjusted; 98.33% [-0.04, +1.52]
    once, thrice = compare(barely), compare(barely)
    assert once.verdict == thrice.verdict == "holds" and claims.judge_family([once], looks=1) == ["holds"]
    assert claims.judge_family([thrice], looks=3) == ["inconclusive"] and thrice.holds_over_looks is False
    lo, hi = thrice.family_ci
    assert lo < 0 < thrice.ci[0] and hi > thrice.ci[1]
    n = int(thrice.needed[1:].split()[0])  # the runs that would hold over its 3 looks
    assert thrice.needed == f"~{n} runs a side" and thrice.stats.predicted_half_width(
        runs_factor=n / 5, level=1 - 0.05 / 3) < thrice.diff <= thrice.stats.predicted_half_width(
        runs_factor=(n - 1) / 5, level=1 - 0.05 / 3)
    assert hi - lo == pytest.approx(2 * stats.t_quantile(1 - 0.05 / 6, 4) * thrice.stats.se_runs)
    strong = compare(diffs)
    assert claims.judge_family([strong], looks=3) == ["holds"] and strong.holds_over_looks is True
    res = {"id": "x", "text": "t", "file": "x.yaml", "looks": {"default": 3}, "comparisons": [thrice],
           "counted": ["inconclusive"], "verdict": "inconclusive"}
    md, csv_text = ledger.render_ledger([res], "default")
    assert f"inconclusive over its 3 looks: [{lo:+.2f}, {hi:+.2f}] (it holds at an unadjusted 95%)" in md
    # the summary line leads with the CI over its looks that does not exclude 0, then the 95% one that does
    headline = (f"{thrice.diff:+.2f} [{lo:+.2f}, {hi:+.2f}] over its 3 looks; at 95% "
                f"[{thrice.ci[0]:+.2f}, {thrice.ci[1]:+.2f}]")
    assert f"| x | **inconclusive** | {headline} | 1 inconclusive |" in md and thrice.ci[0] > 0 > lo
    assert "judged 3 times" in md and ",3,False," in csv_text
    assert f"| ~{n} runs a side (to hold) |" in md and ",hold," in csv_text  # the verdict those runs would reach
    # undecided at 95% too: its verdict shows the CI it must clear over the looks, and which way its runs would go
    below = compare([-0.5, 0.6, -1.2, 0.2, -0.9])
    assert below.verdict == "inconclusive" and claims.judge_family([below], looks=3) == ["inconclusive"]
    lo, hi = below.family_ci
    assert lo < below.ci[0] and hi > below.ci[1] and below.fails_family_wise is None
    res = {**res, "comparisons": [below]}
    md, csv_text = ledger.render_ledger([res], "default")
    assert f"| inconclusive ([{lo:+.2f}, {hi:+.2f}] over its 3 looks) | {below.needed} (to fail) |" in md
    # on the holding side, undecided: the CI over its looks (to hold at), no hold to lose
    above = compare([0.5, -0.6, 1.2, -0.2, 0.9])
    assert above.verdict == "inconclusive" and above.family_ci is None
    assert claims.judge_family([above], looks=3) == ["inconclusive"] and above.holds_over_looks is None
    lo, hi = above.family_ci
    assert lo < above.ci[0] and hi > above.ci[1] and lo + hi == pytest.approx(2 * above.diff)
    md, _ = ledger.render_ledger([{**res, "comparisons": [above]}], "default")
    assert f"| inconclusive ([{lo:+.2f}, {hi:+.2f}] over its 3 looks) | {above.needed} (to hold) |" in md


def test_a_robustness_check_is_reported_apart_from_the_claims(tmp_path):
    """`checks:` in a spec repeat a claim's comparison under a changed design choice: they are judged as claims, shown
    in their own summary table and sections (naming the claim they check), in the CSV with `check_of`, and not counted
    in the at-a-glance line; a check must name the claim it repeats."""
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "grid.yaml").write_text(GRID + """
checks:
  - {id: clear_again, of: clear, text: "A > B, longer", check: {kind: better, columns: [x], pairs: [[A, B]]}}
""")
    write_records(tmp_path, "grid", [record("grid", m, {"score": v}, seed=s % 2, subset=s // 2)
                                     for m, values in SCORES.items() for s, v in enumerate(values)])
    specs, claim_specs = spec.load_specs(tmp_path / "exp")
    assert [c["role"] for c in claim_specs].count("check") == 1
    results = claims.evaluate(claim_specs, cells.build_tables(specs, tmp_path, "default"), "default")
    check = next(r for r in results if r["id"] == "clear_again")
    assert check["verdict"] == next(r for r in results if r["id"] == "clear")["verdict"] == "holds"
    md, csv_text = ledger.render_ledger(results, "default")
    lecture = len(results) - 1
    assert f"of {lecture} claims decided" in md  # the check is not one of the claims
    assert "The 1 judged robustness check(s) of decided claims agree with them." in md
    claim = next(r for r in results if r["id"] == "clear")
    assert ledger.at_a_glance([claim], "default", [{**check, "verdict": "inconclusive"}]).endswith(
        " Decided claims whose robustness check does not agree: clear (clear_again: inconclusive).")
    assert "robustness check" not in ledger.at_a_glance([claim], "default", [{**check, "verdict": "no results"}])
    summary, details = md.split("**Robustness checks**")
    assert "| clear_again |" not in summary and "| clear_again | clear | **holds** | +10.00 [+10.00, +10.00] | 1 holds |" \
        in details
    assert " | clear_again: holds |" in summary  # the claim's line names its checks' verdicts
    assert "## clear_again: holds" in details and "A robustness check of `clear`, not a lecture claim." in details
    assert "clear_again,clear," in csv_text and csv_text.splitlines()[0].startswith("claim,check_of,")
    for bad, error in (("{id: orphan, of: nothing,", "orphan needs `of`"),
                       ("{id: of_a_check, of: clear_again,", "of_a_check needs `of`"),
                       ("{id: clear, of: clear,", r"unique: \['clear'\]")):
        (tmp_path / "exp" / "grid.yaml").write_text(GRID + """
checks:
  - {id: clear_again, of: clear, text: "A > B, longer", check: {kind: better, columns: [x], pairs: [[A, B]]}}
  - """ + bad + """ text: "t", check: {kind: better, columns: [x], pairs: [[A, B]]}}
""")
        with pytest.raises(spec.SpecError, match=error):
            spec.load_specs(tmp_path / "exp")
    (tmp_path / "exp" / "grid.yaml").write_text(GRID.replace("- {id: clear,", "- {id: clear, role: check,"))
    assert {c["id"]: c["role"] for c in spec.load_specs(tmp_path / "exp")[1]}["clear"] == "claim"  # the key decides


def test_the_budget_check_sets_150_steps_beside_e2e_mains_own_runs(tmp_path):
    """experiments/e2e_main_budget.yaml over records made here: 3 epochs are e2e_main's runs on all 630 MRs (not the
    setting's 200-MR ones), 6 epochs e2e_main_budget's, and its checks compare the 6-epoch cells, paired by seed."""
    def e2e(experiment, method, bleu, seed, epochs=3, test_mrs=None):
        rec = record(experiment, method, {"BLEU": bleu}, seed=seed)
        rec["record"] = f"{experiment}-{method}-{seed}-{epochs}-{test_mrs}"
        rec["config"].update(model={"name": "smollm2_135m"}, trainer={"epochs": epochs, "lr": 1e-3},
                             method={"name": method, "num_virtual_tokens": 10, "r": 4, "targets": ["q", "v"]},
                             task={"name": "e2e", "max_eval_examples": test_mrs})
        return rec

    write_records(tmp_path, "e2e_main", [e2e("e2e_main", m, v + s / 100, s) for s in range(3) for m, v in
                                         (("full", 0.57), ("prefix", 0.59), ("lora", 0.58))]
                  + [e2e("e2e_main", "full", 0.10, s, test_mrs=200) for s in range(3)])  # the setting's 200 MRs
    write_records(tmp_path, "e2e_main_budget", [e2e("e2e_main_budget", m, v + s / 100 + (s == 1) / 200, s, epochs=6)
                                                for s in range(3) for m, v in (("full", 0.50), ("prefix", 0.60))])
    specs, claim_specs = spec.load_specs(repo_root() / "experiments")
    built = cells.build_tables({"e2e_main_budget": specs["e2e_main_budget"]}, tmp_path, "default")
    md = render.render_markdown(built, "default").splitlines()
    assert "| FT | ours | 58.0 ± 1.0 (n=3) | 51.2 ± 1.0 (n=3) | 1,000 (100%) |" in md, md  # not the 200-MR runs
    assert "| LoRA | ours | 59.0 ± 1.0 (n=3) | – | 1,000 (100%) |" in md, md
    checks = {c["id"]: c for c in claim_specs if c["role"] == "check" and c["file"] == "e2e_main_budget.yaml"}
    res = {r["id"]: r for r in claims.evaluate(list(checks.values()), built, "default")}
    prefix_ft = res["prefix_beats_ft_e2e_at_150_steps"]["comparisons"][0]
    assert (prefix_ft.label, prefix_ft.paired, len(prefix_ft.a)) == ("Prefix @ 6 > FT @ 6", True, 3)
    assert prefix_ft.diff == pytest.approx(10.0) and prefix_ft.verdict == "holds"
    assert res["lora_beats_prefix_e2e_at_150_steps"]["verdict"] == "no results"


def test_the_xsum_budget_check_pairs_fts_two_epochs_with_prefix_tunings_four(tmp_path):
    """experiments/xsum_main_budget.yaml over records made here: 2 epochs are xsum_main's FT and prefix runs, 4 epochs
    xsum_main_budget's prefix runs; its check pairs FT at 2 epochs with prefix-tuning at 4, by seed."""
    def xsum(experiment, method, rouge2, seed, epochs=2):
        rec = record(experiment, method, {"rouge2": rouge2}, seed=seed, pct=100.0 if method == "full" else 4.6)
        rec["record"] = f"{experiment}-{method}-{seed}-{epochs}"
        rec["config"].update(model={"name": "smollm2_135m"}, trainer={"epochs": epochs, "lr": 1e-3},
                             method={"name": method, "num_virtual_tokens": 10}, task={"name": "xsum"})
        rec["params"]["stored_pct"] = None if method == "full" else 0.09
        return rec

    write_records(tmp_path, "xsum_main", [xsum("xsum_main", m, v + s / 1000, s) for s in range(3)
                                          for m, v in (("full", 0.058), ("prefix", 0.053))])
    write_records(tmp_path, "xsum_main_budget", [xsum("xsum_main_budget", "prefix", 0.060 + s / 1000 + (s == 1) / 2000,
                                                      s, epochs=4) for s in range(3)])
    specs, claim_specs = spec.load_specs(repo_root() / "experiments")
    built = cells.build_tables({"xsum_main_budget": specs["xsum_main_budget"]}, tmp_path, "default")
    md = render.render_markdown(built, "default").splitlines()
    assert any(line.startswith("| FT | ours | 5.90 ± 0.10 (n=3) | – |") for line in md), md
    assert any(line.startswith("| Prefix (0.1%) | ours | 5.40 ± 0.10 (n=3) | 6.12 ± 0.10 (n=3) |") for line in md), md
    checks = [c for c in claim_specs if c["role"] == "check" and c["file"] == "xsum_main_budget.yaml"]
    (res,) = claims.evaluate(checks, built, "default")
    (comparison,) = res["comparisons"]
    assert (res["of"], comparison.label, comparison.paired, len(comparison.a)) == (
        "prefix_below_ft_xsum", "FT @ 2 > Prefix (0.1%) @ 4", True, 3)
    assert comparison.diff == pytest.approx(-0.2167, abs=1e-3) and comparison.verdict == "fails"


def test_the_low_data_xsum_budget_check_pairs_by_subset_and_seed_at_50_articles(tmp_path):
    """experiments/low_data_xsum_budget.yaml: 3 epochs are low_data_xsum's runs at 50 articles (not at 100), 6 epochs
    low_data_xsum_budget's prefix runs; its check pairs prefix-tuning at 6 epochs with FT at 3 by subset and seed."""
    def run(experiment, method, rouge2, subset, seed, size=50, epochs=3):
        rec = record(experiment, method, {"rouge2": rouge2}, seed=seed, subset=subset)
        rec["record"] = f"{experiment}-{method}-{subset}-{seed}-{size}-{epochs}"
        rec["config"].update(model={"name": "smollm2_135m"}, trainer={"epochs": epochs, "lr": 1e-3},
                             method={"name": method, "init_text": "summarize" if method == "prefix" else None},
                             task={"name": "xsum", "low_data": {"size": size, "subset": subset}})
        return rec

    cells_ = [(subset, seed) for subset in range(3) for seed in range(2)]
    write_records(tmp_path, "low_data_xsum", [run("low_data_xsum", m, v + sub / 1000, sub, s, size=n)
                                              for sub, s in cells_ for m, v in (("full", 0.06), ("prefix", 0.04))
                                              for n in (50, 100)])
    write_records(tmp_path, "low_data_xsum_budget", [
        run("low_data_xsum_budget", "prefix", 0.065 + sub / 1000 + s / 1000, sub, s, epochs=6) for sub, s in cells_])
    specs, claim_specs = spec.load_specs(repo_root() / "experiments")
    built = cells.build_tables({"low_data_xsum_budget": specs["low_data_xsum_budget"]}, tmp_path, "default")
    table = built["low_data_xsum_budget"]
    assert [len(table.row(r).cells[c].runs) for r in ("FT R-2", "Prefix R-2") for c in ("3", "6")] == [6, 0, 6, 6]
    checks = [c for c in claim_specs if c["role"] == "check" and c["file"] == "low_data_xsum_budget.yaml"]
    (res,) = claims.evaluate(checks, built, "default")
    (comparison,) = res["comparisons"]
    assert (res["of"], comparison.label, comparison.paired, len(comparison.a)) == (
        "prefix_beats_ft_low_data_xsum", "Prefix R-2 @ 6 > FT R-2 @ 3", True, 6)
    assert comparison.diff == pytest.approx(0.55) and comparison.verdict == "holds"
    # the claim's section names its check
    built |= cells.build_tables({"low_data_xsum": specs["low_data_xsum"]}, tmp_path, "default")
    claim = [c for c in claim_specs if c["id"] == "prefix_beats_ft_low_data_xsum"]
    md, _ = ledger.render_ledger(claims.evaluate(claim + checks, built, "default"), "default")
    assert ("Robustness checks of this claim (sections below): `prefix_beats_ft_low_data_xsum_at_6_epochs`, holds "
            "(interim).") in md.splitlines()


def test_provenance_counts_the_scored_test_items_and_names_an_untrained_record_seedless():
    zero_shot = {"config": {"model": {"name": "smollm2_135m"}, "task": {"name": "e2e", "max_eval_examples": None}},
                 "train_examples": 0, "seed": None, "test_items": {"ids": list(range(630))}, "git": {"commit": "abc"}}
    assert render.provenance([zero_shot]) == ("smollm2_135m; e2e: 0 train / 630 test examples; no seed (untrained); "
                                              "commit abc")
    older = {**zero_shot, "test_items": None}  # a record without item ids: its cap, or "all"
    assert "0 train / all test examples" in render.provenance([older])
    # a discrete prompt draws its worked examples from the training pairs but trains on none of them
    prompt = {**zero_shot, "train_examples": 200, "seed": 0, "params": {"trainable": 0}}
    assert "e2e: 0 train / 630 test examples" in render.provenance([prompt])
    assert "e2e: 200 train" in render.provenance([{**prompt, "params": {"trainable": 5}}])


def test_leave_out_at_scale_names_existing_rows_and_no_claim_compares_a_row_left_out(demo):
    exp, results = demo
    grid = (exp / "grid.yaml").read_text()
    (exp / "grid.yaml").write_text(grid.replace("  metric: test.score\n",
                                                "  metric: test.score\n  leave_out_at_scale: {default: [Q]}\n"))
    with pytest.raises(spec.SpecError, match=r"leave_out_at_scale.default names rows ours does not have: \['Q'\]"):
        spec.load_specs(exp)
    (exp / "grid.yaml").write_text(grid.replace("  metric: test.score\n",
                                                "  metric: test.score\n  leave_out_at_scale: {default: [F]}\n"))
    specs, claim_specs = spec.load_specs(exp)
    with pytest.raises(spec.SpecError, match=r"claim missing compares \['F'\], which table grid leaves out at scale "
                                             r"default \(ours.leave_out_at_scale\)"):
        claims.evaluate(claim_specs, cells.build_tables(specs, results, "default"), "default")
    smoke = cells.build_tables(specs, results, "smoke")  # other scales keep the row
    assert "F" in [row.label for row in smoke["grid"].rows]
