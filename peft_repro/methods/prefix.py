"""Prefix-tuning (Li & Liang 2021): k virtual tokens whose keys and values are trainable at every layer.

Parametrizations
  * direct: one trainable tensor P of shape (k, n_layers * 2 * kv_dim), laid out per token as [layer, key/value,
    kv-head, head_dim] -- the layout of HF PEFT's ``PrefixEncoder`` without projection, so weights copy across.
  * ``projection: true`` (the paper's reparametrization, §4.3): P = MLP(P') with P' of shape (k, embed_dim),
    MLP = Linear(embed_dim, mid_dim) -> tanh -> Linear(mid_dim, n_layers * 2 * kv_dim), mid_dim 512 as in the paper.
    ``embed_dim`` defaults to the model's hidden size (the original code); HF PEFT uses kv_dim (= hidden size except
    under GQA). After training, :meth:`PrefixAdapted.freeze_prefix` evaluates the MLP once, drops it and keeps only
    the projected prefix as a direct parameter (the paper: "the reparametrization parameters can be dropped").

GQA (SmolLM2: 3 kv-heads of 64; tiny Llama: 2 kv-heads) gets prefixes sized by the kv-heads:
kv_dim = kv_heads * head_dim.

Position ids: as in HF PEFT (``PeftModelForCausalLM.forward`` offsets given position ids by ``num_virtual_tokens``;
without them the model counts from the cache length), the prefix occupies positions 0..k-1 and the first real token
of every row has position k. The prefix keys are stored as they sit in the cache, i.e. already "rotated" for RoPE
models: they are free parameters and are never rotated again. With left padding our positions count real tokens only
(`batching.positions`), so padding never shifts them; PEFT agrees on unpadded rows.

Initialization (``init``; ``auto``, the default, means ``words`` when ``init_text`` is set, else ``random``)
  * ``random``: P ~ N(0, 1) (``nn.Embedding``'s default, as HF PEFT and the original code's direct prefix); with the
    MLP, P' ~ N(0, 1) and both Linear layers keep PyTorch's default kaiming-uniform init (as PEFT and the original).
  * ``random`` with ``init_text`` set: random values, the length of the text's tokens (the control of a word init
    at equal k: prefix_init compares both).
  * ``words``: run the frozen LM on the tokens of ``init_text`` and use their per-layer keys/values (positions
    0..n-1, exactly where the prefix sits), so the initial model equals the frozen LM prompted with the text. The
    prefix length becomes the text's token count. With the MLP, the MLP is first fitted to those activations by
    Adam (lr ``fit_lr`` = 1e-4, ``fit_steps`` = 500, MSE, P' fixed) as the original code's ``lowdata_init_train3``.

``dropout`` is applied to the prefix keys/values during training (the original code's ``prefix_dropout``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache

from .base import Adapted


@dataclass
class PrefixConfig:
    num_virtual_tokens: int = 10
    projection: bool = False        # MLP reparametrization
    mid_dim: int = 512              # hidden width of the MLP (paper: 512)
    embed_dim: int | None = None    # width of P' (None: the model's hidden size; HF PEFT uses kv_dim)
    dropout: float = 0.0            # on the prefix keys/values, training only
    init: str = "auto"              # random | words | auto (words when init_text is set, else random)
    init_text: str | None = None    # the words for init=words ("table-to-text:", ...); with init=random: only k
    fit_steps: int = 500            # MLP fit to the word activations (init=words, projection=true)
    fit_lr: float = 1.0e-4
    # encoder-decoder models: which prefixes (encoder self-attn, decoder self-attn, cross-attn); see prefix_seq2seq
    seq2seq_parts: list[str] = field(default_factory=lambda: ["encoder", "decoder", "cross"])

    def __post_init__(self):
        if self.num_virtual_tokens < 1:
            raise ValueError(f"prefix needs num_virtual_tokens >= 1, got {self.num_virtual_tokens}")
        if self.init not in ("random", "words", "auto"):
            raise ValueError(f"prefix init must be 'random', 'words' or 'auto', got {self.init!r}")
        if self.init == "auto":
            self.init = "words" if self.init_text else "random"
        if self.init == "words" and not self.init_text:
            raise ValueError("prefix init=words needs init_text")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"prefix dropout must be in [0, 1), got {self.dropout}")


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


def tokenizer_of(model):
    """The tokenizer that goes with `model`: set by `models.load_model`, else the byte tokenizer of random models,
    else the one saved beside the weights."""
    tok = getattr(model, "_peft_repro_tokenizer", None)
    if tok is not None:
        return tok
    from ..models import byte_tokenizer

    if model.config.vocab_size == 259:
        return byte_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model.config._name_or_path)


def word_ids(model, text: str) -> list[int]:
    ids = tokenizer_of(model)(text, add_special_tokens=False).input_ids
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


def model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


class PrefixAdapted(Adapted):
    """The frozen model plus a trainable prefix; `initial_cache` holds its keys/values."""

    def __init__(self, model: nn.Module, cfg: PrefixConfig, method: str = "prefix"):
        super().__init__(model, method)
        n_layers, kv_heads, head_dim = kv_geometry(model.config)
        device = next(model.parameters()).device
        ids = word_ids(model, cfg.init_text) if cfg.init_text else None  # init=random keeps only their count
        k = len(ids) if ids is not None else cfg.num_virtual_tokens
        self.num_virtual_tokens = k
        self.prefix = PrefixEncoder(n_layers, kv_heads, head_dim, k, cfg.projection, cfg.mid_dim,
                                    cfg.embed_dim or hidden_size(model.config), cfg.dropout, device)
        self.init_fit_mse = None
        if cfg.init == "words":
            kv = word_activations(model, ids)
            if cfg.projection:
                self.init_fit_mse = self.prefix.fit(kv, cfg.fit_steps, cfg.fit_lr)
            else:
                self.prefix.set_kv(kv)

    def initial_cache(self, batch_size: int):
        return cache_from_kv(self.prefix(), batch_size, model_dtype(self.model))

    def stored_parameter_count(self, trainable: int) -> int:
        n_layers, kv_heads, head_dim = self.prefix.geometry
        return self.prefix.k * n_layers * 2 * kv_heads * head_dim

    def freeze_prefix(self) -> None:
        """Drop the MLP and keep the projected prefix: same outputs, k * n_layers * 2 * kv_dim parameters."""
        self.prefix.freeze()

    def export_prefix(self) -> torch.Tensor:
        """The prefix keys/values (n_layers, 2, k, kv_heads, head_dim) without dropout, detached."""
        with torch.no_grad():
            n_layers, kv_heads, head_dim = self.prefix.geometry
            return self.prefix.flat().view(self.num_virtual_tokens, n_layers, 2, kv_heads, head_dim) \
                .permute(1, 2, 0, 3, 4).clone()


def freeze_base(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def apply(model: nn.Module, cfg: PrefixConfig) -> Adapted:
    """Decoder-only models; the registry (methods/__init__.py) sends encoder-decoder ones to prefix_seq2seq."""
    freeze_base(model)
    return PrefixAdapted(model, cfg)


def expected_parameter_count(model: nn.Module, cfg: PrefixConfig, k: int | None = None) -> int:
    """Closed form: k * n_layers * 2 * kv_dim (direct); k * e + (e + 1) * mid + (mid + 1) * n_layers * 2 * kv_dim
    with the MLP (e = embed_dim)."""
    n_layers, kv_heads, head_dim = kv_geometry(model.config)
    k = k or cfg.num_virtual_tokens
    out = n_layers * 2 * kv_heads * head_dim
    if not cfg.projection:
        return k * out
    e = cfg.embed_dim or hidden_size(model.config)
    return k * e + (e + 1) * cfg.mid_dim + (cfg.mid_dim + 1) * out
