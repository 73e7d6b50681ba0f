"""Tasks: where the data lives, how an example becomes (source, target) text, and which metric scores it.

Local copies are read from the data root (Hydra key `data_root`, else env `PEFT_REPRO_DATA_ROOT`, else
`<repo>/../shared/data`); a task whose files are missing falls back to the HF hub when `hub_fallback` is on, and
otherwise stops with an error that names the missing path.
"""
from __future__ import annotations

import functools
import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models import repo_root


@dataclass
class Example:
    """One training pair; `target` is one reference (generation) or the label word (classification)."""
    source: str
    target: str
    label: int | None = None
    span: tuple[int, int] | None = None  # where the task's document sits in `source`: the part truncation may cut


@dataclass
class EvalItem:
    """One evaluation input with all its references (E2E groups the references of an MR) or its label."""
    source: str
    references: list[str] = field(default_factory=list)
    label: int | None = None
    span: tuple[int, int] | None = None


class DataMissing(FileNotFoundError):
    pass


def data_root(configured: str | None = None) -> Path:
    root = configured or os.environ.get("PEFT_REPRO_DATA_ROOT") or repo_root().parent / "shared" / "data"
    return Path(root).expanduser()


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataMissing(f"{what} not found: {path} (set data_root=... or PEFT_REPRO_DATA_ROOT, "
                          f"or allow task.hub_fallback=true where the HF hub is reachable)")
    return path


def subset(items: list, n: int | None, seed: int) -> list:
    """A fixed random subset of size n (all items if n is None or too large), in the original order."""
    if n is None or n >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


class Task:
    """Base class. A subclass reads raw rows per split (`rows`), turns a row into a training example (`example`)
    and rows into evaluation items (`items`, E2E groups references per MR), and scores predictions (`score`).

    Training rows are a fixed random subset (`max_train_examples`) or, for the low-data experiments, a committed
    subset of ids (`low_data: {size, subset}`, see `low_data.py`), whose dev rows then replace the dev split.
    """

    kind = "generation"          # or "classification"
    primary_metric = ""
    document_field = ""          # the template field that an over-long source loses tokens from (never the cue)
    label_words: list[str] = []  # classification: the words the LM scores, in label order

    def __init__(self, cfg, root: str | None = None):
        self.cfg = cfg
        self.root = data_root(root)
        self.rows = functools.lru_cache(maxsize=None)(self.rows)  # files are read once per task object

    def load(self, loader_local, loader_hub):
        """Local files first; the hub only if they are missing and the config allows it."""
        try:
            return loader_local()
        except DataMissing as missing:
            if not self.cfg.get("hub_fallback", False):
                raise
            try:
                return loader_hub()
            except Exception as hub_error:  # no network, no `datasets` cache: report both causes in one line
                raise DataMissing(f"{missing}; the hub fallback failed too: {hub_error}") from hub_error

    def eval_size(self, split: str) -> int | None:
        """How many evaluation items to keep (a fixed subset); dev may be smaller than test, for speed."""
        if split == "dev" and self.cfg.get("max_dev_examples") is not None:
            return self.cfg.max_dev_examples
        return self.cfg.get("max_eval_examples")

    def render(self, **values) -> tuple[str, tuple[int, int]]:
        """The source text from `source_template`, and the character span of `document_field` inside it."""
        marker = "\x00"
        shell = self.cfg.source_template.format(**{**values, self.document_field: marker})
        start = shell.index(marker)
        document = values[self.document_field]
        return shell.replace(marker, document, 1), (start, start + len(document))

    def rows(self, split: str) -> list:
        raise NotImplementedError

    def example(self, row) -> Example:
        raise NotImplementedError

    def items(self, rows: list) -> list[EvalItem]:
        raise NotImplementedError

    def score(self, predictions: list, items: list[EvalItem], full: bool = True) -> dict:
        raise NotImplementedError

    @classmethod
    def item_stats(cls, predictions: list, items: list[EvalItem]) -> list[list[float]] | None:
        """Per item, additive statistics of `primary_metric`: any resample of the items, summed row-wise and put
        through `metric_from_stats`, scores as that resample would (the claims' bootstrap over test items).
        [score, 1] for metrics that are means of per-item scores; corpus metrics (BLEU) override both. None: the
        task has none (its claims resample runs only)."""
        return None

    def test_items(self, predictions: list, items: list[EvalItem]) -> dict | None:
        """A record's `test_items`: each item's id and metric statistics (None when the task has none)."""
        stats = self.item_stats(predictions, items)
        return None if stats is None else {"metric": self.primary_metric, "ids": [item_id(it) for it in items],
                                           "stats": stats}

    @staticmethod
    def metric_from_stats(sums: np.ndarray) -> np.ndarray:
        return sums[..., 0] / sums[..., 1]

    def _low_data(self, part: str) -> list:
        from .low_data import subset_ids

        pool = self.rows("train")
        ids = subset_ids(self.cfg.name, len(pool), self.cfg.low_data.size, self.cfg.low_data.subset)
        return [pool[i] for i in ids[part]]

    def train_examples(self) -> list[Example]:
        if self.cfg.get("low_data"):
            rows = self._low_data("train")
        else:
            rows = subset(self.rows("train"), self.cfg.get("max_train_examples"), self.cfg.get("subset_seed", 0))
        return [self.example(r) for r in rows]

    def eval_items(self, split: str) -> list[EvalItem]:
        rows = self._low_data("dev") if split == "dev" and self.cfg.get("low_data") else self.rows(split)
        return subset(self.items(rows), self.eval_size(split), self.cfg.get("subset_seed", 0))


def item_id(item: EvalItem) -> str:
    """A short stable name of an evaluation item (its source text), to pair items across runs."""
    return hashlib.sha1(item.source.encode()).hexdigest()[:12]


def task_classes() -> dict[str, type[Task]]:
    from .e2e import E2ETask
    from .mnli import MNLITask
    from .wikisql import WikiSQLTask
    from .xsum import XSumTask

    return {"e2e": E2ETask, "mnli": MNLITask, "xsum": XSumTask, "wikisql": WikiSQLTask}


def build_task(cfg, root: str | None = None) -> Task:
    tasks = task_classes()
    if cfg.name not in tasks:
        raise ValueError(f"unknown task {cfg.name!r}; known: {sorted(tasks)}")
    return tasks[cfg.name](cfg, root)
