"""XSum ROUGE-1/2/L F1 with Google's rouge-score, as the prefix-tuning paper computed it.

The prefix-tuning code scores XSum with ``calculate_rouge`` from its ``seq2seq/utils.py`` (the Hugging Face seq2seq
example of late 2020): ``rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)``, F-measure.
So ROUGE-L here is ``rougeL``, the LCS over the whole summary, not ``rougeLsum`` (summary-level LCS over
newline-split sentences, which that example only gained later). XSum references are single sentences, so the
two rarely differ; ``rougeL`` is what the paper's numbers mean. rouge-score's tokenizer lowercases and drops
punctuation; stemming is Porter.

The corpus score is the mean of per-example F1. The original reported, per evaluation batch, the median of
bootstrap resamples of that mean (random, close to the mean) and averaged those over batches.
"""
from __future__ import annotations

from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def score_rouge(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Mean F1 (a fraction) of ROUGE-1, ROUGE-2 and ROUGE-L over examples, one reference each."""
    per_item = item_rouge(hypotheses, references)
    return {name: sum(scores[name] for scores in per_item) / len(per_item) for name in ROUGE_TYPES}


def item_rouge(hypotheses: list[str], references: list[str]) -> list[dict[str, float]]:
    """F1 of ROUGE-1, ROUGE-2 and ROUGE-L of each example."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not hypotheses:
        raise ValueError("nothing to score")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    # rouge-score takes (target, prediction)
    return [{name: s.fmeasure for name, s in scorer.score(ref, hyp).items()} for hyp, ref in zip(hypotheses, references)]
