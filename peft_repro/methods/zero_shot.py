"""Zero-shot: the frozen base model as it is, under the task's prompt and decoding. Every table's reference row:
a trained cell that does not beat it has learnt nothing that the prompt did not already give."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import Adapted, freeze_base


@dataclass
class ZeroShotConfig:
    pass


def apply(model: nn.Module, cfg: ZeroShotConfig, tokenizer=None) -> Adapted:
    freeze_base(model)
    return Adapted(model, "zero_shot")
