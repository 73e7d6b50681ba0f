"""Method registry: a method is a config dataclass plus `apply(model, cfg) -> Adapted`, one module per method.

The prefix family (prefix, embedding_only, infix, discrete_prompt) has one module each; `prefix` on an encoder-decoder
model (BART, T5) dispatches to `prefix_seq2seq`.
"""
from __future__ import annotations

from ..checks import typed
from . import discrete_prompt, embedding_only, full, infix, lora, prefix, prefix_seq2seq, zero_shot
from .base import Adapted

METHODS = {
    "lora": (lora.LoRAConfig, lora.apply),
    "full": (full.FullConfig, full.apply),
    "prefix": (prefix.PrefixConfig, lambda model, cfg: _prefix_module(model).apply(model, cfg)),
    "embedding_only": (embedding_only.EmbeddingOnlyConfig, embedding_only.apply),
    "infix": (infix.InfixConfig, infix.apply),
    "discrete_prompt": (discrete_prompt.DiscretePromptConfig, discrete_prompt.apply),
    "zero_shot": (zero_shot.ZeroShotConfig, zero_shot.apply),
}


def _prefix_module(model):
    """prefix_seq2seq for encoder-decoder models (BART, T5), prefix for decoder-only ones."""
    return prefix_seq2seq if model.config.is_encoder_decoder else prefix


def method_config(cfg: dict):
    """Build the dataclass of `cfg["name"]` from a `conf/method/*.yaml` mapping; unknown keys and values of the wrong
    type are an error."""
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return name, typed(METHODS[name][0], cfg, f"method {name}")


def apply_method(model, cfg: dict) -> Adapted:
    name, method_cfg = method_config(cfg)
    return METHODS[name][1](model, method_cfg)


__all__ = ["Adapted", "METHODS", "apply_method", "method_config"]
