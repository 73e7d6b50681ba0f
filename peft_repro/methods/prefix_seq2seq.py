"""Prefix-tuning for encoder-decoder models (BART, T5): separate prefixes for the encoder self-attention, the decoder
self-attention and the decoder cross-attention, as the original BART code (its ``wte_enc``/``control_trans_enc``,
``wte``/``control_trans`` and ``wte2``/``control_trans2``). Each is a `prefix.PrefixEncoder` (direct or MLP, random
init N(0, 1)); ``parts`` picks which of the three are used (HF PEFT's seq2seq prefix-tuning is the decoder
self-attention part alone: it empties the cross-attention cache).

It plugs into the shared trainer and decoder through the same interface as the decoder-only methods:
  * `forward` takes the left-padded decoder-only rows ([pad.., source, target] with `source_lens`, or
    [pad.., source]) and splits them: the encoder reads the source (right-padded, so BART's learned positions are
    not shifted), the decoder reads [decoder_start, target] (right-padded). The decoder logits are put back in the
    row layout: the last t+1 columns of a row hold the logits at [decoder_start, y_1..y_t], so `lm_loss`, label
    scoring and decoding read them as they read a decoder-only model's.
  * the returned cache is an `EncoderDecoderCache` that also carries the encoder states and mask; `step` ignores the
    decoder-only mask/positions the stepper passes and continues from it; beam reordering reorders it all.

Positions: the encoder prefix sits before the source (T5's relative bias sees it at positions 0..k-1, the source
after it; BART's learned encoder positions are untouched), the decoder self-attention prefix as in HF PEFT (the
decoder counts its positions from the cache length, so the first decoder token has position k).
Encoder prefix keys/values reach the encoder's self-attention modules through forward pre-hooks (transformers has no
cache argument on the encoder).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import Seq2SeqLMOutput

from .base import Adapted, freeze_base
from .virtual_tokens import PrefixEncoder, cache_from_kv, model_dtype

PARTS = ("encoder", "decoder", "cross")


def seq2seq_geometry(config) -> tuple[int, int, int, int, int]:
    """(encoder layers, decoder layers, heads, head_dim, hidden)."""
    if config.model_type == "t5":
        return config.num_layers, config.num_decoder_layers, config.num_heads, config.d_kv, config.d_model
    heads = config.encoder_attention_heads
    if heads != config.decoder_attention_heads:
        raise ValueError("encoder and decoder with different head counts are not supported")
    return config.encoder_layers, config.decoder_layers, heads, config.d_model // heads, config.d_model


def encoder_self_attentions(model) -> list[nn.Module]:
    if model.config.model_type == "t5":
        return [block.layer[0].SelfAttention for block in model.encoder.block]
    return [layer.self_attn for layer in model.get_encoder().layers]


class _Cache(EncoderDecoderCache):
    """Decoder self/cross caches plus the encoder states and mask that every decoding step needs."""

    encoder_hidden: torch.Tensor
    encoder_mask: torch.Tensor  # (B, k_cross + L_src): ones on the cross prefix, then the source mask

    def reorder_cache(self, beam_idx):
        super().reorder_cache(beam_idx)
        self.encoder_hidden = self.encoder_hidden[beam_idx]
        self.encoder_mask = self.encoder_mask[beam_idx]


def _mask4d(allowed: torch.Tensor, model, dtype) -> torch.Tensor:
    """(B, Q, K) bool -> the model's 4-D mask: bool for sdpa, additive float otherwise."""
    if model.config._attn_implementation == "sdpa":
        return allowed[:, None]
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device) \
        .masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


class Seq2SeqPrefixAdapted(Adapted):
    method = "prefix"  # PEFT export: decoder-only models only (its seq2seq prefix tuning is the decoder part alone)

    def __init__(self, model: nn.Module, cfg):
        super().__init__(model)
        if cfg.init != "random":
            raise ValueError("encoder-decoder prefixes support init=random only")
        parts = tuple(cfg.seq2seq_parts)
        if not parts or set(parts) - set(PARTS):
            raise ValueError(f"seq2seq_parts must be a non-empty subset of {PARTS}, got {parts}")
        self.parts = parts
        enc_layers, dec_layers, heads, head_dim, hidden = seq2seq_geometry(model.config)
        device = next(model.parameters()).device
        k = self.k = cfg.num_virtual_tokens

        def encoder(n_layers):
            return PrefixEncoder(n_layers, heads, head_dim, k, cfg.projection, cfg.mid_dim, cfg.embed_dim or hidden,
                                 cfg.dropout, device)

        self.prefix_decoder = encoder(dec_layers) if "decoder" in parts else None
        self.prefix_cross = encoder(dec_layers) if "cross" in parts else None
        self.prefix_encoder = encoder(enc_layers) if "encoder" in parts else None
        self._encoder_cache = None
        if self.prefix_encoder is not None:
            for i, attn in enumerate(encoder_self_attentions(model)):
                attn.layer_idx = i
                attn.register_forward_pre_hook(self._inject_encoder_prefix, with_kwargs=True)

    def stored_parameter_count(self, trainable: int) -> int:
        """The projected prefixes of every part (the MLPs are dropped after training)."""
        return sum(getattr(self, f"prefix_{part}").stored_parameter_count() for part in self.parts)

    def record_fields(self) -> dict:
        """k, the length of each part's prefix (`num_virtual_tokens`, the decoder-only cache offset, stays 0)."""
        return {"num_virtual_tokens": self.k}

    def _inject_encoder_prefix(self, module, args, kwargs):
        if self._encoder_cache is not None:
            kwargs["cache"] = self._encoder_cache
        return args, kwargs

    def _n(self, part) -> int:
        return self.k if getattr(self, f"prefix_{part}") is not None else 0

    def _cache(self, part: str, batch: int):
        enc = getattr(self, f"prefix_{part}")
        return cache_from_kv(enc(), batch, model_dtype(self.model)) if enc is not None else DynamicCache()

    def _encode(self, src_ids, src_mask):
        batch, length = src_ids.shape
        n = self._n("encoder")
        keys = torch.cat([src_mask.new_ones(batch, n), src_mask], 1).bool()
        allowed = keys[:, None, :].expand(batch, length, n + length)
        self._encoder_cache = self._cache("encoder", batch) if n else None
        try:
            return self.model.get_encoder()(input_ids=src_ids,
                                            attention_mask=_mask4d(allowed, self.model, model_dtype(self.model)))
        finally:
            self._encoder_cache = None

    def _decode(self, dec_ids, dec_mask, encoder_hidden, encoder_mask, cache):
        batch, length = dec_ids.shape
        cross = _mask4d(encoder_mask.bool()[:, None, :].expand(batch, length, -1), self.model,
                        model_dtype(self.model))
        self_mask = torch.cat([dec_mask.new_ones(batch, cache.self_attention_cache.get_seq_length()), dec_mask], 1)
        return self.model(encoder_outputs=(encoder_hidden,), attention_mask=cross, decoder_input_ids=dec_ids,
                          decoder_attention_mask=self_mask, past_key_values=cache, use_cache=True)

    def forward(self, input_ids, attention_mask, logits_to_keep: int = 0, use_cache: bool = False,
                source_lens=None):
        batch, width = input_ids.shape
        lengths = attention_mask.sum(1)
        source_lens = lengths if source_lens is None else source_lens.to(lengths.device)
        target_lens = lengths - source_lens
        pad = self.model.config.pad_token_id
        start = self.model.config.decoder_start_token_id
        rows = input_ids.tolist()
        sources = [row[width - int(n):width - int(n) + int(s)] for row, n, s in zip(rows, lengths, source_lens)]
        targets = [row[width - int(t):] if int(t) else [] for row, t in zip(rows, target_lens)]
        src_ids, src_mask = _right_pad(sources, pad, input_ids.device)
        dec_ids, dec_mask = _right_pad([[start] + t for t in targets], pad, input_ids.device)

        encoder_hidden = self._encode(src_ids, src_mask).last_hidden_state
        encoder_mask = torch.cat([src_mask.new_ones(batch, self._n("cross")), src_mask], 1)
        cache = _Cache(self._cache("decoder", batch), self._cache("cross", batch))
        cache.is_updated = {i: False for i in cache.is_updated}  # the cross prefix is there; encoder k/v are not
        cache.encoder_hidden, cache.encoder_mask = encoder_hidden, encoder_mask
        out = self._decode(dec_ids, dec_mask, encoder_hidden, encoder_mask, cache)

        keep = logits_to_keep or width
        logits = out.logits.new_zeros(batch, keep, out.logits.shape[-1])
        for r, t in enumerate(target_lens.tolist()):  # [start, y_1..y_t] -> the row's last t + 1 columns
            n = min(t + 1, keep)
            logits[r, keep - n:] = out.logits[r, t + 1 - n: t + 1]
        return Seq2SeqLMOutput(logits=logits, past_key_values=cache if use_cache else None)

    def step(self, input_ids, attention_mask, position_ids, cache):
        """Continue from `cache`; the decoder-only mask and positions of the stepper are not used."""
        out = self._decode(input_ids, torch.ones_like(input_ids), cache.encoder_hidden, cache.encoder_mask, cache)
        return Seq2SeqLMOutput(logits=out.logits[:, -1:], past_key_values=cache)


def _right_pad(seqs, pad_id, device):
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for r, s in enumerate(seqs):
        if s:
            ids[r, : len(s)] = torch.tensor(s, device=device)
            mask[r, : len(s)] = 1
    return ids, mask


def expected_parameter_count(model, cfg) -> int:
    """Direct: k * 2 * kv_dim * (encoder layers + 2 * decoder layers) for all three parts."""
    enc_layers, dec_layers, heads, head_dim, _ = seq2seq_geometry(model.config)
    layers = {"encoder": enc_layers, "decoder": dec_layers, "cross": dec_layers}
    return sum(cfg.num_virtual_tokens * layers[p] * 2 * heads * head_dim for p in cfg.seq2seq_parts)


def apply(model: nn.Module, cfg, tokenizer=None) -> Adapted:
    """`tokenizer`: unused (encoder-decoder prefixes have no word init)."""
    freeze_base(model)
    return Seq2SeqPrefixAdapted(model, cfg)
