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
    at equal k: prefix_init compares both). The values are a draw of the text's own (`text_draw_seed`): two controls
    of equal length at one seed are two random inits, not one run twice.
  * ``words``: run the frozen LM on the tokens of ``init_text`` and use their per-layer keys/values (positions
    0..n-1, exactly where the prefix sits), so the initial model equals the frozen LM prompted with the text. The
    prefix length becomes the text's token count. With the MLP, the MLP is first fitted to those activations by
    Adam (lr ``fit_lr`` = 1e-4, ``fit_steps`` = 500, MSE, P' fixed) as the original code's ``lowdata_init_train3``.

``dropout`` is applied to the prefix keys/values during training (the original code's ``prefix_dropout``).

The parts the prefix family shares (`PrefixEncoder`, caches from keys/values, word activations) are in
virtual_tokens.py; a run's record keeps the real k (`Adapted.record_fields`), which init words may set.
"""
from __future__ import annotations

import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import Adapted, freeze_base
from .virtual_tokens import PrefixEncoder, cache_from_kv, hidden_size, kv_geometry, model_dtype, word_activations, \
    word_ids


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


class PrefixAdapted(Adapted):
    """The frozen model plus a trainable prefix; `initial_cache` holds its keys/values. PEFT's counterpart is prefix
    tuning without projection (the projected prefix is what it loads)."""

    method = "prefix"
    peft_type = "PREFIX_TUNING"

    def __init__(self, model: nn.Module, cfg: PrefixConfig, tokenizer=None):
        super().__init__(model)
        n_layers, kv_heads, head_dim = kv_geometry(model.config)
        device = next(model.parameters()).device
        ids = word_ids(model, cfg.init_text, tokenizer) if cfg.init_text else None  # init=random: only their count
        k = len(ids) if ids is not None else cfg.num_virtual_tokens
        self.num_virtual_tokens = k
        own_draw = cfg.init == "random" and bool(cfg.init_text)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices) if own_draw else nullcontext():  # the run's stream: as before
            if own_draw:
                torch.manual_seed(text_draw_seed(cfg.init_text))
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
        return self.prefix.stored_parameter_count()

    def freeze_prefix(self) -> None:
        """Drop the MLP and keep the projected prefix: same outputs, k * n_layers * 2 * kv_dim parameters."""
        self.prefix.freeze()

    def export_prefix(self) -> torch.Tensor:
        """The prefix keys/values (n_layers, 2, k, kv_heads, head_dim) without dropout, detached."""
        with torch.no_grad():
            n_layers, kv_heads, head_dim = self.prefix.geometry
            return self.prefix.flat().view(self.num_virtual_tokens, n_layers, 2, kv_heads, head_dim) \
                .permute(1, 2, 0, 3, 4).clone()

    def peft_export(self) -> tuple[dict, dict]:
        """``prompt_embeddings`` (k, n_layers * 2 * kv_dim): the projected prefix, whose per-token layout [layer,
        key/value, kv-head, head_dim] is PEFT's. Under GQA PEFT sizes the prefix by the kv-heads: ``token_dim`` =
        kv_dim and ``num_attention_heads`` = kv-heads."""
        kv = self.export_prefix()  # (L, 2, k, kv_heads, head_dim): projected, no dropout
        n_layers, _, k, kv_heads, head_dim = kv.shape
        config = {"num_virtual_tokens": k, "num_layers": n_layers, "token_dim": kv_heads * head_dim,
                  "num_attention_heads": kv_heads, "num_transformer_submodules": 1, "prefix_projection": False}
        return config, {"prompt_embeddings": kv.permute(2, 0, 1, 3, 4).reshape(k, -1).contiguous()}


def text_draw_seed(text: str) -> int:
    """The seed of a random init of `text`'s length, from the run's RNG state (its seed) and the text, without drawing
    from it: each control at each seed is its own draw, the same on every machine with this torch version (crc32 of
    the generator's state, not the salted `hash`). 32 bits: mt19937 keeps only the low 32 bits of a seed."""
    return zlib.crc32(text.encode(), zlib.crc32(torch.get_rng_state().numpy().tobytes()))


def apply(model: nn.Module, cfg: PrefixConfig, tokenizer=None) -> Adapted:
    """Decoder-only models; the registry (methods/__init__.py) sends encoder-decoder ones to prefix_seq2seq.
    `tokenizer` reads `init_text` (None: the model's saved one, `virtual_tokens.saved_tokenizer`)."""
    freeze_base(model)
    return PrefixAdapted(model, cfg, tokenizer)


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
