"""Many embedding-only cells (EMB-k, direct or through the MLP, any k) on one frozen decoder-only model (fused
sweeps: peft_repro/fused.py; shared parts: fused_cells.py).

Each row's input starts with its cell's k virtual embeddings. Cells of different k share a batch: every row holds
K = the largest k virtual positions, a row of a cell with fewer has its own at the right end of them and the rest
masked, and its real tokens take positions k.. as in the cell run alone (`embedding_only.EmbeddingOnlyAdapted`).
Virtual positions are real positions of every layer here, so on a CPU cells of different k go in different passes
(`cell_width`, `fused.PAD_SLACK`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..batching import positions
from ..train import seed_everything
from .embedding_only import EmbeddingOnlyAdapted, EmbeddingOnlyConfig
from .fused_cells import FusedVirtualTokens


class FusedEmbeddingOnly(FusedVirtualTokens):
    def __init__(self, model: nn.Module, cells: list[tuple[EmbeddingOnlyConfig, int]], tokenizer=None):
        super().__init__(model, EmbeddingOnlyAdapted.method, len(cells))
        self.cells = nn.ModuleList()
        for index, (cfg, seed) in enumerate(cells):
            seed_everything(seed)  # the draws of `embedding_only.apply` in a run of this seed
            alone = EmbeddingOnlyAdapted(model, cfg, tokenizer)
            del alone.model  # the cell keeps only its own parameters, named as the cell run alone names them
            self.cells.append(alone)
            self.ks.append(alone.num_virtual_tokens)
            self.cell_params[index] = dict(alone.named_parameters())

    def forward(self, input_ids, attention_mask, logits_to_keep: int = 0, use_cache: bool = False,
                source_lens=None):
        big_k = self.num_virtual_tokens
        embeds = self.model.get_input_embeddings()(input_ids)
        virtual = torch.cat([nn.functional.pad(self.cells[int(cell)].virtual_embeddings(),
                                               (0, 0, big_k - self.ks[int(cell)], 0))[None].expand(rows, -1, -1)
                             for cell, rows, _ in self.layout.runs]).to(embeds.dtype)
        if virtual.shape[0] != input_ids.shape[0]:
            raise ValueError(f"the layout holds {virtual.shape[0]} rows, the batch {input_ids.shape[0]}")
        k = self.row_ks(input_ids.device)
        virtual_pos = (torch.arange(big_k, device=k.device)[None] - (big_k - k)).clamp(min=0)
        out = self.model(inputs_embeds=torch.cat([virtual, embeds], dim=1),
                         attention_mask=torch.cat([self.virtual_mask(attention_mask), attention_mask], dim=1),
                         position_ids=torch.cat([virtual_pos, positions(attention_mask, k)], dim=1),
                         use_cache=use_cache, logits_to_keep=logits_to_keep)
        if not logits_to_keep:  # all positions were asked for: the real tokens' ones
            out.logits = out.logits[:, big_k:]
        return out

    def cell_stored(self, index: int, trainable: int) -> int:
        return self.ks[index] * self.model.get_input_embeddings().weight.shape[1]  # the MLP is dropped after training

    def cell_width(self, index: int) -> int:
        return self.ks[index]
