"""Execute the jupytext notebooks in notebooks/ and write rendered copies with outputs.

    python scripts/render_notebooks.py                      # every notebook, default scale, results/
    python scripts/render_notebooks.py --scale smoke        # smoke records (results/smoke)
    python scripts/render_notebooks.py lora_heatmap --results /some/results --out /tmp/rendered

Each `notebooks/<name>.py` (percent format) is read with jupytext, run top to bottom in a fresh `python3` kernel
with `PEFT_REPRO_RESULTS` / `PEFT_REPRO_SCALE` set, and written with its outputs to `notebooks/rendered/<name>.ipynb`
(the figures themselves land in `<results>/figures/<scale>/`). Nothing is trained: the notebooks read run records.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("*.py"))
    if names:
        wanted = {Path(n).stem for n in names}
        paths = [p for p in paths if p.stem in wanted]
        missing = wanted - {p.stem for p in paths}
        if missing:
            raise SystemExit(f"no notebook named {', '.join(sorted(missing))} in {NOTEBOOKS}")
    return paths


def execute(path: Path, results_dir: str | os.PathLike | None = None, scale: str | None = None,
            timeout: int = 300):
    """Run one jupytext notebook in a fresh kernel; returns the executed nbformat notebook (raises on a failing cell).

    The kernel inherits this process's environment, with PEFT_REPRO_RESULTS / PEFT_REPRO_SCALE set when given, and
    imports `peft_repro` from this checkout (first on PYTHONPATH: a worktree is not the installed copy).
    """
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(path)
    saved = {k: os.environ.get(k) for k in ("PEFT_REPRO_RESULTS", "PEFT_REPRO_SCALE", "MPLBACKEND", "PYTHONPATH")}
    os.environ["MPLBACKEND"] = "Agg"
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [saved["PYTHONPATH"]])])
    if results_dir is not None:
        os.environ["PEFT_REPRO_RESULTS"] = str(results_dir)
    if scale is not None:
        os.environ["PEFT_REPRO_SCALE"] = scale
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook


def main(argv: list[str] | None = None) -> int:
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all in notebooks/)")
    parser.add_argument("--scale", default=None, help="PEFT_REPRO_SCALE (default: the environment's, else default)")
    parser.add_argument("--results", default=None, help="PEFT_REPRO_RESULTS (default: results/, or results/smoke)")
    parser.add_argument("--out", default=str(NOTEBOOKS / "rendered"), help="folder for the rendered .ipynb")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in notebook_paths(args.names):
        started = time.time()
        notebook = execute(path, args.results, args.scale)
        target = out / f"{path.stem}.ipynb"
        nbformat.write(notebook, target)
        print(f"{path.name} -> {target} ({time.time() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
