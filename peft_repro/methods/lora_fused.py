"""Many LoRA cells on one frozen base model (fused sweeps: peft_repro/fused.py; shared parts: fused_cells.py).

Every adapted projection runs its frozen weight once on the whole batch and each cell's (alpha / r) B A on that
cell's rows only, so cells with different ranks and target weights share a batch. Each cell's layers are built by
`lora.new_layers` after seeding with the cell's seed (the initial A of the cell run alone), and its dropout masks are
drawn from its own random stream at its own batch width (the masks of the cell run alone).
"""
from __future__ import annotations

import torch
from torch import nn

from ..train import seed_everything
from . import lora
from .fused_cells import FusedAdapted, Layout


class FusedLoRALayer(nn.Module):
    """A frozen projection shared by the cells, plus each cell's LoRA layer (by cell key) applied to its rows."""

    def __init__(self, base: nn.Module, layout: Layout):
        super().__init__()
        self.base = base
        self.cells = nn.ModuleDict()
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        pieces, start = [], 0
        for cell, rows, width in self.layout.runs:
            piece = out[start:start + rows]
            if cell in self.cells:
                layer = self.cells[cell]
                h = x[start:start + rows]
                width = width if width and width < h.shape[1] else None
                with self.layout.stream(cell, layer.dropout, layer.lora_A.is_cuda):
                    delta = layer.delta(h if width is None else h[:, -width:]).to(out.dtype)
                piece = piece + delta if width is None else \
                    torch.cat([piece[:, :-width], piece[:, -width:] + delta], dim=1)
            pieces.append(piece)
            start += rows
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]


class FusedLoRA(FusedAdapted):
    """One frozen base model with the LoRA layers of several cells; `use_rows` says which rows are whose."""

    def __init__(self, model: nn.Module, cells: list[tuple[lora.LoRAConfig, int]], tokenizer=None):
        super().__init__(model, "lora", len(cells))
        built = []
        for index, (cfg, seed) in enumerate(cells):
            seed_everything(seed)  # the draws of `lora.apply` in a run of this seed
            built.append(lora.new_layers(model, cfg))
            self.start_stream(index, seed)
        for name in [name for name, _ in model.named_modules() if any(name in layers for layers in built)]:
            fused = FusedLoRALayer(model.get_submodule(name), self.layout)
            for index, layers in enumerate(built):
                if name in layers:
                    fused.cells[str(index)] = layers[name]
                    self.cell_params[index][f"model.{name}.lora_A"] = layers[name].lora_A
                    self.cell_params[index][f"model.{name}.lora_B"] = layers[name].lora_B
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, fused)
