"""What every method returns: the base model plus its trainable part, behind one interface for training, decoding,
recording and export. Each method owns its parts here, as a tuner does in HF PEFT: the names of its parameters inside
the base model (`trainable_prefix`), its parameter counts, its PEFT counterpart (`peft_type`, `peft_export`), a
hook that runs before training (`prepare`) and what a run's record keeps of it (`record_fields`)."""
from __future__ import annotations

import torch
from torch import nn

from ..batching import positions


class Adapted(nn.Module):
    """A model adapted by a method.

    Methods that only change weights (LoRA, full fine-tuning) add no activations. Methods that add activations
    (the prefix family) subclass it: `initial_cache` gives the keys/values every sequence starts from (built from
    trainable parameters, so gradients reach them); embedding-only and infix override `forward` instead (virtual
    input embeddings; a 4-D mask that shows the infix only from the source's last token on, which needs
    `source_lens`). Training, scoring and decoding only talk to this interface.
    """

    method = "base"            # the method's name (conf/method/*.yaml `name`)
    num_virtual_tokens = 0     # cache positions before the first real token
    trainable_prefix = None    # what the names of the method's parameters inside the base model contain (LoRA's
    # "lora_", as HF PEFT's tuner prefix); None: the method adds none there (its parameters sit beside the model)
    peft_type = None           # HF PEFT's counterpart (adapter_config.json's peft_type); None: no PEFT export

    def __init__(self, model: nn.Module, method: str | None = None):
        super().__init__()
        self.model = model
        if method is not None:
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

    def prepare(self, evaluator, dev_decode) -> None:
        """Before training, with the run's dev `evaluator` (`evaluation.Evaluator`) and decoding: choices a method
        makes on dev (a discrete prompt picks its prompt among candidates). Nothing for most methods."""

    def record_fields(self) -> dict:
        """What a run's record keeps of the adapted model besides its parameter counts: the real prefix length k
        (init words or a chosen prompt set it; the config's `num_virtual_tokens` is only what was asked for)."""
        return {"num_virtual_tokens": self.num_virtual_tokens}

    def trainable_state_dict(self) -> dict:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict) -> None:
        params = dict(self.named_parameters())
        for name, value in state.items():
            params[name].data.copy_(value)

    def parameter_counts(self) -> dict:
        """Trainable and base-model parameter counts; the percentage is what the papers report ("0.1%"). The base
        is every weight of the model that is not the method's (`trainable_prefix`): under full fine-tuning, exactly
        the trainable weights."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        base = sum(p.numel() for n, p in self.model.named_parameters()
                   if self.trainable_prefix is None or self.trainable_prefix not in n)
        stored = self.stored_parameter_count(trainable)
        return {"trainable": trainable, "base": base, "trainable_pct": 100.0 * trainable / base,
                "stored": stored, "stored_pct": 100.0 * stored / base}

    def stored_parameter_count(self, trainable: int) -> int:
        """Parameters kept per task after training; a prefix MLP is dropped then (PrefixAdapted.freeze_prefix)."""
        return trainable

    def peft_export(self) -> tuple[dict, dict]:
        """HF PEFT's adapter of this model: (the method's own adapter_config.json fields, the weights by PEFT's
        names); `export.export_peft` adds the common fields and writes them. Only where `peft_type` is set."""
        raise NotImplementedError(f"method {self.method!r} has no PEFT export")


def freeze_base(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
