"""XSum (Narayan et al. 2018): BBC article -> one-sentence summary, scored by ROUGE-1/2/L.

Offline there are only 1,910 articles, all from the official *test* split (../shared/data/xsum/PROVENANCE.md).
We use its documented disjoint partition: the 910 `llm_decoding` rows are the training pool (a fixed 100 of them
held out as dev for model selection) and the 1,000 `Lookback-Lens` rows are the evaluation set. Every table that
uses it must say "trained on XSum test-split articles"; users with the hub get the real splits (`hub_fallback`).
"""
from __future__ import annotations


from .base import EvalItem, Example, Task, read_jsonl, require, subset

POOL, EVAL = "llm_decoding", "Lookback-Lens"
HUB_SPLIT = {"train": "train", "dev": "validation", "test": "test"}
HELD_OUT_SEED = 1234


class XSumTask(Task):
    kind = "generation"
    primary_metric = "rouge2"
    document_field = "document"

    def rows(self, split: str) -> list[tuple[str, str]]:
        def local():
            path = require(self.root / self.cfg.folder / "test.jsonl", "XSum offline test-split file")
            rows = read_jsonl(path, ("document", "summary", "source_repo"))
            pool = [(r["document"], r["summary"]) for r in rows if r["source_repo"] == POOL]
            if split == "test":
                return [(r["document"], r["summary"]) for r in rows if r["source_repo"] == EVAL]
            dev = set(subset(list(range(len(pool))), self.cfg.dev_size, HELD_OUT_SEED))
            return [row for i, row in enumerate(pool) if (i in dev) == (split == "dev")]

        def hub():
            import datasets

            ds = datasets.load_dataset("EdinburghNLP/xsum", split=HUB_SPLIT[split])
            return [(r["document"], r["summary"]) for r in ds]

        return self.load(local, hub)

    def source(self, document: str) -> tuple[str, tuple[int, int]]:
        return self.render(document=document)

    def example(self, row) -> Example:
        document, summary = row
        text, span = self.source(document)
        return Example(text, " " + summary.strip(), span=span)

    def items(self, rows) -> list[EvalItem]:
        return [EvalItem(text, [summary.strip()], span=span) for text, span, summary in
                ((*self.source(doc), summary) for doc, summary in rows)]

    def score(self, predictions: list[str], items: list[EvalItem], full: bool = True) -> dict:
        from ..metrics.rouge import score_rouge

        return score_rouge(predictions, [it.references[0] for it in items])

    @classmethod
    def item_stats(cls, predictions: list[str], items: list[EvalItem]) -> list[list[float]]:
        from ..metrics.rouge import item_rouge

        return [[s[cls.primary_metric], 1] for s in item_rouge(predictions, [it.references[0] for it in items])]
