"""Classification accuracy (MNLI and the like)."""
from __future__ import annotations

from collections.abc import Sequence


def accuracy(predictions: Sequence, labels: Sequence) -> float:
    """Fraction of predictions equal to their label."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if not labels:
        raise ValueError("nothing to score")
    return sum(pred == label for pred, label in zip(predictions, labels)) / len(labels)
