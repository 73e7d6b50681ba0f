"""The report: the lecture's tables with the papers' numbers beside ours, and the claims ledger.

`experiments/<experiment>.yaml` (spec.py) is the only mapping from run records to table cells; cells.py fills the
cells, render.py writes Markdown, LaTeX and CSV, claims.py judges the claims and ledger.py writes
them down. Three outputs, one path:
- `python -m peft_repro.report` (`write_report`): every table and the claims, in a new version folder
  `<results_dir>/reports/<scale>/<YYYYmmdd-HHMMSS>_<commit>[-dirty]/` (tables.md, tables.tex, claims.md, claims.csv,
  and costs.md: what the runs cost, from their records' times);
- the end-of-sweep table (`TableCallback`, `write_experiment_table`): one experiment's table and its runs under
  `<results_dir>/tables/<experiment>/`;
- the figures' data (`peft_repro.figures.table_frame`) and the W&B `table_row`/`table_col` (`spec.cells_of`).
A rerun that changes nothing writes no new version.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..results import git_state, write_atomic
from .claims import evaluate
from .cells import build_tables
from .costs import render_costs
from .ledger import render_ledger
from .render import lr_noise_summary, render_latex, render_markdown, render_runs
from .spec import SpecError, load_specs, spec_of


def version_name() -> str:
    git = git_state()
    return f"{time.strftime('%Y%m%d-%H%M%S')}_{git['commit']}{'-dirty' if git['dirty'] else ''}"


def header(results_dir: Path) -> str:
    """The first line of a rendered Markdown file (ignored when comparing versions)."""
    git = git_state()
    try:  # a results folder inside the repository is named relative to it: no machine paths in committed files
        from ..paths import repo_root
        shown = Path(results_dir).resolve().relative_to(repo_root().resolve()) or Path(".")
    except ValueError:
        shown = results_dir
    return (f"<!-- rendered {time.strftime('%Y-%m-%d %H:%M:%S')} at commit {git['commit']}"
            f"{' (dirty)' if git['dirty'] else ''} from {shown} -->\n")


def write_report(results_dir: Path, scale: str, out: Path | None = None) -> list[Path]:
    """Render every table and the claims into a new version folder; returns the files written (or those of the newest
    version, when nothing changed)."""
    specs, claims = load_specs()
    tables = build_tables(specs, results_dir, scale)
    claims_md, claims_csv = render_ledger(evaluate(claims, tables, scale), scale)
    top = header(results_dir)
    lr_line = lr_noise_summary(tables)
    files = {"tables.md": top + f"# The lecture's tables: papers and ours (scale `{scale}`)\n\n"
                                + (lr_line + "\n\n" if lr_line else "") + render_markdown(tables, scale),
             "tables.tex": render_latex(tables, scale),
             "claims.md": top + claims_md, "claims.csv": claims_csv,
             "costs.md": top + render_costs(results_dir, scale)}
    return write_version(Path(out or Path(results_dir) / "reports" / scale), files)


def write_experiment_table(results_dir: Path, experiment: str, scale: str) -> Path | None:
    """One experiment's table (its spec's, as in the report) and every run in it: a new version pair
    `<results_dir>/tables/<experiment>/<experiment>_<scale>_<version>.md` and `.csv` (the runs), unless the newest
    pair says the same; returns the Markdown path (None when the experiment has no spec)."""
    spec = spec_of(experiment)
    if spec is None:
        return None
    tables = build_tables({experiment: spec}, results_dir, scale)
    runs_md, runs_csv = render_runs(tables[experiment])
    markdown = (header(results_dir) + f"# {experiment}, scale `{scale}`\n\n" + render_markdown(tables, scale)
                + "\n## Runs\n\n" + "\n".join(runs_md) + "\n")
    folder = Path(results_dir) / "tables" / experiment
    versions = sorted(folder.glob(f"{experiment}_{scale}_*.md"))
    if versions and _same({"md": versions[-1].read_bytes().decode(),
                           "csv": versions[-1].with_suffix(".csv").read_bytes().decode()
                           if versions[-1].with_suffix(".csv").exists() else None},
                          {"md": markdown, "csv": runs_csv}):
        return versions[-1]
    md_path = folder / f"{experiment}_{scale}_{version_name()}.md"
    write_atomic(md_path, markdown)
    write_atomic(md_path.with_suffix(".csv"), runs_csv)
    return md_path


def _same(old: dict[str, str | None], new: dict[str, str]) -> bool:
    """Whether rendered files say the same, the first line of Markdown files (time, commit, results folder) aside."""
    def body(name: str, text: str | None) -> str | None:
        return text.split("\n", 1)[-1] if text is not None and name.endswith("md") else text

    return all(body(name, old.get(name)) == body(name, text) for name, text in new.items())


def write_version(parent: Path, files: dict[str, str]) -> list[Path]:
    """`files` into a new `<YYYYmmdd-HHMMSS>_<commit>[-dirty]` folder under `parent`, unless the newest folder there
    says the same."""
    versions = sorted(p for p in parent.glob("*_*") if p.is_dir()) if parent.is_dir() else []
    # bytes, then decoded: the CSV ends lines in \r\n
    if versions and _same({name: (versions[-1] / name).read_bytes().decode() if (versions[-1] / name).exists()
                           else None for name in files}, files):
        return [versions[-1] / name for name in files]
    folder, n = parent / version_name(), 1
    while folder.exists():
        n += 1
        folder = parent / f"{version_name()}-{n}"
    folder.mkdir(parents=True)  # only once everything rendered
    for name, text in files.items():
        write_atomic(folder / name, text)
    return [folder / name for name in files]


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    Callback = object


class TableCallback(Callback):
    """Hydra callback: after a multirun, render the experiment's table from all of its records."""

    def on_multirun_end(self, config, **kwargs) -> None:
        from ..results import MalformedRecord

        try:
            path = write_experiment_table(Path(config.results_dir), config.experiment, config.scale_name)
        except (SpecError, MalformedRecord) as err:  # Hydra would turn an exception into a warning and exit 0
            print(f"error: no table written: {' '.join(str(err).split())}", file=sys.stderr)
            sys.exit(2)  # SystemExit passes Hydra's callback guard: the sweep fails, its records stay
        if path is not None:
            print(f"table written: {path}")
