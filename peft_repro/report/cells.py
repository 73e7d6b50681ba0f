"""Our cells of the lecture's tables: the runs each cell holds (`spec.cells_of`), at the learning rates chosen on dev,
one record per setting, with the zero-shot (and majority-class) rows of the same test settings."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from statistics import pvariance
from pathlib import Path

from ..lr_search import choose_lr, dev_selected, lr_search_cell, past_the_edge, record_primary
from ..results import TEST_ONLY, eval_setting, latest_per_setting, load_records, lookup, same_settings
from ..stats import difference_ci, item_stats, n_clusters
from .spec import SpecError, at_scale, cells_of, column_spec, experiments_of, first, matches, row_label


@dataclass
class Run:
    value: float
    key: tuple  # (seed, low-data subset): the claims pair runs with equal keys
    record: dict
    metric: str = ""     # the record key of the value ("test.BLEU")
    factor: float = 1.0  # value = record's metric x factor


def trains_nothing(side: list[Run]) -> bool:
    """A side whose runs have no trainable parameters (a discrete prompt, zero-shot): no training noise, so its one
    run is the whole side (another seed would give the same outputs)."""
    return bool(side) and all(lookup(r.record, "params.trainable") == 0 for r in side)


def models_of(runs) -> list[str]:
    """The base models the runs trained, by config name (a table's caption, a claim's "measured at")."""
    return sorted({str(lookup(r.record, "config.model.name")) for r in runs})


def tasks_of(runs) -> list[str]:
    """The tasks the runs were tested on, by config name (a claim's "measured at", its test split's size)."""
    return sorted({str(_task(r)) for r in runs})


@dataclass
class Cell:
    runs: list[Run]
    digits: int
    metric: str  # "test.BLEU x100"
    mark: str = ""  # NOT_ABOVE_ZERO_SHOT, NOT_ABOVE_MAJORITY


NOT_ABOVE_ZERO_SHOT, NOT_ABOVE_MAJORITY = "†", "‡"


@dataclass
class Row:
    label: str
    paper: list[dict]  # one dict of column -> number per source (key "source")
    note: str
    cells: dict[str, Cell]  # ours, by str(column)
    lr_choice: str = ""     # the dev scores of the learning rates tried for this row's runs
    lr_noise: dict = field(default_factory=dict)  # a search (its grid points' records) -> choice within seed noise?


@dataclass
class Table:
    spec: dict
    columns: list
    rows: list[Row]
    diverged: list[str] = field(default_factory=list)  # records of the experiment left out: training diverged
    records: list[dict] = field(default_factory=list)  # the finished runs the table drew from (one per setting)

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise SpecError(f"table {self.spec['table']} has no row {label!r}")


def table_records(results_dir: Path, spec: dict, scale: str, cache: dict | None = None) -> list[dict]:
    """Every record (any status) of the experiments that fill `spec`'s table (`experiments_of`)."""
    cache = {} if cache is None else cache
    records = []
    for experiment in experiments_of(spec):
        if experiment not in cache:
            cache[experiment] = load_records(results_dir, experiment, scale)
        records += cache[experiment]
    return records


def _metric(spec: dict, row: dict, column) -> tuple[str, float, int]:
    """(record key, factor, digits) of a cell: the column's setting over its row's over the table's."""
    ours, col = spec.get("ours") or {}, column_spec(spec.get("ours") or {}, column)
    metric = first("metric", col, row, ours)
    if metric is None:
        raise SpecError(f"ours of table {', '.join(experiments_of(spec))}: no metric for row {row_label(row)!r}, "
                        f"column {column}")
    return metric, first("factor", col, row, ours, default=1), first("digits", col, row, ours, default=1)


def _run(record: dict, spec: dict, row: dict, column) -> Run | None:
    metric, factor, _ = _metric(spec, row, column)
    value = lookup(record, metric)
    if value is None:
        return None
    if not isinstance(value, (int, float)):
        raise SpecError(f"record {record.get('record')}: {metric} is not a number")
    return Run(value * factor, (record.get("seed"), lookup(record, "config.task.low_data.subset")), record, metric,
               factor)


def _empty_cell(spec: dict, row: dict | None, column) -> Cell:
    if row is None:  # a paper row without ours
        return Cell([], 1, "")
    metric, factor, digits = _metric(spec, row, column)
    return Cell([], digits, metric + (f" x{factor:g}" if factor != 1 else ""))


def build_table(spec: dict, records: list[dict], zero_shots: list[dict] = ()) -> Table:
    """One table with our cells filled from `records` (finished, one per setting) through `cells_of`, and the
    zero-shot (and, for classification, majority-class) rows from the `zero_shots` records of the same test settings."""
    columns = spec.get("metrics") or spec["columns"]
    ours = spec.get("ours") or {}
    # cells: only the runs at the rates chosen on dev; a diverged run only in the lr line (`lr_choice`), as tried
    searched, records = records, dev_selected([r for r in records if r.get("status") != "diverged"])
    ours_rows = {row_label(r): r for r in ours.get("rows") or []}
    paper_rows = {row_label(r): r for r in spec.get("rows") or []}
    cells = {(label, str(c)): _empty_cell(spec, ours_rows.get(label), c) for label in {**paper_rows, **ours_rows}
             for c in columns}
    for record in records:
        for label, column in cells_of(record, spec):
            if (run := _run(record, spec, ours_rows[label], column)) is not None:
                cells[label, str(column)].runs.append(run)
    reference = search_reference(searched)
    rows = []
    for label in list(paper_rows) + [lab for lab in ours_rows if lab not in paper_rows]:
        paper, mine = paper_rows.get(label, {}), ours_rows.get(label)
        row_cells = {str(c): cells[label, str(c)] for c in columns}
        choice, noise = "", {}
        if mine:
            where = {**ours.get("where", {}), **mine.get("where", {})}
            row_searched = [r for r in searched if matches(r, dev_where(where, reference))]
            choice, noise = lr_summary(row_searched)
            choice += inherited(reference, where, [run.record for cell in row_cells.values() for run in cell.runs]) \
                if choice else ""
        rows.append(Row(label, paper.get("values") or [], paper.get("note", ""), row_cells, choice, noise))
    return Table(spec, columns, add_zero_shot(rows, columns, zero_shots), records=records)


def dev_where(where: dict, reference: dict = None) -> dict:
    """A row's filter without its test settings (`TEST_ONLY`) and the search's `reference` keys: its lr was chosen on
    the grid points of the same training, whatever test set they were made with, at the reference (e.g. every init
    word takes the choice made with "table-to-text:")."""
    dropped = [f"config.task.{t}" for t in TEST_ONLY] + [f"config.{k}" for k in reference or {}]
    return {k: v for k, v in where.items() if not any(k == d or k.startswith(d + ".") for d in dropped)}


def search_reference(records: list[dict]) -> dict:
    """The `lr_search.reference` settings of these records (a table may pool experiments: all of theirs)."""
    return {k: v for r in records for k, v in ((r["config"].get("lr_search") or {}).get("reference") or {}).items()}


def inherited(reference: dict, where: dict, records: list[dict]) -> str:
    """' (at method.r=4)' when a row's filter or its runs leave the search's reference: they take the choice made
    there (prefix k=1 and 40 take k=10's; low-data subsets 1-4 take subset 0's). A method without the key (FT has no
    rank) is not away from it."""
    away = [k for k, v in reference.items() if where.get(f"config.{k}", v) != v
            or any(lookup(r, f"config.{k}") not in (None, v) for r in records)]
    return f" (at {', '.join(f'{k}={reference[k]}' for k in away)})" if away else ""


def lr_summary(records: list[dict]) -> tuple[str, dict[tuple, bool]]:
    """(`lr_choice`, `lr_noise`) of these records, their searches gathered once."""
    grids, seeds, made_by = _searches(records)
    names = group_names(list(grids))
    texts, noise = [], {}
    for group, points in grids.items():
        chosen = choose_lr(points)
        edge = " (chosen, at the grid's edge: a wider grid may do better)" if past_the_edge(points, 1) \
            else " (chosen)"  # where the search would try a rate past it, had it one left
        gap_sd = _gap_and_sd(points, chosen, seeds.get((group, chosen), {}))
        texts.append(names[group] + ", ".join(f"{lr:g}: " + (f"{100 * v:.1f}" if v > float("-inf") else "diverged")
                                              + (edge if lr == chosen else "") for lr, v in points.items())
                     + seed_noise(gap_sd))
        if gap_sd is not None:
            noise[made_by[group]] = within_seed_noise(*gap_sd[:2])
    return "; ".join(texts), noise


def lr_choice(records: list[dict]) -> str:
    """'2e-05: 51.2, 5e-05: 55.0 (chosen)' per search group of these records: the dev scores of the grid points."""
    return lr_summary(records)[0]


def lr_noise(records: list[dict]) -> dict[tuple, bool]:
    """Per search of these records with a runner-up and two or more seeds at its chosen rate, keyed by the records
    of its grid points: whether the choice is within seed noise (`seed_noise`). The report counts them (a search
    that several tables show, once)."""
    return lr_summary(records)[1]


def _searches(records: list[dict]) -> tuple[dict, dict, dict]:
    """(search group -> {lr: mean dev score} of the groups with 2 or more rates tried, (group, lr) -> {(data draw,
    seed): dev scores} of the seeds trained at that rate in the searched configuration, search group -> the names of
    the records of its grid points: the runs that made the choice, which identify it where experiments with other
    search keys share them)."""
    search = next((r["config"]["lr_search"] for r in records if r["config"].get("lr_search")), None)
    if not search:
        return {}, {}, {}
    groups: dict[str, dict[float, list[float]]] = {}
    made_by: dict[str, list[str]] = {}
    seeds: dict[tuple, dict[tuple, list[float]]] = {}  # (group, lr) -> (data draw, seed) -> dev scores
    for r in records:
        group, point = lr_search_cell({**r["config"], "lr_search": search})
        dev = (r.get("dev") or {}).get(record_primary(r))
        lr = lookup(r, "config.trainer.lr")
        if all(lookup(r, k if k == "seed" else f"config.{k}") == v for k, v in point.items()):
            diverged = float("-inf") if r.get("status") == "diverged" else None  # a rate tried: no choice
            groups.setdefault(group, {}).setdefault(lr, []).append(diverged if dev is None else dev)
            made_by.setdefault(group, []).append(r.get("record") or f"{group} at {lr}")  # hand-made: no name
        # the seeds of the searched configuration (a method setting such as r or k at the search point's value),
        # on each of its data draws (a `task.` setting such as the low-data subset: its own dev set)
        if dev is not None and r.get("status") == "ok" and all(
                lookup(r, f"config.{k}") == v for k, v in point.items() if k != "seed" and not k.startswith("task.")):
            data = tuple(json.dumps(lookup(r, f"config.{k}")) for k in point if k.startswith("task."))
            seeds.setdefault((group, lr), {}).setdefault((data, lookup(r, "seed")), []).append(dev)
    grids = {group: {lr: sum(v) / len(v) for lr, v in sorted(points.items()) if None not in v}
             for group, points in groups.items()}
    return ({group: points for group, points in grids.items() if len(points) > 1}, seeds,
            {group: tuple(sorted(names)) for group, names in made_by.items()})


def seed_noise(gap_sd: tuple | None) -> str:
    """' (runner-up 0.9 below; dev sd over seeds at the chosen rate 2.2, 4 df: within seed noise)': how far the
    choice stands above the next rate against `sd`, the dev scores' spread over the seeds trained at the chosen rate
    in the searched configuration (pooled over its data draws, e.g. low-data subsets; a seed's repeated trainings
    count once). Both grid scores are single runs, so their gap has a seed sd of about sqrt(2)·sd: a gap under that
    is within seed noise (another seed could have chosen the runner-up). Every CI of the tables and claims is
    conditional on the choice. No flag does not make a choice robust (the sd rests on few df, and any rate could
    win on another seed). `gap_sd`: `_gap_and_sd`'s answer; '' without a runner-up or without two seeds at one
    point (None)."""
    if gap_sd is None:
        return ""
    gap, sd, df = gap_sd
    return (f" (runner-up {gap:.1f} below; dev sd over seeds at the chosen rate {sd:.1f}, {df} df"
            + (": within seed noise)" if within_seed_noise(gap, sd) else ")"))


def within_seed_noise(gap: float, sd: float) -> bool:
    """Both grid scores are single runs: their gap has a seed sd of about sqrt(2)·sd."""
    return gap < 2 ** 0.5 * sd


def _gap_and_sd(points: dict[float, float], chosen: float, runs: dict[tuple, list[float]]):
    """(the chosen rate's dev lead over the runner-up, the dev sd over seeds at the chosen rate, its df), x100;
    None without a runner-up or without two seeds at one data draw (`seed_noise`)."""
    others = [v for lr, v in points.items() if lr != chosen and v > float("-inf")]
    draws: dict[tuple, list[float]] = {}  # a data draw's seeds, each seed's trainings averaged
    for (draw, _seed), devs in runs.items():
        draws.setdefault(draw, []).append(sum(devs) / len(devs))
    squares = sum(len(values) * pvariance(values) for values in draws.values())  # around each draw's mean
    df = sum(len(values) - 1 for values in draws.values())
    if not others or not df:
        return None
    return 100 * (points[chosen] - max(others)), 100 * (squares / df) ** 0.5, df


def group_names(groups: list[str]) -> dict[str, str]:
    """'trainer.epochs=6: ' per search group (`lr_search_cell`'s JSON): the settings in which a row's groups differ
    (e2e_main_budget's FT row searches at 3 and at 6 epochs); '' for a row with one group."""
    def flat(node, prefix=""):
        if not isinstance(node, dict):
            return {prefix[:-1]: json.dumps(node)}
        return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}

    settings = {group: flat(json.loads(group)) for group in groups}
    keys = sorted({key for s in settings.values() for key in s})
    differ = [key for key in keys if len({s.get(key) for s in settings.values()}) > 1]
    if len(groups) < 2 or not differ:
        return {group: "" for group in groups}
    return {group: ", ".join(f"{key}={s.get(key, 'unset')}" for key in differ) + ": "  # values as JSON
            for group, s in settings.items()}


def matching_zero_shot(record: dict, zero_shots: list[dict]) -> dict | None:
    want = eval_setting(record["config"])
    return next((z for z in zero_shots if same_settings(eval_setting(z["config"]), want)), None)


def add_zero_shot(rows: list[Row], columns: list, zero_shots: list[dict]) -> list[Row]:
    """Rows "Zero-shot" (and "Majority class" for accuracy) per task of the table's runs, and per metric where rows
    of one column show different metrics (low-data XSum's R-1, R-2, R-L rows); our cells are marked when their 95% CI
    (test items x runs) does not lie above them."""
    tasks = list(dict.fromkeys(_task(run) for row in rows for cell in row.cells.values() for run in cell.runs))
    extra = []
    for task, metric in ((task, metric) for task in tasks for metric in _row_metrics(rows, columns, task)):
        names = ([task] if len(tasks) > 1 else []) + ([metric.rsplit(".", 1)[-1]] if metric else [])
        suffix = f" ({', '.join(names)})" if names else ""
        zs_cells, majority_cells = {}, {}
        for c in columns:
            ours = [(cell, run) for row in rows for cell in [row.cells[str(c)]] for run in cell.runs[:1]
                    if _task(run) == task and metric in (None, run.metric)]
            found = {}
            for cell, run in ours:
                z = matching_zero_shot(run.record, zero_shots)
                value = None if z is None else lookup(z, run.metric)
                if value is None:
                    continue
                zs_run = Run(value * run.factor, (None, None), z, run.metric, run.factor)
                found.setdefault(z["record"], (zs_run, cell))
                majority = lookup(z, "test.majority_rate") if run.metric == "test.accuracy" else None
                cell.mark = mark(cell, zs_run, None if majority is None else majority * run.factor)
                if majority is not None:
                    majority_cells[str(c)] = Cell([Run(majority * run.factor, (None, None), z)], cell.digits,
                                                  cell.metric.replace("test.accuracy", "test.majority_rate"))
            zs_cells[str(c)] = Cell([run for run, _ in found.values()],
                                    next((cell.digits for _, cell in found.values()), 1),
                                    next((cell.metric for _, cell in found.values()), ""))  # "test.BLEU x100"
        extra.append(Row("Zero-shot" + suffix, [], "untrained base model, same prompt, test items and decoding",
                         zs_cells))
        if majority_cells:
            extra.append(Row("Majority class" + suffix, [], "every answer the most frequent test label",
                             {str(c): majority_cells.get(str(c), Cell([], 1, "")) for c in columns}))
    return extra + rows


def _task(run: Run) -> str | None:
    return lookup(run.record, "config.task.name")


def _row_metrics(rows: list[Row], columns: list, task: str) -> list[str | None]:
    """The metrics that need a zero-shot row each: those of the rows when one column shows several (else [None]: one
    row, each column its own metric)."""
    per_column = [list(dict.fromkeys(run.metric for row in rows for run in row.cells[str(c)].runs[:1]
                                     if _task(run) == task)) for c in columns]
    if all(len(metrics) <= 1 for metrics in per_column):
        return [None]
    return list(dict.fromkeys(m for metrics in per_column for m in metrics))


def mark(cell: Cell, zero_shot: Run, majority: float | None) -> str:
    """† when the cell's 95% CI of (cell - zero-shot) reaches 0, ‡ when its CI reaches the majority-class rate; no
    mark where no CI exists (one run whose record lacks per-item statistics)."""
    by_runs = n_clusters(cell.runs) >= 2
    own = [item_stats(r) for r in cell.runs]
    with_zero_shot = own + [item_stats(zero_shot)]
    out = ""
    if (all(with_zero_shot) or by_runs) and difference_ci(
            cell.runs, [zero_shot], False, with_zero_shot if all(with_zero_shot) else None, by_runs).ci[0] <= 0:
        out += NOT_ABOVE_ZERO_SHOT
    if majority is not None and (all(own) or by_runs):  # the cell's own items, whatever zero-shot kept
        out += NOT_ABOVE_MAJORITY if difference_ci(cell.runs, [], False, own if all(own) else None,
                                                   by_runs).ci[0] <= majority else ""
    return out


def build_tables(specs: dict[str, dict], results_dir: Path, scale: str) -> dict[str, Table]:
    cache: dict[str, list[dict]] = {}
    zero_shots = [r for r in load_records(results_dir, "zero_shot", scale) if r.get("status") == "ok"]
    tables = {}
    for name, spec in specs.items():
        spec = at_scale(spec, scale)
        records = table_records(results_dir, spec, scale, cache)
        # a run that two of the experiments made counts once (the latest), whichever folder holds it; a diverged run
        # is in no cell (it has no test), but its rate was tried: the lr line lists it
        diverged = [r for r in records if r.get("status") == "diverged"]
        finished = latest_per_setting([r for r in records if r.get("status") == "ok"])
        tables[name] = build_table(spec, finished + diverged, zero_shots)
        tables[name].diverged = [r["record"] for r in diverged]
    return tables
