"""Predictions and scores of a task's dev or test items, for any adapted model: decoding (generation tasks) or
label-word scoring (classification), and the test results a run record holds."""
from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from .batching import encode_source, left_pad
from .decoding import DecodeConfig, generate, model_device


def stop_token_ids(tokenizer, at_newline: bool) -> list[int]:
    """eos, plus every token whose text contains a newline when outputs are one line (E2E)."""
    stops = {tokenizer.eos_token_id}
    if at_newline:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        stops |= {i for i, t in enumerate(texts) if "\n" in t}
    return sorted(stops)


class Evaluator:
    """Predictions and scores of one task on one split, for any adapted model."""

    def __init__(self, task, tokenizer, task_cfg, eval_batch_size: int):
        self.task, self.tok, self.cfg = task, tokenizer, task_cfg
        self.eval_batch_size = eval_batch_size
        self.stops = stop_token_ids(tokenizer, task_cfg.get("stop_at_newline", False)) \
            if task.kind == "generation" else None
        self.label_ids = [tokenizer(w, add_special_tokens=False).input_ids for w in task.label_words]

    @torch.no_grad()
    def predict(self, model, items, decode: DecodeConfig | None = None, desc: str = "eval",
                cells: list[int] | None = None):
        """Predictions in item order. `cells`: a fused model's cell of each item (peft_repro/fused.py)."""
        sources = [encode_source(self.tok, it.source, self.cfg.get("max_source_tokens"), it.span) for it in items]
        with tqdm(total=len(items), desc=desc, leave=False) as bar:
            if self.task.kind == "generation":
                outs = generate(model, sources, decode, self.stops, self.tok.pad_token_id, progress=bar, rows=cells)
                return [self.tok.decode(o, skip_special_tokens=True).strip() for o in outs]
            return self._classify(model, sources, bar, cells)

    def _classify(self, model, sources, bar, cells: list[int] | None = None) -> list[int]:
        """Argmax over labels of log p(label word | source); one forward per batch when every word is one token.
        Batches hold sources of similar length (less padding); predictions come back in input order."""
        single = all(len(ids) == 1 for ids in self.label_ids)
        order = sorted(range(len(sources)), key=lambda i: (cells[i] if cells else 0, -len(sources[i])))
        preds = [0] * len(sources)
        device = model_device(model)
        for start in range(0, len(order), self.eval_batch_size):
            rows = order[start:start + self.eval_batch_size]
            chunk = [sources[i] for i in rows]
            if cells:
                model.use_rows(torch.tensor([cells[i] for i in rows]).repeat_interleave(
                    1 if single else len(self.label_ids)))
            if single:
                ids, mask = (t.to(device) for t in left_pad(chunk, self.tok.pad_token_id))
                logits = model(ids, mask, logits_to_keep=1).logits[:, -1].float()
                first = torch.tensor([ids_[0] for ids_ in self.label_ids], device=device)
                chunk_preds = logits.log_softmax(-1)[:, first].argmax(-1).tolist()
            else:
                chunk_preds = self._classify_multi(model, chunk, device)
            for i, pred in zip(rows, chunk_preds):
                preds[i] = pred
            bar.update(len(chunk))
        return preds

    def _classify_multi(self, model, chunk, device) -> list[int]:
        n = len(self.label_ids)
        seqs = [src + lab for src in chunk for lab in self.label_ids]
        ids, mask = (t.to(device) for t in left_pad(seqs, self.tok.pad_token_id))
        source_lens = torch.tensor([len(src) for src in chunk for _ in self.label_ids], device=device)
        logp = model(ids, mask, source_lens=source_lens).logits[:, :-1].float().log_softmax(-1)
        token_logp = logp.gather(-1, ids[:, 1:, None])[..., 0]
        lengths = torch.tensor([len(lab) for _ in chunk for lab in self.label_ids], device=device)
        positions = torch.arange(ids.shape[1] - 1, device=device)[None, :]
        in_label = positions >= (ids.shape[1] - 1 - lengths)[:, None]
        scores = (token_logp * in_label).sum(-1).view(len(chunk), n)
        return scores.argmax(-1).tolist()

    def evaluate(self, model, split: str, decode: DecodeConfig | None, full: bool, desc: str):
        items = self.task.eval_items(split)
        preds = self.predict(model, items, decode, desc=desc)
        return self.task.score(preds, items, full=full), preds, items


def test_results(model, evaluator: Evaluator, decode: DecodeConfig | None) -> dict:
    """The test scores of a trained model, each item's additive metric statistics (the claims resample test items
    with them) and the samples."""
    started = time.time()
    items = evaluator.task.eval_items("test")
    preds = evaluator.predict(model, items, decode, desc="test")
    return test_record(evaluator.task, preds, items, time.time() - started)


def test_record(task, preds: list, items: list, decode_seconds: float) -> dict:
    """`test_results` from predictions (`test_seconds` counts their decoding and the scoring)."""
    started = time.time()
    test = task.score(preds, items, full=True)
    return {"test": test, "test_seconds": decode_seconds + time.time() - started,
            "test_items": task.test_items(preds, items),
            "samples": [{"source": it.source, "prediction": p, "references": it.references, "label": it.label}
                        for it, p in zip(items, preds)]}
