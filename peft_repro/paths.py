"""Where files are: the one place that decides the repository, data, results and cache folders.

Hydra runs read them through the config (`data_root`, `results_dir`, `model.cache_dir`, whose defaults come from the
environment variables below); the report, the figures and the data loaders call these functions.
- data: `data_root=...`, else `PEFT_REPRO_DATA_ROOT`, else `<repo>/../shared/data`;
- results: `results_dir=...`, else `PEFT_REPRO_RESULTS`, else `<repo>/results` (`<repo>/results/smoke` for the smoke
  scale, where smoke runs write);
- converted models: `model.cache_dir`, default `~/.cache/peft_repro`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def data_root(configured: str | None = None) -> Path:
    root = configured or os.environ.get("PEFT_REPRO_DATA_ROOT") or repo_root().parent / "shared" / "data"
    return Path(root).expanduser()


def results_dir(scale: str = "default", configured: str | None = None) -> Path:
    if configured or os.environ.get("PEFT_REPRO_RESULTS"):
        return Path(configured or os.environ["PEFT_REPRO_RESULTS"]).expanduser()
    return repo_root() / "results" / ("smoke" if scale == "smoke" else "")


def writable_folder(path: Path, what: str) -> Path:
    """`path`, checked to be a folder this process can write, or can make, before any work whose output would have
    nowhere to go: a ValueError naming `what` (e.g. "results_dir") otherwise. Makes nothing."""
    try:
        path = Path(path).expanduser().absolute()
        existing = next(p for p in (path, *path.parents) if os.path.lexists(p))
        if existing.is_symlink() and not existing.exists():
            raise ValueError(f"{what} {path} is " + ("a broken link" if existing == path
                                                     else f"under a broken link, {existing}"))
        if not existing.is_dir():
            raise ValueError(f"{what} {path} is {'a file' if existing == path else f'under a file, {existing}'}, "
                             "not a folder")
        tempfile.TemporaryFile(dir=existing).close()  # a real write: os.access says yes to root, /proc included
    except (OSError, RuntimeError) as err:  # RuntimeError: ~user that does not exist
        raise ValueError(f"{what} {path} is not writable: {getattr(err, 'strerror', None) or err}") from None
    return path
