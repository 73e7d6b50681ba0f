"""Markdown, LaTeX and CSV of the lecture's tables: the papers' numbers by source, then ours per row (mean ± sd over
runs, the zero-shot and majority-class marks, the learning rates tried on dev, the provenance of the runs)."""
from __future__ import annotations

import csv
import io

from ..results import lookup
from .cells import NOT_ABOVE_MAJORITY, NOT_ABOVE_ZERO_SHOT, Cell, Row, Run, Table, models_of, trains_nothing
from .costs import wall_time
from .spec import DASH, experiments_of, scale_note


def format_mean_sd(values: list[float], digits: int) -> str:
    """Mean, and with several runs their sample sd and count: '38.2 ± 1.1 (n=10)'; '–' when there is none."""
    if not values:
        return DASH
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {sd:.{digits}f} (n={len(values)})"


def fmt_ours(cell: Cell) -> str:
    """A cell's runs as `format_mean_sd`; a single run that trained is marked (n=1), one that trains nothing
    (zero-shot, a discrete prompt: `trains_nothing`) is not: another seed would give the same outputs."""
    text = format_mean_sd([run.value for run in cell.runs], cell.digits)
    if len(cell.runs) == 1 and not trains_nothing(cell.runs):
        text += " (n=1)"
    return text + cell.mark


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


def test_size(record: dict):
    """The number of test items a record was scored on (its item ids; older records: the configured cap or "all")."""
    if ids := (record.get("test_items") or {}).get("ids"):
        return len(ids)
    cap = lookup(record, "config.task.max_eval_examples")
    return "all" if cap is None else cap


def provenance(records: list[dict]) -> str:
    """Model, data sizes per task, seeds and commits of some records."""
    if not records:
        return "no runs"
    parts = [_values(lookup(r, "config.model.name") for r in records)]
    for task in sorted({str(lookup(r, "config.task.name")) for r in records}):
        mine = [r for r in records if str(lookup(r, "config.task.name")) == task]
        # a record that trains nothing (a discrete prompt's worked examples come from the training pairs) trained on 0
        train = _values(0 if lookup(r, "params.trainable") == 0 else r.get("train_examples") for r in mine)
        test = _values(map(test_size, mine))
        text = f"{task}: {train} train / {test} test examples"
        subsets = {lookup(r, "config.task.low_data.subset") for r in mine} - {None}
        parts.append(text + (f" (low-data subsets {_values(subsets)})" if subsets else ""))
    seeds = {r.get("seed") for r in records} - {None}  # a zero-shot record has none
    parts.append("seeds " + _values(seeds) if seeds else "no seed (untrained)")
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
    models = models_of(run for row in table.rows for c in row.cells.values() for run in c.runs)
    mine = (f"Ours: {', '.join(models) or 'no runs'}, experiment `{'`, `'.join(experiments_of(spec))}`, scale `{scale}`"
            + (f", columns = `{ours['column_key']}`" if ours.get("column_key") else "")
            + f", values (record keys) {metrics or DASH}; mapping: `ours` in experiments/{spec['file']}."
            if ours else "Ours: no experiment mapped.")
    return [paper + ". " + mine, "Our cells: mean ± sd (n = runs) over seeds and subsets (the 95% CIs of the "
            "claims' differences are in claims.md); a method that trains "
            "nothing (zero-shot, a discrete prompt) is one run; – = no result; "
            f"{NOT_ABOVE_ZERO_SHOT} = not above zero-shot, {NOT_ABOVE_MAJORITY} = not above the majority-class rate "
            "(the 95% CI over test items and runs reaches it)."]


def lr_noise_summary(tables: dict[str, Table]) -> str:
    """One line over every table's lr lines: the searches with a runner-up and two or more seeds at the chosen rate
    (a search shared by tables counted once), and in how many the choice is within seed noise (`cells.seed_noise`)."""
    noise = {group: within for table in tables.values() for row in table.rows for group, within in row.lr_noise.items()}
    if not noise:
        return ""
    return (f"Learning rates: of the {len(noise)} searches with two or more seeds at their chosen rate (each counted "
            f"once), {sum(noise.values())} chose within seed noise (the runner-up's dev gap under sqrt(2) x the seed "
            "sd: another seed could have chosen it; each table's lr lines say which). Every CI is conditional on the "
            "choices.")


def render_markdown(tables: dict[str, Table], scale: str) -> str:
    out = []
    for table in tables.values():
        lines = matrix(table)
        out += [f"## {table.spec.get('title', table.spec['table'])}", "", *caption(table, scale), "",
                *scale_note(table.spec, scale)]
        out += ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines[1:]]
        groups: dict[str, list[Row]] = {}  # rows whose runs have the same provenance
        for row in table.rows:
            groups.setdefault(provenance(_records(row_runs(row))), []).append(row)
        rows_of: dict[str, list[str]] = {}  # rows that share a choice (made at the search's reference) share a line
        for row in table.rows:
            if row.lr_choice:
                rows_of.setdefault(row.lr_choice, []).append(row.label)
        choices = [f"- {', '.join(labels)}: {choice}" for choice, labels in rows_of.items()]
        if choices:
            out += ["", "Learning rates tried on dev (dev score x100 of the primary metric at the search point; "
                        "the cells use the chosen one; sd: the dev scores' sd over the seeds trained at the chosen "
                        "rate in the searched configuration; a runner-up closer than sqrt(2)·sd, the seed sd of a gap "
                        "between two single runs, leaves the choice within seed noise: another seed could have chosen "
                        "it, and the CIs, conditional on the choice, leave that out; no flag does not make a choice "
                        "robust):", *choices]
        if table.diverged:
            names = "`, `".join(experiments_of(table.spec))
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


RUN_FIELDS = ["trainable_params", "trainable_pct", "model", "task", "train_examples", "commit", "dirty", "hardware",
              "wall_seconds", "finished", "record"]


def run_lines(table: Table) -> list[dict]:
    """One line per run of each of our rows: its row, its column (pivot tables) or each metric column's value."""
    by_metric = bool(table.spec.get("metrics"))
    lines: dict[tuple, dict] = {}
    for row in table.rows:
        for column, cell in row.cells.items():
            for run in cell.runs:
                if run.record.get("record") is None or row.label.startswith(("Zero-shot", "Majority class")):
                    continue
                r = run.record
                key = (row.label, r["record"]) if by_metric else (row.label, column, r["record"])
                line = lines.setdefault(key, {
                    "row": row.label, **({} if by_metric else {"col": column}), "seed": r.get("seed"),
                    "subset": lookup(r, "config.task.low_data.subset"),
                    "trainable_params": lookup(r, "params.trainable"),
                    "trainable_pct": None if (pct := lookup(r, "params.trainable_pct")) is None else round(pct, 4),
                    "model": lookup(r, "config.model.name"), "task": lookup(r, "config.task.name"),
                    "train_examples": r.get("train_examples"), "commit": lookup(r, "git.commit"),
                    "dirty": lookup(r, "git.dirty"), "hardware": r.get("hardware"),
                    "wall_seconds": None if r.get("wall_seconds") is None else round(wall_time(r), 1),
                    "finished": r.get("finished"), "record": r["record"]})
                line[column if by_metric else "value"] = round(run.value, 4)
    return list(lines.values())


def render_runs(table: Table) -> tuple[list[str], str]:
    """(Markdown lines, CSV) of `run_lines`."""
    if table.spec.get("metrics"):
        fields = ["row", "seed", "subset", *map(str, table.columns), *RUN_FIELDS]
    else:
        fields = ["row", "col", "seed", "subset", "value", *RUN_FIELDS]
    lines = run_lines(table)
    md = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    md += ["| " + " | ".join(DASH if line.get(f) is None else str(line[f]) for f in fields) + " |" for line in lines]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(lines)
    return md, buf.getvalue()
