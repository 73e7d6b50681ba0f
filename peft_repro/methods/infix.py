"""Infix-tuning (INFIX-k, Li & Liang 2021 §7.2): k positions with trainable keys/values at every layer placed
between source and target, [x, INFIX, y].

Layout. As in the original code (its infix batches are [src, INFIX, bos, tgt]: the separator comes after the infix
and predicts the first target token), the last source token -- the separator, "\\n" in E2E -- sits after the infix:
rows are [x_1..x_{s-1}, INFIX, x_s, y]. So x_1..x_{s-1} never see the infix; x_s and every target token do, which
is why infix-tuning can only change the activations of y (the paper's explanation of PREFIX > INFIX).

Implementation. The infix keys/values are the same `PrefixEncoder` as prefix-tuning (direct or MLP, same
initializations, same parameter count). Since they are free parameters, where they sit in the cache does not matter:
they are put in front of the cache, and a 4-D attention mask lets only query positions from the separator on see
them. Position ids: x_1..x_{s-1} take 0..s-2, the infix s-1..s+k-2, x_s takes s-1+k and the targets follow; infix
keys are free parameters and are never rotated (as prefix-tuning). Each row has its own s (`source_lens`), so
batches of sources of different lengths (left padding) train and decode together. Decoding needs nothing special:
after the first forward every new token sees everything, and `decoding._Stepper`'s positions (real-token count + k)
continue exactly after x_s.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..batching import positions
from .base import Adapted, freeze_base
from .prefix import PrefixAdapted, PrefixConfig


@dataclass
class InfixConfig(PrefixConfig):
    pass


class InfixAdapted(PrefixAdapted):
    method = "infix"
    peft_type = None  # PEFT has no infix: its prefix tuning puts the keys/values before the source

    def _mask(self, attention_mask: torch.Tensor, sees_infix: torch.Tensor, dtype) -> torch.Tensor:
        """(B, 1, L, k + L) mask: infix columns for rows from the separator on, then causal over real tokens. A fused
        row whose cell has fewer infix positions than the cache holds sees only its own (`virtual_mask`)."""
        batch, length = attention_mask.shape
        cols = torch.arange(length, device=attention_mask.device)
        causal = cols[None, :] <= cols[:, None]
        allowed = causal[None] & attention_mask.bool()[:, None, :]
        allowed |= torch.eye(length, dtype=torch.bool, device=cols.device)[None]  # padding rows: no empty row
        infix_cols = self.virtual_mask(attention_mask).bool()[:, None, :]
        allowed = torch.cat([sees_infix[:, :, None] & infix_cols, allowed], dim=-1)
        if self.model.config._attn_implementation == "sdpa":
            return allowed[:, None]
        return torch.zeros(allowed.shape, dtype=dtype, device=cols.device) \
            .masked_fill(~allowed, torch.finfo(dtype).min)[:, None]

    def forward(self, input_ids, attention_mask, logits_to_keep: int = 0, use_cache: bool = False,
                source_lens=None):
        batch, length = input_ids.shape
        lengths = attention_mask.sum(1)
        if source_lens is None:
            source_lens = lengths
        separator = length - (lengths - source_lens.to(lengths.device)) - 1  # column of x_s
        sees_infix = torch.arange(length, device=input_ids.device)[None, :] >= separator[:, None]
        pos = positions(attention_mask) + self.virtual_offsets() * sees_infix.long()  # k: per row when fused
        mask = self._mask(attention_mask, sees_infix, next(self.model.parameters()).dtype)
        return self.model(input_ids=input_ids, attention_mask=mask, position_ids=pos,
                          past_key_values=self.initial_cache(batch), use_cache=use_cache,
                          logits_to_keep=logits_to_keep)


def apply(model: nn.Module, cfg: InfixConfig, tokenizer=None) -> Adapted:
    if model.config.is_encoder_decoder:
        raise ValueError("infix-tuning is implemented for decoder-only models")
    freeze_base(model)
    return InfixAdapted(model, cfg, tokenizer)
