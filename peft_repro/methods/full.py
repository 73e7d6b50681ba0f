"""Full fine-tuning: every weight trains. The baseline row of every table."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import Adapted


@dataclass
class FullConfig:
    pass


def apply(model: nn.Module, cfg: FullConfig, tokenizer=None) -> Adapted:
    """Every weight trains; its parameter counts are Adapted's (the base is the trainable weights)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return Adapted(model, "full")
