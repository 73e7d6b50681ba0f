"""Many prefix-tuning cells (direct or through the MLP, any k) on one frozen decoder-only model (fused sweeps:
peft_repro/fused.py; shared parts: fused_cells.py).

Each row's cache starts with its cell's k keys/values at every layer. Cells of different k share a batch: the cache
holds K = the largest k positions, a row of a cell with fewer has its prefix at the right end of them and the rest
masked, and its real tokens start at position k, as in the cell run alone (`prefix.PrefixAdapted`).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from ..train import seed_everything
from .fused_cells import FusedAdapted
from .prefix import PrefixAdapted, PrefixConfig
from .virtual_tokens import model_dtype


class FusedPrefix(FusedAdapted):
    def __init__(self, model: nn.Module, cells: list[tuple[PrefixConfig, int]], tokenizer=None):
        super().__init__(model, "prefix", len(cells))
        self.encoders = nn.ModuleList()
        self.ks: list[int] = []
        for index, (cfg, seed) in enumerate(cells):
            seed_everything(seed)  # the draws of `prefix.apply` in a run of this seed
            alone = PrefixAdapted(model, cfg, tokenizer)
            self.encoders.append(alone.prefix)
            self.ks.append(alone.num_virtual_tokens)
            self.cell_params[index] = {f"prefix.{n}": p for n, p in alone.prefix.named_parameters()}
            self.start_stream(index, seed)
        self.num_virtual_tokens = max(self.ks)

    def _row_ks(self, device) -> torch.Tensor:
        """(batch, 1): each row's cell's k, from the layout."""
        return torch.cat([torch.full((rows, 1), self.ks[int(cell)], device=device)
                          for cell, rows, _ in self.layout.runs])

    def virtual_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        k = self._row_ks(attention_mask.device)
        return (torch.arange(self.num_virtual_tokens, device=k.device) >= self.num_virtual_tokens - k).to(
            attention_mask.dtype)

    def virtual_offsets(self) -> torch.Tensor:
        return self._row_ks(self.encoders[0].prefix_embedding.device)

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

    def cell_record_fields(self, index: int) -> dict:
        return {"num_virtual_tokens": self.ks[index]}  # the real k of the cell (init words may set it)
