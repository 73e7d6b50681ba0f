"""What every fused model shares (peft_repro/fused.py trains them): several cells of one method on one frozen base
model, the rows of a batch assigned to cells in runs, and each cell's own random stream for its dropout.

A cell's parameters are built after seeding with the cell's seed, in the order its method builds them alone, so a
cell starts where the cell run alone starts; `cell_params` names them as the cell run alone names them (its saved
adapter is the same file).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .base import Adapted


class Layout:
    """The rows of the next forward pass: runs of (cell, rows, width) in batch order, and each cell's random
    stream for its dropout. `width`: the cell's own padded length (its tokens are the last `width` columns)."""

    def __init__(self):
        self.runs: list[tuple[str, int, int | None]] = []
        self.streams: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def stream(self, cell: str, dropout: nn.Module, cuda: bool):
        """Draw `dropout`'s mask from `cell`'s own stream, as the cell run alone draws it."""
        if not (dropout.training and isinstance(dropout, nn.Dropout)):
            yield
            return
        get, put = (torch.cuda.get_rng_state, torch.cuda.set_rng_state) if cuda else \
            (torch.get_rng_state, torch.set_rng_state)
        outer = get()
        put(self.streams[cell])
        try:
            yield
        finally:
            self.streams[cell] = get()
            put(outer)


class FusedAdapted(Adapted):
    """The base of fused models: the layout, each cell's parameters and random stream, the cell-wise views."""

    def __init__(self, model: nn.Module, method: str, cell_count: int):
        super().__init__(model, method)
        for p in model.parameters():
            p.requires_grad_(False)
        self.layout = Layout()
        self.cell_count = cell_count
        self.cell_params: list[dict[str, nn.Parameter]] = [{} for _ in range(cell_count)]

    def start_stream(self, index: int, seed: int) -> None:
        """Cell `index`'s dropout stream: a run's training starts from the seeded state (train.train seeds again).
        The stream is the generator of the device it will train on (train_fused moves the model to the GPU where
        there is one), not of the device the model is on while it is built."""
        cuda = torch.cuda.is_available()
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
            torch.manual_seed(seed)
            self.layout.streams[str(index)] = torch.cuda.get_rng_state() if cuda else torch.get_rng_state()

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

    def cell_stored(self, index: int, trainable: int) -> int:
        """Parameters the cell keeps after training (`Adapted.stored_parameter_count` of the cell alone)."""
        return trainable

    def cell_record_fields(self, index: int) -> dict:
        """What `Adapted.record_fields` gives for the cell run alone."""
        return {"num_virtual_tokens": 0}

    def cell_width(self, index: int) -> int:
        """Positions the cell adds to each row of a forward pass (embedding-only's virtual tokens)."""
        return 0

    def cell_parameter_counts(self, index: int) -> dict:
        """What `parameter_counts` gives for the cell run alone."""
        trainable = sum(p.numel() for p in self.cell_params[index].values())
        base = sum(p.numel() for p in self.model.parameters() if not p.requires_grad)
        stored = self.cell_stored(index, trainable)
        return {"trainable": trainable, "base": base, "trainable_pct": 100.0 * trainable / base,
                "stored": stored, "stored_pct": 100.0 * stored / base}


class FusedVirtualTokens(FusedAdapted):
    """Cells with k_i virtual tokens each (prefix, infix, embedding-only): the model holds K = max k_i positions, a
    row of a cell with fewer has its own at the right end of them and the rest masked, and its real tokens start at
    position k_i, as in the cell run alone."""

    def __init__(self, model: nn.Module, method: str, cell_count: int):
        super().__init__(model, method, cell_count)
        self.ks: list[int] = []

    @property
    def num_virtual_tokens(self) -> int:
        return max(self.ks)

    def row_ks(self, device) -> torch.Tensor:
        """(batch, 1): each row's cell's k, from the layout."""
        return torch.cat([torch.full((rows, 1), self.ks[int(cell)], device=device)
                          for cell, rows, _ in self.layout.runs])

    def virtual_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        k = self.row_ks(attention_mask.device)
        return (torch.arange(self.num_virtual_tokens, device=k.device) >= self.num_virtual_tokens - k).to(
            attention_mask.dtype)

    def virtual_offsets(self) -> torch.Tensor:
        return self.row_ks(next(self.model.parameters()).device)

    def cell_record_fields(self, index: int) -> dict:
        return {"num_virtual_tokens": self.ks[index]}  # the real k of the cell (init words may set it)


def base_has_dropout(model: nn.Module) -> bool:
    """Dropout in the frozen model itself draws one mask over the whole fused batch: such models run cell by cell."""
    config = model.config
    rates = [getattr(config, k, 0) or 0 for k in ("attention_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                                                   "hidden_dropout", "dropout")]
    modules = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    return any(float(r) > 0 for r in rates + modules if isinstance(r, (int, float)))
