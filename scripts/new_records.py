"""The run records git does not know yet (new or changed under results/runs), one line each: what finished since the
last commit, to read before committing records by path.

    python scripts/new_records.py            # the repository's results/
    python scripts/new_records.py --all      # every record, committed or not (a scale's whole state)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from peft_repro.results import load_json

REPO = Path(__file__).resolve().parents[1]
RAW = ("NIST", "CIDEr")  # metrics not in [0, 1]: shown as recorded; the rest x100


def changed(results: Path) -> list[tuple[str, Path]]:
    """(git status code, path) of the record files under results/runs that are untracked or modified."""
    out = subprocess.run(["git", "status", "--porcelain", "-uall", "--", str(results / "runs")], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [(line[:2].strip(), REPO / line[3:].strip().strip('"')) for line in out.splitlines()
            if line.rstrip().endswith(".json")]


def line(status: str, path: Path) -> str:
    record = load_json(path)  # a cut or hand-edited record: an error naming its file
    cfg = record.get("config") or {}
    method, trainer, task = cfg.get("method") or {}, cfg.get("trainer") or {}, cfg.get("task") or {}
    setting = " ".join(f"{k}={method[k]}" for k in ("targets", "r", "num_virtual_tokens") if method.get(k) is not None)
    low = task.get("low_data") or {}
    test = record.get("test")
    scores = ("test " + " ".join(f"{k} {v if k in RAW else 100 * v:.2f}" for k, v in test.items()
                                 if isinstance(v, (int, float))) if test else "no test (a grid point)")
    dev = " ".join(f"{100 * v:.2f}" for v in (record.get("dev") or {}).values() if isinstance(v, (int, float)))
    where = f"({record.get('scale', '?')}, {task.get('name', '?')})"
    parts = [f"{status or '  ':2}", record.get("experiment", "?"), where, method.get("name", "?"), setting,
             f"seed {record.get('seed')} lr {trainer.get('lr')}",
             f"low-data {low.get('size')}/{low.get('subset')}" if low else "", f"[{record.get('status')}] {scores};",
             f"dev {dev or '–'};", f"{(record.get('wall_seconds') or 0) / 60:.1f} min"]
    return " ".join(part for part in parts if part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--all", action="store_true", help="every record, committed or not")
    args = parser.parse_args(argv)
    if not (args.results / "runs").is_dir():
        print(f"error: no records folder {args.results / 'runs'}", file=sys.stderr)
        return 2
    found = ([("", p) for p in sorted((args.results / "runs").glob("*/*/*.json"))] if args.all
             else changed(args.results))
    for status, path in found:
        print(line(status, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
