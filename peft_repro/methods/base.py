"""What every method returns: the base model plus its trainable part, behind one interface for training and decoding."""
from __future__ import annotations

import torch
from torch import nn

from ..batching import positions


class Adapted(nn.Module):
    """A model adapted by a method.

    Methods that only change weights (LoRA, full fine-tuning) use this class as it is. Methods that add activations
    (the prefix family) subclass it: `initial_cache` gives the keys/values every sequence starts from (built from
    trainable parameters, so gradients reach them); embedding-only and infix override `forward` instead (virtual
    input embeddings; a 4-D mask that shows the infix only from the source's last token on, which needs
    `source_lens`). Training, scoring and decoding only talk to this interface.
    """

    num_virtual_tokens = 0  # cache positions before the first real token

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model = model
        self.method = method

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int = 0,
                use_cache: bool = False, source_lens: torch.Tensor | None = None):
        """Run fresh, left-padded sequences; position ids count real tokens only, after the virtual ones.

        `source_lens` (tokens of each row that are source; None: the whole row is source, as in decoding and scoring)
        only matters to methods that act between source and target (infix); the others ignore it.
        """
        mask = torch.cat([self.virtual_mask(attention_mask), attention_mask], dim=1)
        return self.model(input_ids=input_ids, attention_mask=mask,
                          position_ids=positions(attention_mask, self.virtual_offsets()),
                          past_key_values=self.initial_cache(input_ids.shape[0]), use_cache=use_cache,
                          logits_to_keep=logits_to_keep)

    def virtual_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """The attention mask of the `num_virtual_tokens` cache positions of each row (a fused model whose cells
        have fewer virtual tokens masks the rest)."""
        return attention_mask.new_ones(attention_mask.shape[0], self.num_virtual_tokens)

    def virtual_offsets(self) -> int | torch.Tensor:
        """The position of each row's first real token: after its virtual ones (per row, (batch, 1), when fused)."""
        return self.num_virtual_tokens

    def step(self, input_ids, attention_mask, position_ids, cache):
        """Continue sequences whose keys/values are in `cache`; `attention_mask` covers the cache too."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          past_key_values=cache, use_cache=True, logits_to_keep=1)

    def initial_cache(self, batch_size: int):
        """The keys/values every sequence starts from (`num_virtual_tokens` positions), or None."""
        return None

    def trainable_state_dict(self) -> dict:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict) -> None:
        params = dict(self.named_parameters())
        for name, value in state.items():
            params[name].data.copy_(value)

    def parameter_counts(self) -> dict:
        """Trainable and base-model parameter counts; the percentage is what the papers report ("0.1%")."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        base = sum(p.numel() for n, p in self.model.named_parameters() if not _is_method_parameter(n))
        if self.method == "full":
            base = trainable
        stored = self.stored_parameter_count(trainable)
        return {"trainable": trainable, "base": base, "trainable_pct": 100.0 * trainable / base,
                "stored": stored, "stored_pct": 100.0 * stored / base}

    def stored_parameter_count(self, trainable: int) -> int:
        """Parameters kept per task after training; a prefix MLP is dropped then (PrefixAdapted.freeze_prefix)."""
        return trainable


def _is_method_parameter(name: str) -> bool:
    return "lora_" in name or "prefix" in name
