"""Many prefix-tuning cells (direct or through the MLP, any k), or many infix-tuning cells, on one frozen
decoder-only model (fused sweeps: peft_repro/fused.py; shared parts: fused_cells.py).

Each row's cache starts with its cell's k keys/values at every layer. Cells of different k share a batch: the cache
holds K = the largest k positions, a row of a cell with fewer has its prefix at the right end of them and the rest
masked, and its real tokens start at position k, as in the cell run alone (`prefix.PrefixAdapted`). Infix cells keep
their keys/values in the same place and show them, as `infix.InfixAdapted` does, only to the rows' positions from the
separator on.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from ..train import seed_everything
from .fused_cells import FusedVirtualTokens
from .infix import InfixAdapted
from .prefix import PrefixAdapted, PrefixConfig
from .virtual_tokens import model_dtype


class FusedPrefix(FusedVirtualTokens):
    alone = PrefixAdapted  # what a cell is when run alone

    def __init__(self, model: nn.Module, cells: list[tuple[PrefixConfig, int]], tokenizer=None):
        super().__init__(model, self.alone.method, len(cells))
        self.encoders = nn.ModuleList()
        for index, (cfg, seed) in enumerate(cells):
            seed_everything(seed)  # the draws of the method's `apply` in a run of this seed
            alone = self.alone(model, cfg, tokenizer)
            self.encoders.append(alone.prefix)
            self.ks.append(alone.num_virtual_tokens)
            self.cell_params[index] = {f"prefix.{n}": p for n, p in alone.prefix.named_parameters()}
            self.start_stream(index, seed)

    def initial_cache(self, batch_size: int) -> DynamicCache:
        dtype, big_k = model_dtype(self.model), self.num_virtual_tokens
        per_run = []
        for cell, rows, _ in self.layout.runs:
            encoder = self.encoders[int(cell)]
            with self.layout.stream(cell, encoder.dropout, encoder.prefix_embedding.is_cuda):
                kv = encoder()  # (n_layers, 2, k, kv_heads, head_dim)
            kv = nn.functional.pad(kv, (0, 0, 0, 0, big_k - kv.shape[2], 0)).to(dtype).transpose(2, 3)
            per_run.append(kv[:, :, None].expand(-1, -1, rows, -1, -1, -1))  # (L, 2, rows, H, K, hd)
        kv = torch.cat(per_run, dim=2)
        if kv.shape[2] != batch_size:
            raise ValueError(f"the layout holds {kv.shape[2]} rows, the batch {batch_size}")
        return DynamicCache([(layer[0], layer[1]) for layer in kv])

    def cell_stored(self, index: int, trainable: int) -> int:
        return self.encoders[index].stored_parameter_count()


class FusedInfix(FusedPrefix):
    """Infix cells: the prefix cells' keys/values, behind infix-tuning's mask and positions (per row k)."""
    alone = InfixAdapted
    forward = InfixAdapted.forward
    _mask = InfixAdapted._mask
