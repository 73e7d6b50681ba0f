"""Embedding-only (EMB-k in Li & Liang 2021, = prompt tuning, Lester et al. 2021, = HF PEFT's PROMPT_TUNING).

k trainable virtual token embeddings are put before the input at the embedding layer only; every higher layer is
computed by the frozen model. Position ids as HF PEFT: the virtual tokens take positions 0..k-1 and the first real
token of each row position k (left padding never shifts them: `batching.positions`). The cache after the first forward
holds k + L positions, so decoding (`Adapted.step`) continues unchanged.

Initialization (``init``)
  * ``random``: E ~ N(0, s^2) with s = ``init_std``, or, when it is null (default), the standard deviation of the
    model's word-embedding table, so the virtual tokens start at the scale of real ones. (PEFT's RANDOM is N(0, 1).)
  * ``words``: the word embeddings of the tokens of ``init_text``; the length k becomes the text's token count.
  * ``vocab``: embeddings of k tokens sampled uniformly from the vocabulary (PEFT's SAMPLE_VOCAB).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..batching import positions
from .base import Adapted
from .prefix import freeze_base, word_ids


@dataclass
class EmbeddingOnlyConfig:
    num_virtual_tokens: int = 10
    init: str = "random"            # random | words | vocab
    init_text: str | None = None
    init_std: float | None = None   # init=random; None: std of the word-embedding table

    def __post_init__(self):
        if self.num_virtual_tokens < 1:
            raise ValueError(f"embedding_only needs num_virtual_tokens >= 1, got {self.num_virtual_tokens}")
        if self.init not in ("random", "words", "vocab"):
            raise ValueError(f"embedding_only init must be random, words or vocab, got {self.init!r}")
        if self.init == "words" and not self.init_text:
            raise ValueError("embedding_only init=words needs init_text")


class EmbeddingOnlyAdapted(Adapted):
    def __init__(self, model: nn.Module, cfg: EmbeddingOnlyConfig):
        super().__init__(model, "embedding_only")
        table = model.get_input_embeddings().weight
        if cfg.init == "words":
            ids = torch.tensor(word_ids(model, cfg.init_text), device=table.device)
            init = table[ids].detach().clone()
        elif cfg.init == "vocab":
            sampled = torch.randint(0, table.shape[0], (cfg.num_virtual_tokens,), device=table.device)
            init = table[sampled].detach().clone()
        else:
            std = cfg.init_std if cfg.init_std is not None else table.detach().float().std().item()
            init = torch.randn(cfg.num_virtual_tokens, table.shape[1], device=table.device) * std
        self.prefix_embeddings = nn.Parameter(init.float())
        self.num_virtual_tokens = init.shape[0]

    def forward(self, input_ids, attention_mask, logits_to_keep: int = 0, use_cache: bool = False,
                source_lens=None):
        n, batch = self.num_virtual_tokens, input_ids.shape[0]
        embeds = self.model.get_input_embeddings()(input_ids)
        virtual = self.prefix_embeddings.to(embeds.dtype)[None].expand(batch, -1, -1)
        mask = torch.cat([attention_mask.new_ones(batch, n), attention_mask], dim=1)
        pos = torch.cat([torch.arange(n, device=input_ids.device)[None].expand(batch, -1),
                         positions(attention_mask, n)], dim=1)
        out = self.model(inputs_embeds=torch.cat([virtual, embeds], dim=1), attention_mask=mask, position_ids=pos,
                         use_cache=use_cache, logits_to_keep=logits_to_keep)
        if not logits_to_keep:  # all positions were asked for: the real tokens' ones
            out.logits = out.logits[:, n:]
        return out


def apply(model: nn.Module, cfg: EmbeddingOnlyConfig) -> Adapted:
    freeze_base(model)
    return EmbeddingOnlyAdapted(model, cfg)


def expected_parameter_count(model: nn.Module, cfg: EmbeddingOnlyConfig, k: int | None = None) -> int:
    """k * d (d = embedding width)."""
    return (k or cfg.num_virtual_tokens) * model.get_input_embeddings().weight.shape[1]
