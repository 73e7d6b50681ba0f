"""What every task shares: examples and evaluation items, reading the local data files, the `Task` interface."""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..paths import data_root

log = logging.getLogger(__name__)


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


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the HF hub answers (offline: no, at once, instead of the `datasets` library's retries)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataMissing(f"{what} not found: {path} (set data_root=... or PEFT_REPRO_DATA_ROOT, "
                          f"or allow task.hub_fallback=true where the HF hub is reachable)")
    return path


def _complete(path: Path, data: bytes) -> None:
    if data and not data.endswith(b"\n"):  # every shipped data file ends with a newline: a cut file does not
        line = data.count(b"\n") + 1
        raise ValueError(f"{path}:{line}: the file ends in the middle of a line (truncated?)")


def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict]:
    """Rows of a CSV file with a header; every row needs the header's number of fields and the `columns` filled.
    Errors name the file and line."""
    import csv
    import io

    data = path.read_bytes()
    _complete(path, data)
    reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
    if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
        raise ValueError(f"{path}: expected columns {','.join(columns)}, found {reader.fieldnames}")
    rows = []
    for row in reader:
        if None in row or None in row.values() or any(not row[c].strip() for c in columns):
            raise ValueError(f"{path}:{reader.line_num}: expected {len(reader.fieldnames)} fields with "
                             f"{', '.join(columns)} filled, found {[v for k, v in row.items() if k is not None]}")
        rows.append(row)
    return rows


def read_jsonl(path: Path, keys: tuple[str, ...]) -> list[dict]:
    """Records of a JSON-lines file (plain or .gz), each with `keys`; errors name the file and line."""
    import gzip
    import json

    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    _complete(path, data)
    rows = []
    for line_no, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line_no}: not a JSON record ({err.msg})") from None
        if missing := [k for k in keys if row.get(k) in (None, "")]:
            raise ValueError(f"{path}:{line_no}: missing {', '.join(missing)}")
        rows.append(row)
    return rows


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
        """Local files first. The hub when they are missing and `hub_fallback` allows it: `true`, or `auto` (the
        default) when there is no local data root at all and the hub answers (a fresh clone, with internet)."""
        try:
            return loader_local()
        except DataMissing as missing:
            mode = self.cfg.get("hub_fallback", "auto")
            auto = mode == "auto" and not self.root.exists()
            if not (mode is True or auto) or (auto and not hub_reachable()):
                raise
            if auto:
                log.warning("no local data root at %s: loading %s from the HF hub", self.root, self.cfg.name)
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
        """A record's `test_items`: each item's id and metric statistics (None when the task has none), and how many
        items the test split holds (`split_size`: the claims' `needed` draws no more than these)."""
        stats = self.item_stats(predictions, items)
        return None if stats is None else {"metric": self.primary_metric, "ids": item_ids(items), "stats": stats,
                                           "split_size": len(self.items(self.rows("test")))}

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

    def fingerprint(self) -> str:
        """A hash of the data a run uses (training pairs, dev and test items): a run on other data files is another
        run, never "already done" (`results.find_done`)."""
        digest = hashlib.sha1()
        for ex in self.train_examples():
            digest.update(f"{ex.source}\x1f{ex.target}\x1e".encode())
        for split in ("dev", "test"):
            for it in self.eval_items(split):
                digest.update(f"{split}\x1f{it.source}\x1f{it.references}\x1f{it.label}\x1e".encode())
        return digest.hexdigest()[:16]

    def eval_items(self, split: str) -> list[EvalItem]:
        rows = self._low_data("dev") if split == "dev" and self.cfg.get("low_data") else self.rows(split)
        return subset(self.items(rows), self.eval_size(split), self.cfg.get("subset_seed", 0))


def item_id(item: EvalItem) -> str:
    """A short stable name of an evaluation item (its source text), to pair items across runs."""
    return hashlib.sha1(item.source.encode()).hexdigest()[:12]


def item_ids(items: list[EvalItem]) -> list[str]:
    """`item_id` of each item, the n-th repeat of a source (n >= 2) suffixed "#n": WikiSQL's test split asks 14
    questions twice, and the bootstrap pairs runs by these ids, which must be unique. Runs on the same items in the
    same order get the same ids; an id of a source that does not repeat is its `item_id`. A capped subset holding
    only a later copy names it as the first: alike for 13 of WikiSQL's 14 repeats, whose references are the same."""
    seen: dict[str, int] = {}
    ids = []
    for item in items:
        base = item_id(item)
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return ids
