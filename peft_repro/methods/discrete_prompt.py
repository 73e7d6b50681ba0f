"""Discrete prompts: the frozen LM with a text prompt before every source, zero trainable parameters.

The prompt's keys/values are computed once by the frozen LM (positions 0..n-1) and every row starts from them, which
equals prepending the prompt's tokens: rows are [prompt, x, y]. `select_prompt` picks the best of a candidate list on
dev with the trainer's Evaluator and the task's own metric (the paper's discrete-prompt baseline picks the prompt the
same way); a run whose config lists ``candidates`` does that first and then uses the winner as ``prompt``
(`peft_repro.run`), and its record keeps every candidate's dev score (``prompt_selection``).

A prompt is any text, so few-shot prompts are candidates too: worked examples written in the source template
("{mr}\n{sentence}\n" on E2E) followed by the real source. Sources and decoding stay those of the trained methods.
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


SELECTION_RULE = ("highest {split} {metric}; exact ties go to the prompt with fewer tokens, "
                  "then to the earlier candidate in the list")


def select_prompt(model_factory, candidates: list[str], evaluator, decode=None, split: str = "dev") -> dict:
    """Evaluate each candidate prompt on `split` with `evaluator` (a `train.Evaluator`) and pick one by
    `SELECTION_RULE`: the highest score of the task's primary metric; exact ties go to the prompt with fewer tokens,
    then to the earlier candidate. `model_factory()` returns the frozen base model (called once, shared).

    Returns the selected prompt and its score, the metric, split and rule, and every candidate in list order with
    its prompt text, token count, metrics and number of empty predictions (an empty output scores 0)."""
    if not candidates:
        raise ValueError("select_prompt needs at least one candidate")
    DiscretePromptConfig(candidates[0], candidates)  # an empty prompt fails here, before any evaluation
    base = model_factory()
    metric = evaluator.task.primary_metric
    scored = []
    for number, prompt in enumerate(candidates, 1):
        adapted = apply(base, DiscretePromptConfig(prompt))
        adapted.eval()
        with torch.no_grad():
            metrics, predictions, _ = evaluator.evaluate(adapted, split, decode, full=False,
                                                         desc=f"prompt {number}/{len(candidates)}")
        scored.append({"prompt": prompt, "tokens": adapted.num_virtual_tokens, split: metrics,
                       "empty_predictions": sum(p == "" for p in predictions)})
    _, best = min(enumerate(scored), key=lambda ic: (-ic[1][split][metric], ic[1]["tokens"], ic[0]))
    return {"prompt": best["prompt"], "score": best[split][metric], "metric": metric, "split": split,
            "rule": SELECTION_RULE.format(split=split, metric=metric), "candidates": scored}
