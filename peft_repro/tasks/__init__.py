"""Tasks: where the data lives, how an example becomes (source, target) text, and which metric scores it.

Local copies are read from the data root (Hydra key `data_root`, else env `PEFT_REPRO_DATA_ROOT`, else
`<repo>/../shared/data`); a task whose files are missing falls back to the HF hub when `hub_fallback` is on, and
otherwise stops with an error that names the missing path.
"""
from __future__ import annotations

from .base import DataMissing, EvalItem, Example, Task, item_id, item_ids, read_csv, read_jsonl, require, subset
from .e2e import E2ETask
from .mnli import MNLITask
from .wikisql import WikiSQLTask
from .xsum import XSumTask

__all__ = ["DataMissing", "EvalItem", "Example", "Task", "build_task", "item_id", "item_ids", "read_csv", "read_jsonl",
           "require", "subset", "task_classes"]


def task_classes() -> dict[str, type[Task]]:
    return {"e2e": E2ETask, "mnli": MNLITask, "xsum": XSumTask, "wikisql": WikiSQLTask}


def build_task(cfg, root: str | None = None) -> Task:
    tasks = task_classes()
    if cfg.name not in tasks:
        raise ValueError(f"unknown task {cfg.name!r}; known: {sorted(tasks)}")
    return tasks[cfg.name](cfg, root)
