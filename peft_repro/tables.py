"""`python -m peft_repro.tables`: the lecture's tables with the papers' numbers beside ours, and the claims ledger.

Reads the reference tables `experiments/*.yaml` (the papers' numbers by source, plus an `ours:` section saying which
run records fill which row and column; schema in experiments/README.md) and the records under
`<results_dir>/runs/<experiment>/<scale>/*.json` (status "ok" only). Writes a new version folder
`<results_dir>/reports/<scale>/<YYYYmmdd-HHMMSS>_<commit>[-dirty]/` with `tables.md`, `tables.tex` (booktabs),
`claims.md` and `claims.csv` (see `peft_repro.claims`); earlier versions stay. One of our cells is the mean over its
runs (seeds, low-data subsets), with ± sd and n when n > 1; '–' marks a cell without a number.

    python -m peft_repro.tables [--results-dir DIR] [--scale default|smoke|paper] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .lr_search import choose_lr, dev_selected, lr_search_cell, record_primary
from .models import repo_root
from .results import (MalformedRecord, eval_setting, format_mean_sd, git_state, latest_per_setting, load_records,
                      lookup, same_settings, write_atomic)
from .stats import bootstrap, item_stats, percentile_ci

DASH = "–"


class SpecError(ValueError):
    """A malformed reference table, claim or run record: the CLI prints one line and exits 2."""


@dataclass
class Run:
    value: float
    key: tuple  # (seed, low-data subset): the claims pair runs with equal keys
    record: dict
    metric: str = ""     # the record key of the value ("test.BLEU")
    factor: float = 1.0  # value = record's metric x factor


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


@dataclass
class Table:
    spec: dict
    columns: list
    rows: list[Row]
    diverged: list[str] = field(default_factory=list)  # records of the experiment left out: training diverged

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise SpecError(f"table {self.spec['table']} has no row {label!r}")


def row_label(row: dict) -> str:
    """A row's name in the rendered table and in claims: `method`, or `method (task)` when the row has a task."""
    return f"{row['method']} ({row['task']})" if row.get("task") else str(row["method"])


def load_specs(folder: Path) -> tuple[dict[str, dict], list[dict]]:
    """(reference tables by `table` id, claims of all files) from `folder/*.yaml`."""
    tables, claims = {}, []
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: {' '.join(str(e).split())}") from e
        if not isinstance(doc, dict):
            raise SpecError(f"{path}: not a YAML mapping")
        if "table" in doc:
            if doc["table"] in tables:
                raise SpecError(f"{path}: table id {doc['table']!r} used twice")
            if not (doc.get("metrics") or doc.get("columns")):
                raise SpecError(f"{path}: a table needs `metrics` or `columns`")
            tables[doc["table"]] = {**doc, "file": path.name}
        claims += [{**claim, "file": path.name} for claim in doc.get("claims") or []]
    return tables, claims


def load_runs(results_dir: Path, experiment: str, scale: str) -> list[dict]:
    """The finished (status "ok") records of one experiment and scale; a record that is not JSON is an error."""
    return [r for r in load_records(results_dir, experiment, scale) if r.get("status") == "ok"]


def matches(record: dict, where: dict) -> bool:
    """`where`: dotted record key -> value (equality; lists too) or {min: a, max: b} (a <= value < b)."""
    for key, want in where.items():
        have = lookup(record, key)
        if isinstance(want, dict):
            if not isinstance(have, (int, float)) or not want.get("min", -1e300) <= have < want.get("max", 1e300):
                return False
        elif have != want:
            return False
    return True


def _first(key: str, *specs: dict, default=None):
    return next((s[key] for s in specs if s.get(key) is not None), default)


def _cell(records: list[dict], ours: dict, row: dict, column) -> Cell:
    col = {str(k): v for k, v in (ours.get("columns") or {}).items()}.get(str(column), {})
    where = {**ours.get("where", {}), **row.get("where", {}), **col.get("where", {})}
    if ours.get("column_key"):
        where[ours["column_key"]] = column
    metric = _first("metric", col, row, ours)
    if metric is None:
        raise SpecError(f"ours of table {', '.join(experiments_of(ours))}: no metric for row {row_label(row)!r}, "
                        f"column {column}")
    factor = _first("factor", col, row, ours, default=1)
    runs = []
    for record in records:
        value = lookup(record, metric)
        if value is None or not matches(record, where):
            continue
        if not isinstance(value, (int, float)):
            raise SpecError(f"record {record.get('record')}: {metric} is not a number")
        runs.append(Run(value * factor, (record.get("seed"), lookup(record, "config.task.low_data.subset")), record,
                        metric, factor))
    return Cell(runs, _first("digits", col, row, ours, default=1), metric + (f" x{factor:g}" if factor != 1 else ""))


def build_table(spec: dict, records: list[dict], zero_shots: list[dict] = ()) -> Table:
    """One reference table with our cells filled from `records` (those of `spec.ours.experiment`), and the zero-shot
    (and, for classification, majority-class) rows from the `zero_shots` records of the same test settings."""
    columns = spec.get("metrics") or spec["columns"]
    ours = spec.get("ours") or {}
    searched, records = records, dev_selected(records)  # cells: only the runs at the rates chosen on dev
    ours_rows = {row_label(r): r for r in ours.get("rows") or []}
    paper_rows = {row_label(r): r for r in spec.get("rows") or []}
    rows = []
    for label in list(paper_rows) + [lab for lab in ours_rows if lab not in paper_rows]:
        paper, mine = paper_rows.get(label, {}), ours_rows.get(label)
        cells = {str(c): _cell(records, ours, mine, c) if mine else Cell([], 1, "") for c in columns}
        choice = lr_choice([r for r in searched if matches(r, {**ours.get("where", {}), **mine.get("where", {})})]) \
            if mine else ""
        rows.append(Row(label, paper.get("values") or [], paper.get("note", ""), cells, choice))
    return Table(spec, columns, add_zero_shot(rows, columns, zero_shots))


def lr_choice(records: list[dict]) -> str:
    """'lr 2e-05: 51.2, 5e-05: 55.0 (chosen)' per search group of these records: the dev scores of the grid points."""
    search = next((r["config"]["lr_search"] for r in records if r["config"].get("lr_search")), None)
    if not search:
        return ""
    groups: dict[str, dict[float, list[float]]] = {}
    for r in records:
        group, point = lr_search_cell({**r["config"], "lr_search": search})
        if all(lookup(r, k if k == "seed" else f"config.{k}") == v for k, v in point.items()):
            groups.setdefault(group, {}).setdefault(lookup(r, "config.trainer.lr"), []).append(
                (r.get("dev") or {}).get(record_primary(r)))
    texts = []
    for points in groups.values():
        points = {lr: sum(v) / len(v) for lr, v in sorted(points.items()) if None not in v}
        if len(points) > 1:
            chosen = choose_lr(points)
            edge = " (chosen, at the grid's edge: a wider grid may do better)" if chosen in (min(points), max(points)) \
                else " (chosen)"
            texts.append(", ".join(f"{lr:g}: {100 * v:.1f}" + (edge if lr == chosen else "") for lr, v in points.items()))
    return "; ".join(texts)


def matching_zero_shot(record: dict, zero_shots: list[dict]) -> dict | None:
    want = eval_setting(record["config"])
    return next((z for z in zero_shots if same_settings(eval_setting(z["config"]), want)), None)


def add_zero_shot(rows: list[Row], columns: list, zero_shots: list[dict]) -> list[Row]:
    """Rows "Zero-shot" (and "Majority class" for accuracy) per task of the table's runs; our cells are marked
    when their 95% CI (test items x runs) does not lie above them."""
    tasks = list(dict.fromkeys(lookup(run.record, "config.task.name") for row in rows for cell in row.cells.values()
                               for run in cell.runs))
    extra = []
    for task in tasks:
        suffix = f" ({task})" if len(tasks) > 1 else ""
        zs_cells, majority_cells = {}, {}
        for c in columns:
            ours = [(cell, run) for row in rows for cell in [row.cells[str(c)]] for run in cell.runs[:1]
                    if lookup(run.record, "config.task.name") == task]
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
                                                  "test.majority_rate")
            zs_cells[str(c)] = Cell([run for run, _ in found.values()],
                                    next((cell.digits for _, cell in found.values()), 1),
                                    next((run.metric for run, _ in found.values()), ""))
        extra.append(Row("Zero-shot" + suffix, [], "untrained base model, same prompt, test items and decoding",
                         zs_cells))
        if majority_cells:
            extra.append(Row("Majority class" + suffix, [], "every answer the most frequent test label",
                             {str(c): majority_cells.get(str(c), Cell([], 1, "")) for c in columns}))
    return extra + rows


def mark(cell: Cell, zero_shot: Run, majority: float | None) -> str:
    """† when the cell's 95% CI of (cell - zero-shot) reaches 0, ‡ when its CI reaches the majority-class rate; no
    mark where no CI exists (one run whose record lacks per-item statistics)."""
    items = [item_stats(r) for r in cell.runs + [zero_shot]]
    by_runs = len(cell.runs) >= 2
    if not (all(items) or by_runs):
        return ""
    items = items if all(items) else None
    out = ""
    if percentile_ci(bootstrap(cell.runs, [zero_shot], False, items, by_runs))[0] <= 0:
        out += NOT_ABOVE_ZERO_SHOT
    if majority is not None:
        lo = percentile_ci(bootstrap(cell.runs, [], False, items and items[:-1], by_runs))[0]
        out += NOT_ABOVE_MAJORITY if lo <= majority else ""
    return out


def experiments_of(ours: dict) -> list[str]:
    """`ours.experiment`: one experiment, or a list of experiments that share runs (conf/setting/), own one first."""
    experiment = ours.get("experiment")
    return [experiment] if isinstance(experiment, str) else list(experiment or [])


def build_tables(specs: dict[str, dict], results_dir: Path, scale: str) -> dict[str, Table]:
    cache: dict[str, list[dict]] = {}
    zero_shots = load_runs(results_dir, "zero_shot", scale)
    tables = {}
    for tid, spec in specs.items():
        records = []
        for experiment in experiments_of(spec.get("ours") or {}):
            if experiment not in cache:
                cache[experiment] = load_records(results_dir, experiment, scale)
            records += cache[experiment]
        # a run that two of the experiments made counts once (the latest), whichever folder holds it
        tables[tid] = build_table(spec, latest_per_setting([r for r in records if r.get("status") == "ok"]),
                                  zero_shots)
        tables[tid].diverged = [r["record"] for r in records if r.get("status") == "diverged"]
    return tables


# ---------------------------------------------------------------------------------------------------- formatting

def fmt_ours(cell: Cell) -> str:
    return format_mean_sd([run.value for run in cell.runs], cell.digits) + cell.mark


def fmt_trainable(runs: list[Run]) -> str:
    """Trainable parameters (and % of the model); a prefix MLP's runs also name what is stored after training."""
    keys = ("params.trainable", "params.trainable_pct", "params.stored", "params.stored_pct")
    counts = [c for c in (tuple(lookup(r.record, k) for k in keys) for r in runs) if c[0] is not None]
    if not counts:
        return DASH
    trainable = {c[0] for c in counts}
    if len(trainable) > 1:
        return f"{min(trainable):,}–{max(trainable):,}"
    # One count; records older than params.stored lack the stored count, so take it from any record that has it.
    count, pct, stored, stored_pct = max(counts, key=lambda c: c[2] is not None)
    text = f"{count:,} ({pct:.3g}%)"
    return text + (f"; stored {stored:,} ({stored_pct:.3g}%)" if stored not in (None, count) else "")


def _values(seq) -> str:
    return ", ".join(str(v) for v in sorted(set(seq), key=lambda v: (v is None, str(v).zfill(12))))


def _records(runs: list[Run]) -> list[dict]:
    return list({r.record.get("record", id(r.record)): r.record for r in runs}.values())


def provenance(records: list[dict]) -> str:
    """Model, data sizes per task, seeds and commits of some records."""
    if not records:
        return "no runs"
    parts = [_values(lookup(r, "config.model.name") for r in records)]
    for task in sorted({str(lookup(r, "config.task.name")) for r in records}):
        mine = [r for r in records if str(lookup(r, "config.task.name")) == task]
        test = ("all" if v is None else v for v in (lookup(r, "config.task.max_eval_examples") for r in mine))
        text = f"{task}: {_values(r.get('train_examples') for r in mine)} train / {_values(test)} test examples"
        subsets = {lookup(r, "config.task.low_data.subset") for r in mine} - {None}
        parts.append(text + (f" (low-data subsets {_values(subsets)})" if subsets else ""))
    parts.append("seeds " + _values(r.get("seed") for r in records))
    precisions = {{True: "bf16", False: "fp32"}.get(r.get("bf16")) for r in records} - {None}
    if precisions:  # `precision: auto` trains in bf16 only where the CPU has it: machines differ
        parts.append("precision " + _values(precisions))
    commits = (f"{lookup(r, 'git.commit')}{'-dirty' if lookup(r, 'git.dirty') else ''}" for r in records)
    parts.append("commit " + _values(commits))
    return "; ".join(parts)


def row_runs(row: Row) -> list[Run]:
    return [run for cell in row.cells.values() for run in cell.runs]


def matrix(table: Table) -> list[list[str]]:
    """Header and body of a table as strings: per row one line per paper source, then one line of ours."""
    lines = [["method", "source", *map(str, table.columns), "trainable / note"]]
    for row in table.rows:
        for values in row.paper:
            flat = {str(k): v for k, v in values.items()}
            lines.append([row.label, values.get("source", "?"),
                          *(str(flat[str(c)]) if flat.get(str(c)) is not None else DASH for c in table.columns),
                          row.note])
        lines.append([row.label, "ours", *(fmt_ours(row.cells[str(c)]) for c in table.columns),
                      fmt_trainable(row_runs(row))])
    return lines


def caption(table: Table, scale: str) -> list[str]:
    spec, ours = table.spec, table.spec.get("ours") or {}
    paper = f"Paper: {spec.get('model', '?')}" + "".join(f", {spec[k]}" for k in ("task", "split") if spec.get(k))
    if not spec.get("rows"):
        paper += f" ({spec.get('source', '?')}: no numbers in the paper)"
    metrics = ", ".join(dict.fromkeys(c.metric for row in table.rows for c in row.cells.values() if c.metric))
    mine = (f"Ours: experiment `{'`, `'.join(experiments_of(ours))}`, scale `{scale}`"
            + (f", columns = `{ours['column_key']}`" if ours.get("column_key") else "")
            + f", values {metrics or DASH}; mapping: `ours` in experiments/{spec['file']}."
            if ours else "Ours: no experiment mapped.")
    return [paper + ". " + mine, "Our cells: mean ± sd (n = runs) over seeds and subsets when n > 1; – = no result; "
            f"{NOT_ABOVE_ZERO_SHOT} = not above zero-shot, {NOT_ABOVE_MAJORITY} = not above the majority-class rate "
            "(the 95% CI over test items and runs reaches it)."]


def render_markdown(tables: dict[str, Table], scale: str) -> str:
    out = []
    for table in tables.values():
        lines = matrix(table)
        out += [f"## {table.spec.get('title', table.spec['table'])}", "", *caption(table, scale), ""]
        out += ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines[1:]]
        groups: dict[str, list[Row]] = {}  # rows whose runs have the same provenance
        for row in table.rows:
            groups.setdefault(provenance(_records(row_runs(row))), []).append(row)
        choices = [f"- {row.label}: {row.lr_choice}" for row in table.rows if row.lr_choice]
        if choices:
            out += ["", "Learning rates tried on dev (dev score x100 of the primary metric at the search point; "
                        "the cells use the chosen one):", *choices]
        if table.diverged:
            names = "`, `".join(experiments_of(table.spec["ours"]))
            out += ["", f"Left out: {len(table.diverged)} run(s) of `{names}` whose training "
                        "diverged: " + ", ".join(f"`{name}`" for name in table.diverged)]
        out += ["", "Our runs:"]
        for text, rows in groups.items():
            n = len(_records([run for row in rows for run in row_runs(row)]))
            count = f" ({n} run{'s' * (n > 1)})" if n else ""
            out.append(f"- {', '.join(row.label for row in rows)}: {text}{count}")
        out.append("")
    return "\n".join(out)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": "$<$",
                 ">": "$>$", "`": ""}


def latex_escape(text: str) -> str:
    text = "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)
    return text.replace(" ± ", r" $\pm$ ").replace(DASH, "--")


def render_latex(tables: dict[str, Table], scale: str) -> str:
    """One booktabs `table` per reference table (needs \\usepackage{booktabs})."""
    out = [f"% peft_repro tables, scale {scale}; needs \\usepackage{{booktabs}}", ""]
    for tid, table in tables.items():
        lines = matrix(table)
        row_end = " \\\\"
        text = f"{table.spec.get('title', tid)}. {' '.join(caption(table, scale))}"
        out += ["\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{latex_escape(text)}}}",
                f"\\label{{tab:{tid}}}", "\\begin{tabular}{ll" + "r" * len(table.columns) + "l}", "\\toprule",
                " & ".join(map(latex_escape, lines[0])) + row_end, "\\midrule"]
        out += [" & ".join(map(latex_escape, line)) + row_end for line in lines[1:]]
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------- report

def version_dir(parent: Path) -> Path:
    """A new `<YYYYmmdd-HHMMSS>_<commit>[-dirty]` folder under `parent` (never an existing one)."""
    git = git_state()
    name = f"{time.strftime('%Y%m%d-%H%M%S')}_{git['commit']}{'-dirty' if git['dirty'] else ''}"
    folder, n = Path(parent) / name, 1
    while folder.exists():
        n += 1
        folder = Path(parent) / f"{name}-{n}"
    folder.mkdir(parents=True)
    return folder


def write_report(results_dir: Path, scale: str, out: Path | None = None) -> list[Path]:
    """Render every table and the claims into a new version folder; returns the files written (or those of the newest
    version, when nothing changed)."""
    from . import claims as claims_mod

    specs, claims = load_specs(repo_root() / "experiments")
    tables = build_tables(specs, results_dir, scale)
    results = claims_mod.evaluate(claims, tables)
    claims_md, claims_csv = claims_mod.render(results, scale)
    git = git_state()
    header = (f"<!-- rendered {time.strftime('%Y-%m-%d %H:%M:%S')} at commit {git['commit']}"
              f"{' (dirty)' if git['dirty'] else ''} from {results_dir} -->\n")
    files = {"tables.md": header + f"# The lecture's tables: papers and ours (scale `{scale}`)\n\n"
                                   + render_markdown(tables, scale),
             "tables.tex": render_latex(tables, scale),
             "claims.md": header + claims_md, "claims.csv": claims_csv}
    parent = out or Path(results_dir) / "reports" / scale
    if (same := unchanged_version(parent, files)) is not None:  # a rerun that changes nothing adds no version
        return [same / name for name in files]
    folder = version_dir(parent)  # only once everything rendered
    for name, text in files.items():
        write_atomic(folder / name, text)
    return [folder / name for name in files]


def unchanged_version(parent: Path, files: dict[str, str]) -> Path | None:
    """The newest version folder under `parent` whose files say what `files` say (the rendering time, commit and
    results folder in the first line of the Markdown files aside), else None."""
    def body(name: str, text: str) -> str:
        return text.split("\n", 1)[-1] if name.endswith(".md") else text

    versions = sorted(p for p in Path(parent).glob("*_*") if p.is_dir()) if Path(parent).is_dir() else []
    if versions and all((versions[-1] / name).exists() and body(name, (versions[-1] / name).read_bytes().decode())
                        == body(name, text) for name, text in files.items()):  # bytes: the CSV ends lines in \r\n
        return versions[-1]
    return None


def default_results_dir(scale: str) -> Path:
    """`PEFT_REPRO_RESULTS`, else `<repo>/results` (`<repo>/results/smoke` for scale smoke, where smoke runs write)."""
    if os.environ.get("PEFT_REPRO_RESULTS"):
        return Path(os.environ["PEFT_REPRO_RESULTS"])
    return repo_root() / "results" / ("smoke" if scale == "smoke" else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peft_repro.tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, help="default: $PEFT_REPRO_RESULTS or <repo>/results "
                                                         "(<repo>/results/smoke for --scale smoke)")
    parser.add_argument("--scale", default="default", help="records of this scale (default: default)")
    parser.add_argument("--out", type=Path,
                        help="parent of the version folder (default: <results-dir>/reports/<scale>)")
    args = parser.parse_args(argv)
    results_dir = args.results_dir or default_results_dir(args.scale)
    if not any((Path(results_dir) / "runs").glob(f"*/{args.scale}/*.json")):
        print(f"error: no run records under {Path(results_dir) / 'runs'}/*/{args.scale}/ (check --results-dir and "
              f"--scale)", file=sys.stderr)
        return 2
    try:
        paths = write_report(results_dir, args.scale, args.out)
    except (SpecError, MalformedRecord) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print("\n".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
