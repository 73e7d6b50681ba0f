"""Tokenized examples, length-grouped batches and padding.

Everything is left-padded: training rows are [pad.., source, target], so all targets end in the last columns and
the LM head only runs on those (`logits_to_keep`); decoding and scoring rows are [pad.., source]. Position ids
count real tokens only, so padding never shifts them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass
class Encoded:
    source: list[int]
    target: list[int]

    def __len__(self):
        return len(self.source) + len(self.target)


def encode_source(tokenizer, text: str, max_tokens: int | None, span: tuple[int, int] | None = None) -> list[int]:
    """Token ids of a source of at most `max_tokens`. An over-long source loses the end of its document (the
    characters `span` of `text`), never the template around it: XSum keeps its trailing "Summary:" cue. Without a
    span (hand-made examples) the first `max_tokens` tokens are kept."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if not max_tokens or len(ids) <= max_tokens:
        return ids
    if span is None:
        return ids[:max_tokens]
    head, document, tail = text[:span[0]], text[span[0]:span[1]], text[span[1]:]
    doc_ids = tokenizer(document, add_special_tokens=False).input_ids
    keep = len(doc_ids) - (len(ids) - max_tokens)
    while keep > 0:  # re-tokenizing the cut text may merge tokens differently: cut again until it fits
        cut = tokenizer.decode(doc_ids[:keep]).rstrip("\ufffd")  # no half of a multi-byte character
        ids = tokenizer(head + cut + tail, add_special_tokens=False).input_ids
        if len(ids) <= max_tokens:
            return ids
        keep -= len(ids) - max_tokens
    raise ValueError(f"the source template alone is longer than max_source_tokens={max_tokens}: {head + tail!r}")


def encode_examples(examples, tokenizer, max_source: int | None, max_target: int | None, append_eos: bool):
    """Source and target are tokenized separately so the boundary never merges into one token."""
    eos = [tokenizer.eos_token_id] if append_eos else []
    out = []
    for ex in examples:
        target = tokenizer(ex.target, add_special_tokens=False).input_ids
        target = (target[:max_target] if max_target else target) + eos
        out.append(Encoded(encode_source(tokenizer, ex.source, max_source, ex.span), target))
    return out


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, mega_factor: int = 50) -> list[list[int]]:
    """Shuffle, sort by length inside mega-batches of `mega_factor` batches, shuffle the batches.

    Sequences of similar length share a batch, so dynamic padding wastes little, while the order stays random.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * mega_factor
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate_train(items: list[Encoded], pad_id: int) -> dict:
    """Left-padded [source, target] rows; `labels` is IGNORE except on target tokens."""
    input_ids, mask = left_pad([it.source + it.target for it in items], pad_id)
    labels = torch.full_like(input_ids, IGNORE)
    for row, it in enumerate(items):
        labels[row, input_ids.shape[1] - len(it.target):] = torch.tensor(it.target)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels,
            "target_width": max(len(it.target) for it in items),
            "source_lens": torch.tensor([len(it.source) for it in items])}


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, s in enumerate(sequences):
        if s:
            ids[row, width - len(s):] = torch.tensor(s)
            mask[row, width - len(s):] = 1
    return ids, mask


def positions(mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Position ids that count real tokens only (left padding does not shift them); `offset` skips virtual tokens."""
    return (mask.cumsum(-1) - 1).clamp(min=0) + offset
