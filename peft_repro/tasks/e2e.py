"""E2E NLG (Novikova et al. 2017): meaning representation -> restaurant description, scored by e2e-metrics."""
from __future__ import annotations

from .base import EvalItem, Example, Task, read_csv, require

FILES = {"train": "trainset.csv", "dev": "devset.csv", "test": "testset_w_refs.csv"}
HUB_ID = "GEM/e2e_nlg"  # fields meaning_representation / target; splits train / validation / test
HUB_SPLIT = {"train": "train", "dev": "validation", "test": "test"}


class E2ETask(Task):
    kind = "generation"
    primary_metric = "BLEU"
    document_field = "mr"

    def rows(self, split: str) -> list[tuple[str, str]]:
        def local():
            path = require(self.root / self.cfg.folder / FILES[split], f"E2E {split} split")
            return [(r["mr"], r["ref"]) for r in read_csv(path, ("mr", "ref"))]

        def hub():
            import datasets

            ds = datasets.load_dataset(HUB_ID, split=HUB_SPLIT[split])
            if split == "train":
                return [(r["meaning_representation"], r["target"]) for r in ds]
            return [(r["meaning_representation"], ref) for r in ds for ref in r["references"]]

        return self.load(local, hub)

    def source(self, mr: str) -> tuple[str, tuple[int, int]]:
        return self.render(mr=mr)

    def example(self, row) -> Example:
        mr, ref = row
        text, span = self.source(mr)
        return Example(text, ref, span=span)

    def items(self, rows) -> list[EvalItem]:
        """One item per distinct MR (first-occurrence order) holding all of its references."""
        grouped: dict[str, list[str]] = {}
        for mr, ref in rows:
            grouped.setdefault(mr, []).append(ref)
        return [EvalItem(text, refs, span=span) for text, span, refs in
                ((*self.source(mr), refs) for mr, refs in grouped.items())]

    def score(self, predictions: list[str], items: list[EvalItem], full: bool = True) -> dict:
        from ..metrics.e2e import score_e2e

        metrics = self.cfg.get("test_metrics") if full else ("BLEU",)  # dev selection: BLEU only
        return score_e2e(predictions, [it.references for it in items], metrics=metrics)

    @classmethod
    def item_stats(cls, predictions: list[str], items: list[EvalItem]) -> list[list[float]]:
        from ..metrics._mteval import item_counts

        return item_counts(predictions, [it.references for it in items], "python")  # score_e2e's default mode

    @staticmethod
    def metric_from_stats(sums):
        from ..metrics._mteval import bleu_from_counts

        return bleu_from_counts(sums, "python")
