"""Many LoRA cells on one frozen base model (the model side of fused sweeps, peft_repro/fused.py).

Every adapted projection runs its frozen weight once on the whole batch and each cell's (alpha / r) B A on that
cell's rows only, so cells with different ranks and target weights share a batch. Each cell's layers are built by
`lora.new_layers` after seeding with the cell's seed (the initial A of the cell run alone), and its dropout masks are
drawn from its own random stream at its own batch width (the masks of the cell run alone).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..train import seed_everything
from . import lora
from .base import Adapted


class Layout:
    """The rows of the next forward pass: runs of (cell, rows, width) in batch order, and each cell's random
    stream for its dropout. `width`: the cell's own padded length (its tokens are the last `width` columns)."""

    def __init__(self):
        self.runs: list[tuple[str, int, int | None]] = []
        self.streams: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def stream(self, cell: str, layer: lora.LoRALayer):
        """Draw `layer`'s dropout mask from `cell`'s own stream, as the cell run alone draws it."""
        if not (layer.training and isinstance(layer.dropout, nn.Dropout)):
            yield
            return
        cuda = layer.lora_A.is_cuda
        get, put = (torch.cuda.get_rng_state, torch.cuda.set_rng_state) if cuda else \
            (torch.get_rng_state, torch.set_rng_state)
        outer = get()
        put(self.streams[cell])
        try:
            yield
        finally:
            self.streams[cell] = get()
            put(outer)


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
                with self.layout.stream(cell, layer):
                    delta = layer.delta(h if width is None else h[:, -width:]).to(out.dtype)
                piece = piece + delta if width is None else \
                    torch.cat([piece[:, :-width], piece[:, -width:] + delta], dim=1)
            pieces.append(piece)
            start += rows
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]


class FusedLoRA(Adapted):
    """One frozen base model with the LoRA layers of several cells; `use_rows` says which rows are whose."""

    def __init__(self, model: nn.Module, cells: list[tuple[lora.LoRAConfig, int]]):
        super().__init__(model, "lora")
        for p in model.parameters():
            p.requires_grad_(False)
        self.layout = Layout()
        self.cell_count = len(cells)
        device = next(model.parameters()).device
        built = []
        for index, (cfg, seed) in enumerate(cells):
            seed_everything(seed)  # the draws of `lora.apply` in a run of this seed
            built.append(lora.new_layers(model, cfg))
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)  # a run's training starts from this state (train.train seeds again)
                self.layout.streams[str(index)] = torch.cuda.get_rng_state() if device.type == "cuda" \
                    else torch.get_rng_state()
        names = [name for name, _ in model.named_modules() if any(name in layers for layers in built)]
        # each cell's parameters under the names they have in a run of the cell alone (its saved adapter)
        self.cell_params: list[dict[str, nn.Parameter]] = [{} for _ in cells]
        for name in names:
            fused = FusedLoRALayer(model.get_submodule(name), self.layout)
            for index, layers in enumerate(built):
                if name in layers:
                    fused.cells[str(index)] = layers[name]
                    self.cell_params[index][f"model.{name}.lora_A"] = layers[name].lora_A
                    self.cell_params[index][f"model.{name}.lora_B"] = layers[name].lora_B
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, fused)

    def use_rows(self, rows: torch.Tensor | list[int], widths: list[int] | None = None) -> None:
        """The cell of each row of the next forward passes (rows of a cell must be adjacent)."""
        keys, counts = torch.unique_consecutive(torch.as_tensor(rows), return_counts=True)
        keys, counts = keys.tolist(), counts.tolist()
        if len(set(keys)) != len(keys):
            raise ValueError("a fused batch must hold each cell's rows together")
        self.layout.runs = [(str(k), n, widths[i] if widths else None) for i, (k, n) in enumerate(zip(keys, counts))]

    def cell_state(self, index: int) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.cell_params[index].items()}

    def load_cell_state(self, index: int, state: dict[str, torch.Tensor]) -> None:
        for name, p in self.cell_params[index].items():
            p.data.copy_(state[name])

    def cell_parameter_counts(self, index: int) -> dict:
        """What `parameter_counts` gives for the cell run alone."""
        trainable = sum(p.numel() for p in self.cell_params[index].values())
        base = sum(p.numel() for n, p in self.model.named_parameters() if "lora_" not in n)
        return {"trainable": trainable, "base": base, "trainable_pct": 100.0 * trainable / base,
                "stored": trainable, "stored_pct": 100.0 * trainable / base}


def base_has_dropout(model: nn.Module) -> bool:
    """Dropout in the frozen model itself draws one mask over the whole fused batch: such models run cell by cell."""
    config = model.config
    rates = [getattr(config, k, 0) or 0 for k in ("attention_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                                                   "hidden_dropout", "dropout")]
    modules = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    return any(float(r) > 0 for r in rates + modules if isinstance(r, (int, float)))
