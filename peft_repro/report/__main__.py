"""`python -m peft_repro.report [--results-dir DIR] [--scale default|smoke|paper] [--out DIR]`: every table and the
claims ledger from the run records, in a new version folder (see peft_repro/report/__init__.py)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..paths import results_dir as default_results_dir
from ..paths import writable_folder
from ..results import MalformedRecord
from . import write_report
from .spec import SpecError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peft_repro.report", description=__doc__.split("\n\n")[0])
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
        writable_folder(args.out or Path(results_dir) / "reports" / args.scale, "--out")  # before the rendering
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
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
