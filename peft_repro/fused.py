"""Fused training (issue 13): many cells of one sweep (LoRA, prefix, infix or embedding-only) train and evaluate
together on one loaded base model (peft_repro/methods/*_fused.py).

A fused batch is the cells' own batches one after the other. A cell keeps everything it has when run alone (`train.train`): its seed (the initial
A; dropout masks from its own random stream, drawn at its own batch width), data order, batch size and
accumulation, optimizer, lr schedule, gradient clipping over its own parameters, a dev evaluation after each epoch
and the best-dev selection. Its loss is the mean over its own target tokens and cells share no parameter, so the
summed loss gives every cell the gradient it has alone: a fused cell's record equals the cell's record when run
alone, up to float noise (tests/test_fused.py). The sweep side (which runs fuse, records) is peft_repro/sweep.py.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .batching import IGNORE, collate_train, encode_examples, length_grouped_batches
from .methods.fused_cells import FusedAdapted
from .evaluation import Evaluator, test_record
from .train import Diverged, TrainConfig, lr_schedule, train_device

log = logging.getLogger(__name__)


PAD_SLACK = {"cpu": 1.0, "cuda": 1.5}  # how much narrower than a pass's widest cell a cell may be and still join it


@dataclass
class _Micro:
    """One micro-batch of a cell's training, in the order `train.train` takes them."""
    epoch: int
    batch: list[int]
    sync: bool  # the optimizer steps after it (gradient accumulation)
    epoch_end: bool = False


def training_plan(lengths: list[int], cfg: TrainConfig) -> tuple[list[_Micro], int]:
    """The micro-batches of a run of `cfg` and its optimizer steps, as `train.train` (with accelerate's counting of
    accumulation across epochs) makes them."""
    steps_per_epoch = math.ceil(math.ceil(len(lengths) / cfg.batch_size) / cfg.grad_accum)
    total = min(cfg.max_steps or 10**12, steps_per_epoch * cfg.epochs)
    plan, micro, step = [], 0, 0
    for epoch in range(math.ceil(total / steps_per_epoch)):
        for batch in length_grouped_batches(lengths, cfg.batch_size, seed=cfg.seed + epoch):
            micro += 1
            sync = micro % cfg.grad_accum == 0
            step += sync
            plan.append(_Micro(epoch, batch, sync))
            if sync and step >= total:
                break
        plan[-1].epoch_end = True
        if step >= total:
            break
    return plan, total


@dataclass
class _CellRun:
    index: int
    cfg: TrainConfig
    plan: list[_Micro]
    total_steps: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    params: list[nn.Parameter]
    logger: object = None
    step: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    pending: list[tuple] = field(default_factory=list)  # (step, epoch, loss on the device, lr) not yet flushed
    best: dict | None = None
    diverged: Diverged | None = None


def train_fused(model: FusedAdapted, tokenizer, task, task_cfg, cfgs: list[TrainConfig], dev_decode, test_decode,
                evaluate_test: list[bool], loggers: list | None = None, max_rows: int = 64) -> list[dict | Diverged]:
    """Train every cell of `model` (cell i with `cfgs[i]`), each selected on dev; per cell what `train.train`
    returns (with the selected `state`; no test results where `evaluate_test[i]` is False), or its `Diverged`.
    At most `max_rows` rows go through the model at once (a cell's batch is never split)."""
    device = train_device()
    model.to(device)
    use_bf16 = cfgs[0].uses_bf16()
    data = encode_examples(task.train_examples(), tokenizer, task_cfg.get("max_source_tokens"),
                           task_cfg.get("max_target_tokens"), append_eos=task.kind == "generation")
    if not data:
        raise ValueError("the training set is empty")
    lengths = [len(d) for d in data]
    runs = []
    for index, cfg in enumerate(cfgs):
        params = list(model.cell_params[index].values())
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        plan, total = training_plan(lengths, cfg)
        runs.append(_CellRun(index, cfg, plan, total, optimizer,
                             torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg.warmup_steps, total)), params,
                             loggers[index] if loggers else None))
    evaluator = Evaluator(task, tokenizer, task_cfg, cfgs[0].eval_batch_size)

    def autocast():
        return torch.autocast(device.type, torch.bfloat16, enabled=use_bf16)

    positions = max(len(r.plan) for r in runs)
    bar = tqdm(total=positions, desc=f"train {len(runs)} fused {model.method} cells")
    flush_every = min(cfg.log_every for cfg in cfgs)
    for position in range(positions):
        active = [r for r in runs if position < len(r.plan) and r.diverged is None]
        if not active:
            break
        model.train()
        started = time.time()
        losses = {}
        for chunk in _chunks(active, position, max_rows, lengths, PAD_SLACK[device.type], model.cell_width):
            with autocast():
                losses |= _forward_backward(model, chunk, position, data, tokenizer.pad_token_id, device)
        for r in active:
            if r.plan[position].sync:
                _optimizer_step(r, r.plan[position], losses[r.index])
        ending = [r for r in active if r.plan[position].epoch_end]
        if ending or (position + 1) % flush_every == 0 or position + 1 == positions:
            _flush(active)  # the losses reach the host here only: no sync per step on a GPU
        seconds = time.time() - started
        for r in active:
            r.train_seconds += seconds
        bar.update(1)
        ending = [r for r in ending if r.diverged is None]
        if ending:
            model.eval()
            with autocast():
                _evaluate_dev(model, evaluator, ending, position, dev_decode)
    bar.close()

    outs: list[dict | Diverged] = [r.diverged for r in runs]
    kept = [r for r in runs if r.diverged is None]
    for r in kept:
        outs[r.index] = {"dev": r.best["dev"], "selected_epoch": r.best["epoch"], "history": r.history,
                         "train_examples": len(data), "steps": r.step, "train_tokens": r.tokens,
                         "train_seconds": r.train_seconds,
                         "tokens_per_second": r.tokens / r.train_seconds if r.train_seconds else None,
                         "bf16": use_bf16, "fused_cells": len(runs), "state": r.best["state"]}
        if not evaluate_test[r.index]:
            outs[r.index] |= {"test": None, "test_items": None, "samples": []}
    tested = [r for r in kept if evaluate_test[r.index]]
    if tested:
        for r in tested:
            model.load_cell_state(r.index, r.best["state"])
        model.eval()
        with autocast():
            for r, result in zip(tested, evaluate_cells(model, evaluator, [r.index for r in tested], "test",
                                                        test_decode)):
                outs[r.index] |= result
    return outs


def _chunks(active: list[_CellRun], position: int, max_rows: int, lengths: list[int], slack: float,
            cell_width=lambda index: 0):
    """The cells' micro-batches of one fused step, in forward passes of at most `max_rows` rows. A pass pads every
    row to its widest cell, so cells of similar width go together: a cell `slack` times narrower than the pass's
    widest starts a new pass (a cell's rows are never split). On a CPU, where one pass of many rows costs what
    separate passes cost, `PAD_SLACK` keeps only cells of equal width together; on a GPU a pass is cheap to widen.
    `cell_width`: positions a cell adds to its rows (embedding-only's virtual tokens)."""
    width = {r.index: max(lengths[i] for i in r.plan[position].batch) + cell_width(r.index) for r in active}
    chunk, rows = [], 0
    for r in sorted(active, key=lambda r: -width[r.index]):
        n = len(r.plan[position].batch)
        if chunk and (rows + n > max_rows or width[chunk[0].index] > slack * width[r.index]):
            yield chunk
            chunk, rows = [], 0
        chunk.append(r)
        rows += n
    if chunk:
        yield chunk


def _forward_backward(model: FusedAdapted, chunk: list[_CellRun], position: int, data, pad_id: int, device) -> dict:
    """One forward and backward over the cells' micro-batches, one after the other; each cell's loss is the mean
    over its own target tokens (divided by its accumulation steps, as accelerate does)."""
    batches = [collate_train([data[i] for i in r.plan[position].batch], pad_id) for r in chunk]
    width = max(b["input_ids"].shape[1] for b in batches)

    def left(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)

    ids = torch.cat([left(b["input_ids"], pad_id) for b in batches]).to(device)
    mask = torch.cat([left(b["attention_mask"], 0) for b in batches]).to(device)
    labels = torch.cat([left(b["labels"], IGNORE) for b in batches]).to(device)
    source_lens = torch.cat([b["source_lens"] for b in batches]).to(device)  # infix sits between source and target
    keep = max(b["target_width"] for b in batches) + 1
    model.use_rows([r.index for r, b in zip(chunk, batches) for _ in range(len(b["input_ids"]))],
                   [b["input_ids"].shape[1] for b in batches])
    logits = model(ids, mask, logits_to_keep=keep, source_lens=source_lens).logits[:, :-1].float()
    targets = labels[:, -keep + 1:]
    token_loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                                                   reduction="none").view(targets.shape)
    losses, total, start = {}, 0, 0
    for r, b in zip(chunk, batches):
        rows = slice(start, start + len(b["input_ids"]))
        losses[r.index] = token_loss[rows].sum() / (targets[rows] != IGNORE).sum()
        total = total + losses[r.index] / r.cfg.grad_accum
        start = rows.stop
    total.backward()
    for r, b in zip(chunk, batches):
        r.tokens += int(b["attention_mask"].sum())
    return {k: v.detach() for k, v in losses.items()}


def _optimizer_step(r: _CellRun, micro: _Micro, loss: torch.Tensor) -> None:
    """The cell's optimizer step; its loss waits in `pending` for `_flush` (a non-finite one stops the cell there)."""
    if r.cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(r.params, r.cfg.max_grad_norm)
    r.optimizer.step()
    r.scheduler.step()
    r.optimizer.zero_grad()
    r.step += 1
    r.pending.append((r.step, micro.epoch, loss, r.scheduler.get_last_lr()[0]))


def _flush(active: list[_CellRun]) -> None:
    """The cells' pending losses, copied to the host at once: the history's loss points, and the step at which a
    cell's loss stopped being finite (it is `Diverged` there, as `train.train` stops; its later steps are void)."""
    pending = [p for r in active for p in r.pending]
    if not pending:
        return
    values = iter(torch.stack([p[2] for p in pending]).float().tolist())
    for r in active:
        for step, epoch, _, lr in r.pending:
            loss = next(values)
            if r.diverged is not None:
                continue
            if not math.isfinite(loss):
                r.diverged = Diverged(step, loss)
            elif step % r.cfg.log_every == 0 or step == r.total_steps:
                point = {"step": step, "epoch": epoch, "loss": loss, "lr": lr}
                r.history.append(point)
                if r.logger:
                    r.logger.log({"train/" + k: v for k, v in point.items()}, step=step)
        r.pending = []


def _evaluate_dev(model: FusedAdapted, evaluator: Evaluator, ending: list[_CellRun], position: int, decode) -> None:
    """The dev evaluation that ends an epoch of these cells, decoded together; then each cell's selection."""
    primary = evaluator.task.primary_metric
    preds, items, _ = _predict_cells(model, evaluator, [r.index for r in ending], "dev", decode)
    for r, own in zip(ending, preds):
        dev, epoch = evaluator.task.score(own, items, full=False), r.plan[position].epoch
        log.info("cell %d epoch %d dev %s", r.index, epoch, dev)
        if r.logger:
            r.logger.log({f"dev/{k}": v for k, v in dev.items()} | {"epoch": epoch}, step=r.step)
        r.history.append({"step": r.step, "epoch": epoch, **{f"dev_{k}": v for k, v in dev.items()}})
        if r.best is None or r.cfg.select == "final" or dev[primary] > r.best["value"]:
            r.best = {"epoch": epoch, "value": dev[primary], "dev": dev, "state": model.cell_state(r.index)}


def _predict_cells(model: FusedAdapted, evaluator: Evaluator, cells: list[int], split: str, decode):
    """Each cell's predictions on `split` (all cells' items decoded together), the items and the seconds taken."""
    started = time.time()
    items = evaluator.task.eval_items(split)
    preds = evaluator.predict(model, items * len(cells), decode, desc=f"{split} x{len(cells)} cells",
                              cells=[c for c in cells for _ in items])
    n = len(items)
    return [preds[i * n:(i + 1) * n] for i in range(len(cells))], items, time.time() - started


def evaluate_cells(model: FusedAdapted, evaluator: Evaluator, cells: list[int], split: str, decode) -> list[dict]:
    """Each cell's test results (`train.test_results`), all cells decoded together."""
    preds, items, seconds = _predict_cells(model, evaluator, cells, split, decode)
    return [test_record(evaluator.task, own, items, seconds / len(cells)) for own in preds]
