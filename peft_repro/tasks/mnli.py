"""MultiNLI as label-word scoring.

Each label is a word the LM scores after the prompt; the prediction is the label whose word gets the highest
log-probability, and training is the LM loss on that word. We score rather than free-generate because it is
constrained greedy decoding: the output is always a valid label, one forward pass per example, no parsing.

Offline there are 34,290 of the 392,702 train pairs (../shared/data/mnli/PROVENANCE.md). A fixed 2,000 of them are
held out as the dev split for model selection; dev_matched is reported as the test number, as the LoRA paper does.
"""
from __future__ import annotations


from .base import EvalItem, Example, Task, read_jsonl, require, subset

LABELS = ["entailment", "neutral", "contradiction"]  # GLUE's label order
FILES = {"train": "train_subset.jsonl.gz", "test": "dev_matched.jsonl", "test_mismatched": "dev_mismatched.jsonl"}
HUB_SPLIT = {"train": "train", "test": "validation_matched", "test_mismatched": "validation_mismatched"}
HELD_OUT_SEED = 1234


class MNLITask(Task):
    kind = "classification"
    primary_metric = "accuracy"
    document_field = "premise"

    def __init__(self, cfg, root: str | None = None):
        super().__init__(cfg, root)
        self.label_words = [cfg.label_words[name] for name in LABELS]

    def _read(self, file_split: str) -> list[tuple[str, str, int]]:
        def local():
            path = require(self.root / self.cfg.folder / FILES[file_split], f"MNLI {file_split} file")
            rows = read_jsonl(path, ("premise", "hypothesis", "label"))
            if bad := next((n for n, r in enumerate(rows, 1) if r["label"] not in LABELS), None):
                raise ValueError(f"{path}: record {bad}: label {rows[bad - 1]['label']!r} is not one of {LABELS}")
            return [(r["premise"], r["hypothesis"], LABELS.index(r["label"])) for r in rows]

        def hub():
            import datasets

            ds = datasets.load_dataset("nyu-mll/glue", "mnli", split=HUB_SPLIT[file_split])
            return [(r["premise"], r["hypothesis"], r["label"]) for r in ds if r["label"] >= 0]

        return self.load(local, hub)

    def rows(self, split: str) -> list[tuple[str, str, int]]:
        if split in ("train", "dev"):  # dev is a fixed held-out part of train, disjoint from what we train on
            rows = self._read("train")
            dev = set(subset(list(range(len(rows))), self.cfg.dev_size, HELD_OUT_SEED))
            return [r for i, r in enumerate(rows) if (i in dev) == (split == "dev")]
        return self._read(split)

    def source(self, premise: str, hypothesis: str) -> tuple[str, tuple[int, int]]:
        return self.render(premise=premise, hypothesis=hypothesis.strip())

    def example(self, row) -> Example:
        premise, hypothesis, label = row
        text, span = self.source(premise, hypothesis)
        return Example(text, self.label_words[label], label, span)

    def items(self, rows) -> list[EvalItem]:
        return [EvalItem(text, label=y, span=span) for text, span, y in ((*self.source(p, h), y) for p, h, y in rows)]

    def score(self, predictions: list[int], items: list[EvalItem], full: bool = True) -> dict:
        from ..metrics.classification import accuracy

        return {"accuracy": accuracy(predictions, [it.label for it in items])}

    @classmethod
    def item_stats(cls, predictions: list[int], items: list[EvalItem]) -> list[list[float]]:
        return [[float(p == it.label), 1] for p, it in zip(predictions, items)]
