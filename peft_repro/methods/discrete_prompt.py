"""Discrete prompts: the frozen LM with a text prompt before every source, zero trainable parameters.

The prompt's keys/values are computed once by the frozen LM (positions 0..n-1) and every row starts from them, which
equals prepending the prompt's tokens: rows are [prompt, x, y]. `select_prompt` picks the best of a candidate list on
dev with the trainer's Evaluator and the task's own metric (the paper's discrete-prompt baseline picks the prompt the
same way); with ``candidates`` in its config, the adapted model does that in its pre-training hook (`prepare`, which
a run calls before training) and then uses the winner as its prompt, and the run's record keeps every candidate's
dev score (``prompt_selection``, from `record_fields`).

A prompt is any text, so few-shot prompts are candidates too: worked examples written in the source template
("{mr}\n{sentence}\n" on E2E) followed by the real source. Sources and decoding stay those of the trained methods.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import Adapted, freeze_base
from .virtual_tokens import cache_from_kv, model_dtype, word_activations, word_ids

log = logging.getLogger(__name__)


@dataclass
class DiscretePromptConfig:
    prompt: str = "table-to-text:"
    candidates: list[str] = field(default_factory=list)  # non-empty: a run picks `prompt` among them on dev

    def __post_init__(self):
        if isinstance(self.candidates, str):  # list() would split it into letters
            raise ValueError(f"discrete_prompt.candidates must be a list of prompts, not {self.candidates!r}")
        self.candidates = list(self.candidates or [])  # null: none (the config's default, which `--resolve` can show)
        if not self.prompt or not all(self.candidates):
            raise ValueError("discrete_prompt needs a non-empty prompt and non-empty candidates")


class DiscretePromptAdapted(Adapted):
    method = "discrete_prompt"

    def __init__(self, model: nn.Module, cfg: DiscretePromptConfig, tokenizer=None):
        super().__init__(model)
        self.tokenizer = tokenizer  # None: the model's saved one (`virtual_tokens.saved_tokenizer`)
        self.candidates = list(cfg.candidates)
        self.selection = None  # `select_prompt`'s answer once `prepare` has chosen among the candidates
        self.use_prompt(cfg.prompt)

    def use_prompt(self, prompt: str) -> None:
        """Start every row from the frozen LM's keys/values of `prompt`."""
        ids = word_ids(self.model, prompt, self.tokenizer)
        self.prompt, self.num_virtual_tokens = prompt, len(ids)
        self.register_buffer("prompt_kv", word_activations(self.model, ids), persistent=False)

    def initial_cache(self, batch_size: int):
        return cache_from_kv(self.prompt_kv, batch_size, model_dtype(self.model))

    def prepare(self, evaluator, dev_decode) -> None:
        """With candidates: the best of them on dev (`select_prompt`) becomes the prompt."""
        if not self.candidates:
            return
        self.selection = select_prompt(lambda: self.model, self.candidates, evaluator, dev_decode)
        self.use_prompt(self.selection["prompt"])
        log.info("prompt %r selected by %s: %s %.4f", self.selection["prompt"], self.selection["rule"],
                 self.selection["metric"], self.selection["score"])

    def record_fields(self) -> dict:
        return super().record_fields() | {"prompt_selection": self.selection}


def apply(model: nn.Module, cfg: DiscretePromptConfig, tokenizer=None) -> Adapted:
    freeze_base(model)
    return DiscretePromptAdapted(model, cfg, tokenizer)


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
        adapted = apply(base, DiscretePromptConfig(prompt), evaluator.tok)
        adapted.eval()
        with torch.no_grad():
            metrics, predictions, _ = evaluator.evaluate(adapted, split, decode, full=False,
                                                         desc=f"prompt {number}/{len(candidates)}")
        scored.append({"prompt": prompt, "tokens": adapted.num_virtual_tokens, split: metrics,
                       "empty_predictions": sum(p == "" for p in predictions)})
    _, best = min(enumerate(scored), key=lambda ic: (-ic[1][split][metric], ic[1]["tokens"], ic[0]))
    return {"prompt": best["prompt"], "score": best[split][metric], "metric": metric, "split": split,
            "rule": SELECTION_RULE.format(split=split, metric=metric), "candidates": scored}
