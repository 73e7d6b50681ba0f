"""Discrete prompts: the frozen LM with a text prompt before every source, zero trainable parameters.

The prompt's keys/values are computed once by the frozen LM (positions 0..n-1) and every row starts from them, which
equals prepending the prompt's tokens: rows are [prompt, x, y]. `select_prompt` picks the best of a candidate list on
dev with the trainer's Evaluator (the paper's discrete-prompt baseline picks the prompt the same way); a run whose
config lists ``candidates`` does that first and then uses the winner as ``prompt`` (`peft_repro.run`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .base import Adapted
from .prefix import cache_from_kv, freeze_base, model_dtype, word_activations, word_ids


@dataclass
class DiscretePromptConfig:
    prompt: str = "table-to-text:"
    candidates: list[str] = field(default_factory=list)  # non-empty: a run picks `prompt` among them on dev

    def __post_init__(self):
        if not self.prompt or not all(self.candidates):
            raise ValueError("discrete_prompt needs a non-empty prompt and non-empty candidates")


class DiscretePromptAdapted(Adapted):
    def __init__(self, model: nn.Module, cfg: DiscretePromptConfig):
        super().__init__(model, "discrete_prompt")
        ids = word_ids(model, cfg.prompt)
        self.num_virtual_tokens = len(ids)
        self.register_buffer("prompt_kv", word_activations(model, ids), persistent=False)

    def initial_cache(self, batch_size: int):
        return cache_from_kv(self.prompt_kv, batch_size, model_dtype(self.model))


def apply(model: nn.Module, cfg: DiscretePromptConfig) -> Adapted:
    freeze_base(model)
    return DiscretePromptAdapted(model, cfg)


def select_prompt(model_factory, candidates: list[str], evaluator, decode=None, split: str = "dev") -> dict:
    """Evaluate each candidate prompt on `split` with `evaluator` (a `train.Evaluator`); returns the best prompt, its
    score and every candidate's metrics. `model_factory()` returns the frozen base model (called once, shared)."""
    base = model_factory()
    scores = {}
    for prompt in candidates:
        adapted = apply(base, DiscretePromptConfig(prompt))
        adapted.eval()
        with torch.no_grad():
            metrics, _, _ = evaluator.evaluate(adapted, split, decode, full=False, desc=f"prompt {prompt!r}")
        scores[prompt] = metrics
    key = evaluator.task.primary_metric
    best = max(candidates, key=lambda p: scores[p][key])
    return {"prompt": best, "score": scores[best][key], "scores": scores}
