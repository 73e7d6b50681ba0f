"""Method registry: a method is a config dataclass plus `apply(model, cfg, tokenizer=None) -> Adapted`, one module
per method; what a method owns (its parameters' names and counts, its PEFT export, its pre-training hook, its record
fields) is on its `Adapted` class (methods/base.py).

The prefix family (prefix, embedding_only, infix, discrete_prompt) has one module each, and shares its helpers
through `virtual_tokens`; `prefix` on an encoder-decoder model (BART, T5) dispatches to `prefix_seq2seq`.
"""
from __future__ import annotations

from ..checks import typed
from . import discrete_prompt, embedding_only, full, infix, lora, prefix, prefix_seq2seq, zero_shot
from .base import Adapted


def _apply_prefix(model, cfg: prefix.PrefixConfig, tokenizer=None) -> Adapted:
    """prefix_seq2seq for encoder-decoder models (BART, T5), prefix for decoder-only ones."""
    return (prefix_seq2seq if model.config.is_encoder_decoder else prefix).apply(model, cfg, tokenizer)


METHODS = {
    "lora": (lora.LoRAConfig, lora.apply),
    "full": (full.FullConfig, full.apply),
    "prefix": (prefix.PrefixConfig, _apply_prefix),
    "embedding_only": (embedding_only.EmbeddingOnlyConfig, embedding_only.apply),
    "infix": (infix.InfixConfig, infix.apply),
    "discrete_prompt": (discrete_prompt.DiscretePromptConfig, discrete_prompt.apply),
    "zero_shot": (zero_shot.ZeroShotConfig, zero_shot.apply),
}


def method_config(cfg: dict):
    """Build the dataclass of `cfg["name"]` from a `conf/method/*.yaml` mapping; unknown keys and values of the wrong
    type are an error."""
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return name, typed(METHODS[name][0], cfg, f"method {name}")


def apply_method(model, cfg: dict, tokenizer=None) -> Adapted:
    """`model` adapted by the method of `cfg` (a conf/method mapping). `tokenizer`: the model's, for methods that
    start from words (init_text, discrete prompts); None: the one saved beside the weights (random models: bytes)."""
    name, method_cfg = method_config(cfg)
    return METHODS[name][1](model, method_cfg, tokenizer)


__all__ = ["Adapted", "METHODS", "apply_method", "method_config"]
