"""Embedding-only (EMB-k in Li & Liang 2021, = prompt tuning, Lester et al. 2021, = HF PEFT's PROMPT_TUNING).

k virtual token embeddings are put before the input at the embedding layer only; every higher layer is computed by
the frozen model. Position ids as HF PEFT: the virtual tokens take positions 0..k-1 and the first real token of each
row position k (left padding never shifts them: `batching.positions`). The cache after the first forward holds k + L
positions, so decoding (`Adapted.step`) continues unchanged.

Parametrizations (``reparam``)
  * ``mlp`` (default; the original code's ``PrefixEmbTuning`` with ``parametrize_emb='MLP'``, its default): the
    virtual embeddings are MLP(P'), P' of shape (k, d), MLP = Linear(d, mid_dim) -> tanh -> Linear(mid_dim, d),
    mid_dim 512. :meth:`EmbeddingOnlyAdapted.freeze_prefix` evaluates the MLP once and keeps only the k x d
    embeddings, which is what is stored per task (`parameter_counts()["stored"]`).
  * ``none``: the k x d embeddings are trained directly (the original's ``parametrize_emb='Emb'``; PEFT's layout).

Initialization (``init``)
  * ``random``: none: E ~ N(0, s^2) with s = ``init_std``, or, when it is null (default), the standard deviation of
    the model's word-embedding table, so the virtual tokens start at the scale of real ones (PEFT's RANDOM is
    N(0, 1)). mlp: P' ~ N(0, s^2) with s = ``init_std`` or 1 (``nn.Embedding``'s default, as the original code) and
    both Linear layers keep PyTorch's default init.
  * ``words``: the word embeddings of the tokens of ``init_text``; the length k becomes the text's token count.
  * ``vocab``: embeddings of k tokens sampled uniformly from the vocabulary (PEFT's SAMPLE_VOCAB).
  With mlp, words and vocab start from the random init above and then move the output layer by the smallest change
  (least squares, minimum norm) that makes MLP(P') equal those embeddings: exact while k <= mid_dim + 1, so the
  initial model is the frozen LM prompted with the words, as with none. (The original code has no word init for
  EMB; prefix.py fits its prefix MLP by Adam steps as the original's low-data init, which is only approximate.)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..batching import positions
from .base import Adapted, freeze_base
from .virtual_tokens import hidden_size, word_ids


@dataclass
class EmbeddingOnlyConfig:
    num_virtual_tokens: int = 10
    reparam: str = "mlp"            # mlp (the original code's default) | none (the embeddings directly)
    mid_dim: int = 512              # hidden width of the MLP (original code: 512)
    init: str = "random"            # random | words | vocab
    init_text: str | None = None
    init_std: float | None = None   # init=random: std of the trained table; None: word-table std (none), 1 (mlp)

    def __post_init__(self):
        if self.num_virtual_tokens < 1:
            raise ValueError(f"embedding_only needs num_virtual_tokens >= 1, got {self.num_virtual_tokens}")
        if self.reparam not in ("mlp", "none"):
            raise ValueError(f"embedding_only reparam must be mlp or none, got {self.reparam!r}")
        if self.init not in ("random", "words", "vocab"):
            raise ValueError(f"embedding_only init must be random, words or vocab, got {self.init!r}")
        if self.init == "words" and not self.init_text:
            raise ValueError("embedding_only init=words needs init_text")


class EmbeddingOnlyAdapted(Adapted):
    """PEFT's counterpart is prompt tuning (``prompt_embeddings`` (k, hidden size): with the MLP its output)."""

    method = "embedding_only"
    peft_type = "PROMPT_TUNING"

    def __init__(self, model: nn.Module, cfg: EmbeddingOnlyConfig, tokenizer=None):
        super().__init__(model)
        table = model.get_input_embeddings().weight.detach()
        if cfg.init == "words":
            target = table[torch.tensor(word_ids(model, cfg.init_text, tokenizer), device=table.device)].float()
        elif cfg.init == "vocab":
            target = table[torch.randint(0, table.shape[0], (cfg.num_virtual_tokens,), device=table.device)].float()
        else:
            target = None
        k, d = (target.shape[0] if target is not None else cfg.num_virtual_tokens), table.shape[1]
        self.num_virtual_tokens = k
        self.reparam = cfg.reparam
        if cfg.reparam == "none":
            std = cfg.init_std if cfg.init_std is not None else table.float().std().item()
            init = target if target is not None else torch.randn(k, d, device=table.device) * std
            self.prefix_embeddings = nn.Parameter(init.clone())
            return
        std = cfg.init_std if cfg.init_std is not None else 1.0
        self.prefix_input = nn.Parameter(torch.randn(k, d, device=table.device) * std)  # P'
        self.prefix_mlp = nn.Sequential(nn.Linear(d, cfg.mid_dim, device=table.device), nn.Tanh(),
                                        nn.Linear(cfg.mid_dim, d, device=table.device))
        if target is not None:
            self._fit_output_layer(target)

    @torch.no_grad()
    def _fit_output_layer(self, target: torch.Tensor) -> None:
        """Smallest change of the last Linear that makes MLP(P') = target (least squares when k > mid_dim + 1)."""
        hidden = self.prefix_mlp[:2](self.prefix_input).double()  # after the tanh
        hidden = torch.cat([hidden, hidden.new_ones(hidden.shape[0], 1)], dim=1)  # the bias as a constant input
        residual = target.double() - self.prefix_mlp(self.prefix_input).double()
        delta = torch.linalg.pinv(hidden) @ residual  # (mid_dim + 1, d): minimum norm
        out = self.prefix_mlp[2]
        out.weight += delta[:-1].T.to(out.weight.dtype)
        out.bias += delta[-1].to(out.bias.dtype)

    def virtual_embeddings(self) -> torch.Tensor:
        """(k, d): what goes before the input embeddings."""
        return self.prefix_mlp(self.prefix_input) if self.reparam == "mlp" else self.prefix_embeddings

    @torch.no_grad()
    def freeze_prefix(self) -> None:
        """Evaluate the MLP once and keep only the k x d embeddings (reparam becomes none); same outputs."""
        if self.reparam == "none":
            return
        projected = self.virtual_embeddings().detach().clone()
        del self.prefix_mlp, self.prefix_input
        self.reparam = "none"
        self.prefix_embeddings = nn.Parameter(projected)

    def stored_parameter_count(self, trainable: int) -> int:
        return self.num_virtual_tokens * self.model.get_input_embeddings().weight.shape[1]

    def peft_export(self) -> tuple[dict, dict]:
        """The embeddings the forward uses (with reparam=mlp the MLP's output, so the MLP is not needed to load)."""
        emb = self.virtual_embeddings().detach()
        config = {"num_virtual_tokens": emb.shape[0], "token_dim": hidden_size(self.config),
                  "num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM"}
        return config, {"prompt_embeddings": emb.contiguous()}

    def forward(self, input_ids, attention_mask, logits_to_keep: int = 0, use_cache: bool = False,
                source_lens=None):
        n, batch = self.num_virtual_tokens, input_ids.shape[0]
        embeds = self.model.get_input_embeddings()(input_ids)
        virtual = self.virtual_embeddings().to(embeds.dtype)[None].expand(batch, -1, -1)
        mask = torch.cat([attention_mask.new_ones(batch, n), attention_mask], dim=1)
        pos = torch.cat([torch.arange(n, device=input_ids.device)[None].expand(batch, -1),
                         positions(attention_mask, n)], dim=1)
        out = self.model(inputs_embeds=torch.cat([virtual, embeds], dim=1), attention_mask=mask, position_ids=pos,
                         use_cache=use_cache, logits_to_keep=logits_to_keep)
        if not logits_to_keep:  # all positions were asked for: the real tokens' ones
            out.logits = out.logits[:, n:]
        return out


def apply(model: nn.Module, cfg: EmbeddingOnlyConfig, tokenizer=None) -> Adapted:
    """`tokenizer` reads `init_text` (None: the model's saved one, `virtual_tokens.saved_tokenizer`)."""
    freeze_base(model)
    return EmbeddingOnlyAdapted(model, cfg, tokenizer)


def expected_parameter_count(model: nn.Module, cfg: EmbeddingOnlyConfig, k: int | None = None) -> int:
    """Trainable: k * d (none); k * d + (d + 1) * mid + (mid + 1) * d with the MLP (d = embedding width)."""
    k, d = k or cfg.num_virtual_tokens, model.get_input_embeddings().weight.shape[1]
    if cfg.reparam == "none":
        return k * d
    return k * d + (d + 1) * cfg.mid_dim + (cfg.mid_dim + 1) * d
