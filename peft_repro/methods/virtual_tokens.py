"""What the methods with virtual tokens share: cache geometry, the trainable keys/values (`PrefixEncoder`), caches
built from keys/values, and the frozen LM's activations on words (word inits, discrete prompts).

Prefix-tuning (prefix.py, prefix_fused.py, infix.py), its encoder-decoder variant (prefix_seq2seq.py), embedding-only
and discrete prompts import these from here, so no method module imports another for its helpers.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache


def kv_geometry(config) -> tuple[int, int, int]:
    """(n_layers, kv_heads, head_dim) of a decoder-only model's attention caches."""
    if config.model_type == "gpt2":
        return config.n_layer, config.n_head, config.n_embd // config.n_head
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def hidden_size(config) -> int:
    return config.n_embd if config.model_type == "gpt2" else config.hidden_size


def model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def saved_tokenizer(model):
    """The tokenizer of `model` when a method is given none (`apply_method`'s `tokenizer`): the byte tokenizer of
    random models, else the one saved beside the weights."""
    from ..models import byte_tokenizer

    if model.config.vocab_size == 259:
        return byte_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model.config._name_or_path)


def word_ids(model, text: str, tokenizer=None) -> list[int]:
    """The token ids of `text` (no special tokens) under `tokenizer` (None: `saved_tokenizer(model)`)."""
    ids = (tokenizer or saved_tokenizer(model))(text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"init text {text!r} has no tokens")
    return ids


@torch.no_grad()
def word_activations(model, ids: list[int]) -> torch.Tensor:
    """Keys/values of the frozen LM on `ids` at positions 0..n-1: (n_layers, 2, n, kv_heads, head_dim)."""
    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)
    was_training = model.training
    model.eval()  # no dropout in the activations we copy
    cache = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True).past_key_values
    model.train(was_training)
    layers = [torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers]  # (2, H, n, hd)
    return torch.stack(layers).transpose(2, 3).float()  # (L, 2, n, H, hd)


class PrefixEncoder(nn.Module):
    """Trainable keys/values of k positions at every layer: forward() -> (n_layers, 2, k, kv_heads, head_dim)."""

    def __init__(self, n_layers: int, kv_heads: int, head_dim: int, k: int, projection: bool, mid_dim: int,
                 embed_dim: int, dropout: float, device=None):
        super().__init__()
        self.geometry = (n_layers, kv_heads, head_dim)
        self.k = k
        self.projection = projection
        out = n_layers * 2 * kv_heads * head_dim
        if projection:
            self.prefix_embedding = nn.Parameter(torch.randn(k, embed_dim, device=device))
            self.prefix_mlp = nn.Sequential(nn.Linear(embed_dim, mid_dim, device=device), nn.Tanh(),
                                            nn.Linear(mid_dim, out, device=device))
        else:
            self.prefix_embedding = nn.Parameter(torch.randn(k, out, device=device))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def stored_parameter_count(self) -> int:
        """k * n_layers * 2 * kv_dim: the projected prefix, all that is kept after training (`freeze`)."""
        n_layers, kv_heads, head_dim = self.geometry
        return self.k * n_layers * 2 * kv_heads * head_dim

    def flat(self) -> torch.Tensor:
        """(k, n_layers * 2 * kv_dim), before dropout."""
        return self.prefix_mlp(self.prefix_embedding) if self.projection else self.prefix_embedding

    def forward(self) -> torch.Tensor:
        n_layers, kv_heads, head_dim = self.geometry
        kv = self.dropout(self.flat()).view(self.k, n_layers, 2, kv_heads, head_dim)
        return kv.permute(1, 2, 0, 3, 4)

    def set_kv(self, kv: torch.Tensor) -> None:
        """Make the direct prefix equal `kv` (n_layers, 2, k, kv_heads, head_dim)."""
        assert not self.projection
        with torch.no_grad():
            self.prefix_embedding.copy_(kv.permute(2, 0, 1, 3, 4).reshape(self.k, -1))

    def fit(self, kv: torch.Tensor, steps: int, lr: float) -> float:
        """Fit the MLP (P' fixed) so that it outputs `kv`, as the original code's low-data init. Returns the MSE."""
        assert self.projection
        target = kv.permute(2, 0, 1, 3, 4).reshape(self.k, -1).detach()
        opt = torch.optim.Adam(self.prefix_mlp.parameters(), lr=lr)
        for _ in range(steps):
            loss = nn.functional.mse_loss(self.flat(), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return nn.functional.mse_loss(self.flat(), target).item()

    @torch.no_grad()
    def freeze(self) -> None:
        """Evaluate the MLP once and keep only the projected prefix (a direct parameter); the MLP is dropped."""
        if not self.projection:
            return
        projected = self.flat().detach().clone()
        del self.prefix_mlp
        self.projection = False
        self.prefix_embedding = nn.Parameter(projected)


def cache_from_kv(kv: torch.Tensor, batch_size: int, dtype=None) -> DynamicCache:
    """A DynamicCache holding `kv` (n_layers, 2, k, kv_heads, head_dim) for every row; gradients flow through it."""
    if dtype is not None:
        kv = kv.to(dtype)
    kv = kv.transpose(2, 3)  # (L, 2, H, k, hd)
    rows = (batch_size, -1, -1, -1)
    return DynamicCache([(layer[0][None].expand(*rows), layer[1][None].expand(*rows)) for layer in kv])
