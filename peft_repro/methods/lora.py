"""LoRA (Hu et al. 2021): W x + (alpha / r) * B A x with A random, B = 0, on any of the roles q, k, v, o, mlp.

On GPT-2's fused ``c_attn`` a role is one third of the output (as microsoft/LoRA's MergedLinear): each adapted third
gets its own (A, B) pair, so the parameter count is r * (d_in + d_out) per adapted matrix on every architecture.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models import role_targets
from .base import Adapted, freeze_base


@dataclass
class LoRAConfig:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q", "v"])
    init: str = "kaiming"  # A ~ kaiming-uniform(a=sqrt 5) as microsoft/LoRA and PEFT; "gaussian": N(0, 1/r^2)

    def __post_init__(self):
        if self.r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got r={self.r}")
        if self.init not in ("kaiming", "gaussian"):
            raise ValueError(f"LoRA init must be 'kaiming' or 'gaussian', got {self.init!r}")
        if isinstance(self.targets, str):  # "qk" would otherwise be read letter by letter
            raise ValueError(f"method.targets must be a list such as [q,v], not the string {self.targets!r}")
        if not self.targets:
            raise ValueError("LoRA needs at least one target role")


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # transformers' GPT-2 projection: weight is (d_in, d_out)


class LoRALayer(nn.Module):
    """A frozen projection plus low-rank updates on whole output (part None) or on thirds of a fused output."""

    def __init__(self, base: nn.Module, parts: list[int | None], cfg: LoRAConfig):
        super().__init__()
        self.base = base
        self.conv1d = _is_conv1d(base)
        d_in, d_out = base.weight.shape if self.conv1d else base.weight.shape[::-1]
        self.parts = parts
        self.d_out = d_out
        self.part_size = d_out if parts == [None] else d_out // 3
        self.scale = cfg.alpha / cfg.r
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(len(parts), cfg.r, d_in, device=device))
        self.lora_B = nn.Parameter(torch.zeros(len(parts), self.part_size, cfg.r, device=device))
        for a in self.lora_A:
            if cfg.init == "kaiming":
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            else:
                nn.init.normal_(a, std=1 / cfg.r)
        self.merged = False

    def delta_weight(self, i: int) -> torch.Tensor:
        """(part_size, d_in) update of part i."""
        return self.lora_B[i] @ self.lora_A[i] * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        return out if self.merged else out + self.delta(x).to(out.dtype)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """(alpha / r) B A x on the adapted output columns (zeros on a fused projection's other thirds)."""
        h = self.dropout(x).to(self.lora_A.dtype)
        low = torch.einsum("...i,pri->...pr", h, self.lora_A)
        delta = torch.einsum("...pr,por->...po", low, self.lora_B) * self.scale
        if self.parts == [None]:
            return delta[..., 0, :]
        pieces = [torch.zeros_like(delta[..., 0, :])] * 3
        for i, part in enumerate(self.parts):
            pieces[part] = delta[..., i, :]
        return torch.cat(pieces, dim=-1)

    @torch.no_grad()
    def _apply_delta(self, sign: int) -> None:
        weight = self.base.weight
        for i, part in enumerate(self.parts):
            rows = slice(None) if part is None else slice(part * self.part_size, (part + 1) * self.part_size)
            delta = sign * self.delta_weight(i).to(weight.dtype)
            if self.conv1d:
                weight[:, rows] += delta.T
            else:
                weight[rows] += delta

    @property
    def dropout_rate(self) -> float:
        return self.dropout.p if isinstance(self.dropout, nn.Dropout) else 0.0

    def peft_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer as one PEFT LoRA pair: (``lora_A.weight`` (rank, d_in), ``lora_B.weight`` (d_out, rank)),
        rank = r per adapted part. A fused projection with n adapted thirds (GPT-2's ``c_attn``) becomes one LoRA of
        rank n*r: A stacks the n A's, B is block-diagonal (each third's rows see only its own A; thirds that are not
        adapted get zero rows). Its alpha is then n*alpha, so that the scale stays alpha/r."""
        A, B = self.lora_A.detach(), self.lora_B.detach()
        if self.parts == [None]:
            return A[0].contiguous(), B[0].contiguous()
        n, r = len(self.parts), A.shape[1]
        block = torch.zeros(3, self.part_size, n * r, dtype=B.dtype, device=B.device)
        for i, part in enumerate(self.parts):
            block[part, :, i * r:(i + 1) * r] = B[i]
        return A.reshape(n * r, -1).contiguous(), block.reshape(3 * self.part_size, n * r).contiguous()

    def merge(self) -> None:
        if not self.merged:
            self._apply_delta(+1)
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self._apply_delta(-1)
            self.merged = False


class LoRAAdapted(Adapted):
    """The frozen model with LoRA layers in it: its parameters are the layers' ``lora_A``/``lora_B``."""

    method = "lora"
    trainable_prefix = "lora_"
    peft_type = "LORA"

    def peft_export(self) -> tuple[dict, dict]:
        """PEFT LoRA by full module names (a leaf name can be ambiguous: GPT-2's c_proj is both attn.c_proj (o) and
        mlp.c_proj); a fused projection's rank and alpha go to ``rank_pattern``/``alpha_pattern``
        (`LoRALayer.peft_weights`). The outputs are exact (dropout too, as both apply one dropout mask to the shared
        input); only further training in PEFT could fill the zero blocks."""
        layers = [(name, m) for name, m in self.model.named_modules() if isinstance(m, LoRALayer)]
        first = layers[0][1]
        r, alpha = first.lora_A.shape[1], first.scale * first.lora_A.shape[1]
        weights, rank_pattern, alpha_pattern = {}, {}, {}
        for name, layer in layers:
            A, B = layer.peft_weights()
            if layer.parts != [None]:  # fused thirds: one rank-n*r LoRA
                rank_pattern[name], alpha_pattern[name] = len(layer.parts) * r, len(layer.parts) * alpha
            weights[f"base_model.model.{name}.lora_A.weight"] = A
            weights[f"base_model.model.{name}.lora_B.weight"] = B
        config = {"r": r, "lora_alpha": alpha, "lora_dropout": first.dropout_rate,
                  "target_modules": [name for name, _ in layers], "rank_pattern": rank_pattern,
                  "alpha_pattern": alpha_pattern, "bias": "none", "use_rslora": False,
                  "fan_in_fan_out": first.conv1d}  # transformers' Conv1D stores (d_in, d_out)
        return config, weights


def apply(model: nn.Module, cfg: LoRAConfig, tokenizer=None) -> Adapted:
    """Freeze `model` and put LoRA layers on every module of the target roles."""
    freeze_base(model)
    for name, layer in new_layers(model, cfg).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer)
    return LoRAAdapted(model)


def new_layers(model: nn.Module, cfg: LoRAConfig) -> dict[str, LoRALayer]:
    """A LoRA layer per module of the target roles, by module name, initialized in model order (the fused sweep
    builds each cell's layers with this too, so a cell draws the same initial A as when run alone)."""
    parts_of = defaultdict(list)
    for target in role_targets(model, cfg.targets):
        parts_of[target.name].append(target.part)
    return {name: LoRALayer(model.get_submodule(name), parts if parts == [None] else sorted(parts), cfg)
            for name, parts in parts_of.items()}


def lora_layers(model: nn.Module) -> list[LoRALayer]:
    return [m for m in model.modules() if isinstance(m, LoRALayer)]


def merge(model: nn.Module) -> None:
    """Fold B A into the frozen weights: inference then costs exactly the base model's."""
    for layer in lora_layers(model):
        layer.merge()


def unmerge(model: nn.Module) -> None:
    for layer in lora_layers(model):
        layer.unmerge()


def expected_parameter_count(model: nn.Module, cfg: LoRAConfig) -> int:
    """Closed form r * (d_in + d_out) per adapted matrix (or third of a fused one), from the unadapted model."""
    total = 0
    for t in role_targets(model, cfg.targets):
        w = t.module.weight
        d_in, d_out = w.shape if _is_conv1d(t.module) else w.shape[::-1]
        total += cfg.r * (d_in + (d_out if t.part is None else d_out // 3))
    return total
