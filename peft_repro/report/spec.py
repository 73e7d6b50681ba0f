"""The lecture's table specs: `experiments/<experiment>.yaml`, one per Hydra experiment and named exactly as it.

A spec holds the papers' numbers by source, the table layout, the claims drawn from it (and `checks:`, robustness
checks of those claims), and `ours:`, the only mapping from run records to table cells (schema:
experiments/README.md). `cells_of` is that mapping as a function: the report, the end-of-sweep table, the W&B
`table_row`/`table_col` and the figures all place a run through it.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from ..paths import repo_root
from ..results import lookup

DASH = "–"


class SpecError(ValueError):
    """A malformed reference table, claim or run record: the CLI prints one line and exits 2."""


def specs_dir() -> Path:
    return repo_root() / "experiments"


def load_specs(folder: Path | None = None) -> tuple[dict[str, dict], list[dict]]:
    """(table specs by experiment name, the claims of all files) from `folder/*.yaml` (default: experiments/)."""
    tables, claims = {}, []
    for path in sorted(Path(folder or specs_dir()).glob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: {' '.join(str(e).split())}") from e
        if not isinstance(doc, dict):
            raise SpecError(f"{path}: not a YAML mapping")
        name = path.stem
        if doc.get("table", name) != name:
            raise SpecError(f"{path}: `table: {doc['table']}` differs from the file's name (one file per experiment, "
                            f"named as it)")
        if not (doc.get("metrics") or doc.get("columns")):
            raise SpecError(f"{path}: a table needs `metrics` or `columns`")
        items = [*(doc.get("claims") or []), *(doc.get("checks") or [])]
        for item in [doc, *items]:
            notes = item.get("scale_notes") if isinstance(item, dict) else None
            if notes is not None and not (isinstance(notes, dict) and all(isinstance(v, str) for v in notes.values())):
                raise SpecError(f"{path}: `scale_notes` maps a scale to a sentence, e.g. {{default: \"...\"}}")
        for claim in items:
            plan = claim.get("planned_runs") if isinstance(claim, dict) else None
            if plan is not None and not (isinstance(plan, dict) and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in plan.values())):
                raise SpecError(f"{path}: `planned_runs` maps a scale to the runs a side it plans (2 or more), "
                                f"e.g. {{default: 5}}")
            looks = claim.get("looks") if isinstance(claim, dict) else None
            if looks is not None and not (isinstance(looks, dict) and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in looks.values())):
                raise SpecError(f"{path}: `looks` maps a scale to the times the claim was judged (1 or more), "
                                f"e.g. {{default: 3}}")
            left = claim.get("left_out") if isinstance(claim, dict) else None
            if left is not None and not (isinstance(left, dict) and all(
                    isinstance(v, dict) and set(v) <= {"rows", "columns"} and all(isinstance(x, list) for x in
                                                                                 v.values()) for v in left.values())):
                raise SpecError(f"{path}: `left_out` maps a scale to the rows and columns it leaves to another, e.g. "
                                f"{{default: {{rows: [\"Wq (mnli)\"], columns: [200, 500]}}}}")
        ours = doc.get("ours") or {}
        for scale, labels in (ours.get("leave_out_at_scale") or {}).items():
            if unknown := sorted(set(labels or []) - {row_label(row) for row in ours.get("rows") or []}):
                raise SpecError(f"{path}: ours.leave_out_at_scale.{scale} names rows ours does not have: {unknown}")
        tables[name] = {**doc, "table": name, "file": path.name}
        # `checks:` repeat a claim's comparison under a changed setting (e.g. a longer budget): evaluated as claims,
        # reported apart from them (role "check") and not counted among the lecture's claims
        for key, role in (("claims", "claim"), ("checks", "check")):
            claims += [{**claim, "role": role, "file": path.name, "check": _own_table(claim.get("check"), name)}
                       for claim in doc.get(key) or []]
    _check_ids(claims)
    return tables, claims


def _check_ids(claims: list[dict]) -> None:
    """Claim and check ids are unique, and a check's `of` names the claim whose comparison it repeats."""
    ids = [claim.get("id") for claim in claims]
    if dupes := sorted({i for i in ids if ids.count(i) > 1}, key=str):
        raise SpecError(f"claim and check ids must be unique: {dupes} appear more than once")
    lecture = {claim.get("id") for claim in claims if claim["role"] == "claim"}
    for check in claims:
        if check["role"] == "check" and check.get("of") not in lecture:
            raise SpecError(f"experiments/{check['file']}: check {check.get('id')} needs `of`, the id of the claim "
                            f"whose comparison it repeats, not {check.get('of')!r}")


def scale_note(item: dict, scale: str) -> list[str]:
    """What a table or claim says about its measurement at this scale (`scale_notes`, e.g. a row left to
    scale=gpu), as Markdown lines."""
    note = (item.get("scale_notes") or {}).get(scale)
    return [f"At scale `{scale}`: {note}", ""] if note else []


def at_scale(spec: dict, scale: str | None) -> dict:
    """The spec as it reads records of one scale: `ours.where_at_scale[scale]` merged into `ours.where` (e.g.
    e2e_main at the default scale: only its runs tested on every MR), and the rows of `ours.leave_out_at_scale[scale]`
    left out of ours (rows that scale never runs: a line of dashes says nothing)."""
    ours = spec.get("ours") or {}
    extra = (ours.get("where_at_scale") or {}).get(scale)
    left_out = set((ours.get("leave_out_at_scale") or {}).get(scale) or ())
    if not extra and not left_out:
        return spec
    rows = [row for row in ours.get("rows") or [] if row_label(row) not in left_out]
    return {**spec, "ours": {**ours, "where": {**ours.get("where", {}), **(extra or {})}, "rows": rows}}


def _own_table(check, name: str):
    """A claim checks its own file's table unless its `check` names another."""
    if isinstance(check, list):
        return [_own_table(c, name) for c in check]
    return {"table": name, **check} if isinstance(check, dict) else check


def spec_of(experiment: str) -> dict | None:
    """The table spec of one experiment (`experiments/<experiment>.yaml`), or None when it has none."""
    path = specs_dir() / f"{experiment}.yaml"
    if not path.exists():
        return None
    return load_specs_file(path)


def load_specs_file(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    return {**doc, "table": path.stem, "file": path.name}


def experiments_of(spec: dict) -> list[str]:
    """The experiments whose records fill a table: `ours.experiment` (one, or the experiments of one setting that
    share runs, conf/setting/), else the table's own."""
    experiment = (spec.get("ours") or {}).get("experiment") or spec["table"]
    return [experiment] if isinstance(experiment, str) else list(experiment)


def row_label(row: dict) -> str:
    """A row's name in the rendered table and in claims: `method`, or `method (task)` when the row has a task."""
    return f"{row['method']} ({row['task']})" if row.get("task") else str(row["method"])


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


def first(key: str, *specs: dict, default=None):
    """The first non-null `key` of `specs` (a column's setting over its row's over the table's)."""
    return next((s[key] for s in specs if s.get(key) is not None), default)


def column_spec(ours: dict, column) -> dict:
    return {str(k): v for k, v in (ours.get("columns") or {}).items()}.get(str(column), {})


def cell_where(ours: dict, row: dict, column) -> dict:
    """What a record must match to fill the cell (row, column)."""
    where = {**ours.get("where", {}), **row.get("where", {}), **column_spec(ours, column).get("where", {})}
    if ours.get("column_key"):
        where[ours["column_key"]] = column
    return where


def cells_of(record: dict, spec: dict) -> list[tuple[str, object]]:
    """The cells (row label, column) of `spec`'s table that a run fills, given its record (or `{"config": ...}` of a
    run that has not finished): every (row, column) of `ours` whose `where` it matches."""
    ours = spec.get("ours") or {}
    columns = spec.get("metrics") or spec["columns"]
    return [(row_label(row), column) for row in ours.get("rows") or [] for column in columns
            if matches(record, cell_where(ours, row, column))]
