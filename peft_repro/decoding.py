"""Batched greedy and beam search over any cache content.

transformers' `generate()` rebuilds the cache itself and silently drops trainable keys/values that a method puts
there (prefix-tuning), so decoding is a loop of our own that starts from `model.initial_cache()`. The beam search
follows transformers' vectorized one step for step (top (1 + #stop tokens) * beams candidates, finished
hypotheses scored by sum log-prob / generated_length ** length_penalty, the same early-stop heuristic), so on a
plain model it returns exactly what `generate()` returns.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .batching import left_pad, positions

NEG = -1.0e9


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@dataclass
class DecodeConfig:
    num_beams: int = 1
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 0  # over generated tokens only: the source is the input, not text to avoid
    length_penalty: float = 1.0
    early_stopping: bool = False
    batch_size: int = 16

    def __post_init__(self):
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise ValueError("decoding needs num_beams >= 1 and max_new_tokens >= 1")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens={self.min_new_tokens} > max_new_tokens={self.max_new_tokens}")


def _banned_ngram_tokens(generated: torch.Tensor, n: int) -> list[list[int]]:
    """Per row: tokens that would complete an n-gram already present in the row's generated tokens."""
    banned = []
    for row in generated.tolist():
        if len(row) + 1 < n:
            banned.append([])
            continue
        prefix = tuple(row[len(row) - n + 1:]) if n > 1 else ()
        banned.append([row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i:i + n - 1]) == prefix])
    return banned


def _process(log_probs: torch.Tensor, generated: torch.Tensor, step: int, cfg: DecodeConfig, stop: torch.Tensor):
    if step < cfg.min_new_tokens:
        log_probs[:, stop] = -float("inf")
    if cfg.no_repeat_ngram_size > 0:
        for row, tokens in enumerate(_banned_ngram_tokens(generated, cfg.no_repeat_ngram_size)):
            log_probs[row, tokens] = -float("inf")
    return log_probs


class _Stepper:
    """Feeds tokens through the model, keeping cache, attention mask and positions in step; `rows` (a fused sweep's
    cell of each row, see peft_repro/fused.py) follows the rows too."""

    def __init__(self, model, input_ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor | None = None):
        self.model, self.rows = model, rows
        if rows is not None:
            model.use_rows(rows)
        self.mask = torch.cat([model.virtual_mask(mask), mask], dim=1)
        self.pos = positions(mask, model.virtual_offsets())[:, -1:]
        out = model(input_ids, mask, logits_to_keep=1, use_cache=True)
        self.cache, self.logits = out.past_key_values, out.logits[:, -1, :].float()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        self.pos = self.pos + 1
        out = self.model.step(tokens[:, None], self.mask, self.pos, self.cache)
        self.cache, self.logits = out.past_key_values, out.logits[:, -1, :].float()
        return self.logits

    def reorder(self, index: torch.Tensor, logits: bool = False) -> None:
        """Keep (and repeat) the rows `index`; `logits`: theirs too (only where no step follows that replaces them:
        copying them costs a rows x vocabulary copy per step)."""
        self.cache.reorder_cache(index)
        self.mask = self.mask[index]
        self.pos = self.pos[index]
        self.logits = self.logits[index] if logits else None
        if self.rows is not None:
            self.rows = self.rows[index]
            self.model.use_rows(self.rows)


def _greedy(model, ids, mask, cfg: DecodeConfig, stop: torch.Tensor, pad_id: int, rows=None) -> torch.Tensor:
    stepper = _Stepper(model, ids, mask, rows)
    out = ids.new_full((ids.shape[0], cfg.max_new_tokens), pad_id)
    alive = torch.arange(ids.shape[0], device=ids.device)  # the batch rows still being decoded, as indices into `out`
    for step in range(cfg.max_new_tokens):
        scores = _process(stepper.logits.clone(), out[alive, :step], step, cfg, stop)
        tokens = scores.argmax(-1)
        out[alive, step] = tokens
        running = ~torch.isin(tokens, stop)
        if not running.any() or step + 1 == cfg.max_new_tokens:
            break
        if not running.all():  # finished rows leave the batch: the rest decode as before, with less work
            stepper.reorder(running.nonzero()[:, 0])
            alive, tokens = alive[running], tokens[running]
        stepper.step(tokens)
    return out[:, : step + 1]


def _beam(model, ids, mask, cfg: DecodeConfig, stop: torch.Tensor, pad_id: int, rows=None) -> torch.Tensor:
    batch, k, steps = ids.shape[0], cfg.num_beams, cfg.max_new_tokens
    stepper = _Stepper(model, ids, mask, rows)  # the source once per element, then its cache k times
    dev = ids.device
    stepper.reorder(torch.arange(batch, device=dev).repeat_interleave(k), logits=True)
    vocab = stepper.logits.shape[-1]
    keep = max(2, 1 + len(stop)) * k  # enough candidates that `k` of them are still running
    running_seqs = ids.new_full((batch, k, steps), pad_id)
    running_scores = torch.zeros(batch, k, device=dev)
    running_scores[:, 1:] = NEG
    done_seqs = running_seqs.clone()
    done_scores = torch.full((batch, k), NEG, device=dev)
    done = torch.zeros(batch, k, dtype=torch.bool, device=dev)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=dev)
    top_k = torch.arange(keep, device=dev) < k
    offsets = torch.arange(batch, device=dev)[:, None] * k
    out = done_seqs[:, 0].clone()  # each element's best hypothesis, written while it is in the batch
    alive = torch.arange(batch, device=dev)
    for step in range(steps):
        flat_seqs = running_seqs.view(batch * k, steps)[:, :step]
        log_probs = _process(torch.log_softmax(stepper.logits, -1), flat_seqs, step, cfg, stop)
        total = (log_probs.view(batch, k, vocab) + running_scores[:, :, None]).view(batch, k * vocab)
        cand_scores, cand = torch.topk(total, keep)
        cand_beam, cand_token = cand // vocab, cand % vocab
        cand_seqs = torch.gather(running_seqs, 1, cand_beam[:, :, None].expand(-1, -1, steps)).clone()
        cand_seqs[:, :, step] = cand_token
        hits_stop = torch.isin(cand_token, stop) | (step + 1 == steps)

        # the k best candidates that did not stop keep running
        alive_scores = cand_scores + hits_stop.float() * NEG
        nxt = torch.topk(alive_scores, k)[1]
        running_seqs = torch.gather(cand_seqs, 1, nxt[:, :, None].expand(-1, -1, steps))
        running_scores = torch.gather(alive_scores, 1, nxt)
        parent = torch.gather(cand_beam, 1, nxt) + offsets

        # stopped candidates among the top k join the finished hypotheses if they beat the worst one
        final = cand_scores / ((step + 1) ** cfg.length_penalty)
        if cfg.early_stopping:
            final = final + (done.all(-1, keepdim=True)).float() * NEG
        final = final + (~improvable).float() * NEG + (~(hits_stop & top_k)).float() * NEG
        merged_scores = torch.cat([done_scores, final], 1)
        best = torch.topk(merged_scores, k)[1]
        done_seqs = torch.gather(torch.cat([done_seqs, cand_seqs], 1), 1, best[:, :, None].expand(-1, -1, steps))
        done_scores = torch.gather(merged_scores, 1, best)
        done = torch.gather(torch.cat([done, hits_stop & top_k], 1), 1, best)

        best_possible = running_scores[:, :1] / ((step + 1) ** cfg.length_penalty)
        worst_done = torch.where(done, done_scores.min(1, keepdim=True)[0], NEG)
        improvable &= (best_possible > worst_done).any(-1, keepdim=True)
        # a batch element whose finished hypotheses can no longer change leaves the batch (less work, same output)
        open_ = improvable[:, 0] & ~hits_stop.all(-1)
        if cfg.early_stopping:
            open_ &= ~done.all(-1)
        out[alive] = done_seqs[:, 0]
        if not open_.any() or step + 1 == steps:
            break
        if not open_.all():
            alive, parent = alive[open_], parent[open_]
            running_seqs, running_scores = running_seqs[open_], running_scores[open_]
            done_seqs, done_scores, done, improvable = done_seqs[open_], done_scores[open_], done[open_], improvable[open_]
            batch = len(alive)
            offsets = torch.arange(batch, device=dev)[:, None] * k
        stepper.reorder(parent.view(-1))
        stepper.step(running_seqs.view(batch * k, steps)[:, step])
    return out[:, : step + 1]


@torch.no_grad()
def generate(model, sources: list[list[int]], cfg: DecodeConfig, stop_ids: list[int], pad_id: int,
             progress=None, rows: list[int] | None = None) -> list[list[int]]:
    """Token ids generated for each source, cut before the first stop token. `rows`: the fused sweep's cell of each
    source (peft_repro/fused.py); a batch then holds the sources of few cells, each cell's together."""
    device = model_device(model)  # sources come as lists: every tensor of the search goes where the model is
    stop = torch.tensor(sorted(set(stop_ids)), device=device)
    search = _greedy if cfg.num_beams == 1 else _beam
    # similar lengths together: less padding; results are put back in input order
    order = sorted(range(len(sources)), key=lambda i: (rows[i] if rows else 0, -len(sources[i])))
    results: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), cfg.batch_size):
        chunk = order[start:start + cfg.batch_size]
        ids, mask = (t.to(device) for t in left_pad([sources[i] for i in chunk], pad_id))
        chunk_rows = torch.tensor([rows[i] for i in chunk], device=device) if rows else None
        out = search(model, ids, mask, cfg, stop, pad_id, chunk_rows).tolist()
        for i, tokens in zip(chunk, out):
            cut = next((j for j, t in enumerate(tokens) if t in set(stop_ids)), len(tokens))
            results[i] = tokens[:cut]
        if progress is not None:
            progress.update(len(chunk))
    return results
