"""Corpus BLEU-4 and NIST-5 as e2e-metrics computes them, in its two modes.

``perl`` follows ``mteval-v13a-sig.pl`` (e2e-metrics' default); ``python`` follows ``metrics/pymteval.py``
(``measure_scores.py -p``, what the prefix-tuning and LoRA papers ran). Tokenization is mteval 13a, taken from
sacrebleu. The n-gram statistics are counted here because NIST needs the matched n-grams themselves, and the final
formulas are written out because sacrebleu's BLEU differs from mteval's when an order has no match or no n-gram,
and because ``-p`` counts n-grams its own way (``len - n + 1`` per output, negative for short outputs).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

MODES = ("python", "perl")
BLEU_N, NIST_N = 4, 5
NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2
_tokenize_13a = Tokenizer13a()
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def tokenize(text: str, mode: str) -> list[str]:
    """mteval 13a tokens, lowercased as each mode does it."""
    if mode == "perl":
        # Perl lowercases with tr/A-Z/a-z/ only, after its entity and <skipped> rules; an empty segment has no words
        return _tokenize_13a(text).translate(_ASCII_LOWER).split()
    # pymteval splits on ' ' (an empty output is one empty token) and lowercases with str.lower
    return [tok.lower() for tok in _tokenize_13a(text).split(" ")]


def ngram_counts(tokens: list[str], max_n: int) -> Counter:
    """Counts of all n-grams (as tuples) of orders 1..max_n."""
    counts = Counter()
    for n in range(1, max_n + 1):
        counts.update(zip(*(tokens[i:] for i in range(n))))
    return counts


@dataclass
class CorpusStats:
    """Everything BLEU and NIST need, accumulated over MRs."""

    mode: str
    hyp_lens: list[int] = field(default_factory=list)
    closest_ref_len: int = 0
    mean_ref_len: float = 0.0  # sum over MRs of the MR's mean reference length (pymteval's NIST)
    ref_words: int = 0
    n_refs: int = 0
    hits: list[Counter] = field(default_factory=list)  # per MR: clipped matches of each hypothesis n-gram
    ref_ngrams: Counter = field(default_factory=Counter)  # over all references, for NIST information

    def add(self, hyp: list[str], refs: list[list[str]]) -> None:
        hyp_counts = ngram_counts(hyp, NIST_N)
        ref_max = Counter()
        for ref in refs:
            counts = ngram_counts(ref, NIST_N)
            ref_max |= counts
            self.ref_ngrams.update(counts)
        self.hits.append(Counter({g: min(c, ref_max[g]) for g, c in hyp_counts.items() if g in ref_max}))
        ref_lens = [len(ref) for ref in refs]
        self.hyp_lens.append(len(hyp))
        self.closest_ref_len += self._closest(ref_lens, len(hyp))
        self.mean_ref_len += sum(ref_lens) / len(ref_lens)
        self.ref_words += sum(ref_lens)
        self.n_refs += len(refs)

    def _closest(self, ref_lens: list[int], hyp_len: int) -> int:
        """Closest reference length, ties to the shorter; Perl skips empty references after the first (padding)."""
        best = ref_lens[0]
        for length in ref_lens[1:]:
            if (length or self.mode == "python") and (abs(hyp_len - length), length) < (abs(hyp_len - best), best):
                best = length
        return best

    def hyp_ngrams(self, n: int) -> int:
        """Number of hypothesis n-grams; pymteval adds len - n + 1 even when that is negative."""
        if self.mode == "perl":
            return sum(max(length - n + 1, 0) for length in self.hyp_lens)
        return sum(length - n + 1 for length in self.hyp_lens)

    def matches(self, n: int) -> int:
        return sum(count for hits in self.hits for g, count in hits.items() if len(g) == n)


def corpus_stats(hypotheses: list[str], references: list[list[str]], mode: str) -> CorpusStats:
    stats = CorpusStats(mode)
    for hyp, refs in zip(hypotheses, references):
        stats.add(tokenize(hyp, mode), [tokenize(ref, mode) for ref in refs])
    return stats


def bleu(stats: CorpusStats) -> float:
    return float(bleu_from_counts(np.array(counts(stats), dtype=float), stats.mode))


def counts(stats: CorpusStats) -> list[int]:
    """[closest reference length, matches of orders 1-4, hypothesis n-grams of orders 1-4]: BLEU's sufficient
    statistics, additive over MRs, so summing the rows of resampled MRs gives their corpus BLEU exactly."""
    return [stats.closest_ref_len, *(stats.matches(n) for n in range(1, BLEU_N + 1)),
            *(stats.hyp_ngrams(n) for n in range(1, BLEU_N + 1))]


def item_counts(hypotheses: list[str], references: list[list[str]], mode: str) -> list[list[int]]:
    """`counts` of each MR on its own."""
    return [counts(corpus_stats([hyp], [refs], mode)) for hyp, refs in zip(hypotheses, references)]


def bleu_from_counts(rows: np.ndarray, mode: str) -> np.ndarray:
    """Corpus BLEU of summed `counts` rows (any leading shape: one corpus, or every bootstrap resample at once)."""
    closest, matched, total = rows[..., 0], rows[..., 1:1 + BLEU_N], rows[..., 1 + BLEU_N:]
    hyp_len = total[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        if mode == "python":
            # pymteval's BLEUScore.bleu: zero counts are floored to 1e-15 (matches) and 1e-9 (n-grams)
            bp = np.where(hyp_len <= closest, np.exp(1.0 - closest / np.where(hyp_len == 0, 1e-5, hyp_len)), 1.0)
            log_sum = np.log(np.maximum(matched, 1e-15) / np.maximum(total, 1e-9)).sum(-1)
            return bp * np.exp(log_sum / BLEU_N)
        # mteval's bleu_score: an order without matches scores 1/(2^k * count), one without n-grams scores 1
        unmatched = (matched == 0) & (total > 0)
        smooth = 2.0 ** np.cumsum(unmatched, axis=-1)
        terms = np.where(total == 0, 0.0, np.where(matched == 0, np.log(1 / (smooth * total)), np.log(matched / total)))
        score = np.exp(terms.sum(-1) / BLEU_N) * np.exp(np.minimum(0.0, 1 - closest / hyp_len))
        return np.where(hyp_len == 0, 0.0, score)


def nist(stats: CorpusStats) -> float:
    score = 0.0
    for n in range(1, NIST_N + 1):
        # summed per MR first, in pymteval's order
        info = sum(sum(_info(g, stats) * count for g, count in hits.items() if len(g) == n) for hits in stats.hits)
        total = stats.hyp_ngrams(n)
        # Perl divides by max(count, 1); the patched pymteval (lxuechen/e2e-metrics) replaces a zero count by 1
        score += info / (max(total, 1) if stats.mode == "perl" else (total or 1))
    if stats.mode == "perl":
        # the edited mteval-v13a-sig.pl divides the reference words by the mean number of references per MR
        ref_len = stats.ref_words / (stats.n_refs / len(stats.hyp_lens))
    else:
        ref_len = stats.mean_ref_len
    return score * _nist_length_penalty(stats.hyp_ngrams(1) / ref_len)


def _info(ngram: tuple[str, ...], stats: CorpusStats) -> float:
    """Information weight log2(count(prefix) / count(ngram)) over all references of the corpus."""
    prefix = ngram[:-1]
    # Perl tests the joined prefix for truth, so a bigram starting with "0" falls back to the word total too
    if not prefix or (stats.mode == "perl" and prefix == ("0",)):
        return math.log(stats.ref_words / stats.ref_ngrams[ngram], 2)
    return math.log(stats.ref_ngrams[prefix] / stats.ref_ngrams[ngram], 2)


def _nist_length_penalty(ratio: float) -> float:
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(-NIST_BETA * math.log(ratio) ** 2)
