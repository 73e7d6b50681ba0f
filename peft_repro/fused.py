"""Fused training (issue 13): many LoRA cells of one sweep train and evaluate together on one loaded base model.

A fused batch is the cells' own batches one after the other. Every adapted projection runs its frozen weight once
on the whole batch and each cell's (alpha / r) B A on that cell's rows only, so cells with different ranks and
target weights share a batch. A cell keeps everything it has when run alone (`train.train`): its seed (the initial
A; dropout masks from its own random stream, drawn at its own batch width), data order, batch size and
accumulation, optimizer, lr schedule, gradient clipping over its own parameters, a dev evaluation after each epoch
and the best-dev selection. Its loss is the mean over its own target tokens and cells share no parameter, so the
summed loss gives every cell the gradient it has alone: a fused cell's record equals the cell's record when run
alone, up to float noise (tests/test_fused.py). The sweep side (which runs fuse, records) is peft_repro/sweep.py.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .batching import IGNORE, collate_train, encode_examples, length_grouped_batches
from .methods import lora
from .methods.base import Adapted
from .train import Diverged, Evaluator, TrainConfig, _lr_lambda, seed_everything, test_record

log = logging.getLogger(__name__)


class Layout:
    """The rows of the next forward pass: runs of (cell, rows, width) in batch order, and each cell's random
    stream for its dropout. `width`: the cell's own padded length (its tokens are the last `width` columns)."""

    def __init__(self):
        self.runs: list[tuple[str, int, int | None]] = []
        self.streams: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def stream(self, cell: str, layer: lora.LoRALayer):
        """Draw `layer`'s dropout mask from `cell`'s own stream, as the cell run alone draws it."""
        if not (layer.training and isinstance(layer.dropout, nn.Dropout)):
            yield
            return
        cuda = layer.lora_A.is_cuda
        get, put = (torch.cuda.get_rng_state, torch.cuda.set_rng_state) if cuda else \
            (torch.get_rng_state, torch.set_rng_state)
        outer = get()
        put(self.streams[cell])
        try:
            yield
        finally:
            self.streams[cell] = get()
            put(outer)


class FusedLoRALayer(nn.Module):
    """A frozen projection shared by the cells, plus each cell's LoRA layer (by cell key) applied to its rows."""

    def __init__(self, base: nn.Module, layout: Layout):
        super().__init__()
        self.base = base
        self.cells = nn.ModuleDict()
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        pieces, start = [], 0
        for cell, rows, width in self.layout.runs:
            piece = out[start:start + rows]
            if cell in self.cells:
                layer = self.cells[cell]
                h = x[start:start + rows]
                width = width if width and width < h.shape[1] else None
                with self.layout.stream(cell, layer):
                    delta = layer.delta(h if width is None else h[:, -width:]).to(out.dtype)
                piece = piece + delta if width is None else \
                    torch.cat([piece[:, :-width], piece[:, -width:] + delta], dim=1)
            pieces.append(piece)
            start += rows
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]


class FusedLoRA(Adapted):
    """One frozen base model with the LoRA layers of several cells; `use_rows` says which rows are whose."""

    def __init__(self, model: nn.Module, cells: list[tuple[lora.LoRAConfig, int]]):
        super().__init__(model, "lora")
        for p in model.parameters():
            p.requires_grad_(False)
        self.layout = Layout()
        self.cell_count = len(cells)
        device = next(model.parameters()).device
        built = []
        for index, (cfg, seed) in enumerate(cells):
            seed_everything(seed)  # the draws of `lora.apply` in a run of this seed
            built.append(lora.new_layers(model, cfg))
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)  # a run's training starts from this state (train.train seeds again)
                self.layout.streams[str(index)] = torch.cuda.get_rng_state() if device.type == "cuda" \
                    else torch.get_rng_state()
        names = [name for name, _ in model.named_modules() if any(name in layers for layers in built)]
        # each cell's parameters under the names they have in a run of the cell alone (its saved adapter)
        self.cell_params: list[dict[str, nn.Parameter]] = [{} for _ in cells]
        for name in names:
            fused = FusedLoRALayer(model.get_submodule(name), self.layout)
            for index, layers in enumerate(built):
                if name in layers:
                    fused.cells[str(index)] = layers[name]
                    self.cell_params[index][f"model.{name}.lora_A"] = layers[name].lora_A
                    self.cell_params[index][f"model.{name}.lora_B"] = layers[name].lora_B
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, fused)

    def use_rows(self, rows: torch.Tensor | list[int], widths: list[int] | None = None) -> None:
        """The cell of each row of the next forward passes (rows of a cell must be adjacent)."""
        keys, counts = torch.unique_consecutive(torch.as_tensor(rows), return_counts=True)
        keys, counts = keys.tolist(), counts.tolist()
        if len(set(keys)) != len(keys):
            raise ValueError("a fused batch must hold each cell's rows together")
        self.layout.runs = [(str(k), n, widths[i] if widths else None) for i, (k, n) in enumerate(zip(keys, counts))]

    def cell_state(self, index: int) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.cell_params[index].items()}

    def load_cell_state(self, index: int, state: dict[str, torch.Tensor]) -> None:
        for name, p in self.cell_params[index].items():
            p.data.copy_(state[name])

    def cell_parameter_counts(self, index: int) -> dict:
        """What `parameter_counts` gives for the cell run alone."""
        trainable = sum(p.numel() for p in self.cell_params[index].values())
        base = sum(p.numel() for n, p in self.model.named_parameters() if "lora_" not in n)
        return {"trainable": trainable, "base": base, "trainable_pct": 100.0 * trainable / base,
                "stored": trainable, "stored_pct": 100.0 * trainable / base}


def base_has_dropout(model: nn.Module) -> bool:
    """Dropout in the frozen model itself draws one mask over the whole fused batch: such models run cell by cell."""
    config = model.config
    rates = [getattr(config, k, 0) or 0 for k in ("attention_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                                                   "hidden_dropout", "dropout")]
    modules = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    return any(float(r) > 0 for r in rates + modules if isinstance(r, (int, float)))


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
    best: dict | None = None
    diverged: Diverged | None = None


def train_fused(model: FusedLoRA, tokenizer, task, task_cfg, cfgs: list[TrainConfig], dev_decode, test_decode,
                evaluate_test: list[bool], loggers: list | None = None, max_rows: int = 64) -> list[dict | Diverged]:
    """Train every cell of `model` (cell i with `cfgs[i]`), each selected on dev; per cell what `train.train`
    returns (with the selected `state`; no test results where `evaluate_test[i]` is False), or its `Diverged`.
    At most `max_rows` rows go through the model at once (a cell's batch is never split)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
                             torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps, total)), params,
                             loggers[index] if loggers else None))
    evaluator = Evaluator(task, tokenizer, task_cfg, cfgs[0].eval_batch_size)

    def autocast():
        return torch.autocast(device.type, torch.bfloat16, enabled=use_bf16)

    bar = tqdm(total=max(len(r.plan) for r in runs), desc=f"train {len(runs)} fused lora cells")
    for position in range(max(len(r.plan) for r in runs)):
        active = [r for r in runs if position < len(r.plan) and r.diverged is None]
        if not active:
            break
        model.train()
        started = time.time()
        losses = {}
        for chunk in _chunks(active, position, max_rows):
            with autocast():
                losses |= _forward_backward(model, chunk, position, data, tokenizer.pad_token_id, device)
        values = dict(zip(losses, torch.stack(list(losses.values())).tolist()))  # one host sync per fused step
        seconds = time.time() - started
        for r in active:
            micro = r.plan[position]
            r.train_seconds += seconds
            if micro.sync:
                _optimizer_step(r, micro, values[r.index])
        bar.update(1)
        ending = [r for r in active if r.plan[position].epoch_end and r.diverged is None]
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


def _chunks(active: list[_CellRun], position: int, max_rows: int):
    chunk, rows = [], 0
    for r in active:
        n = len(r.plan[position].batch)
        if chunk and rows + n > max_rows:
            yield chunk
            chunk, rows = [], 0
        chunk.append(r)
        rows += n
    if chunk:
        yield chunk


def _forward_backward(model: FusedLoRA, chunk: list[_CellRun], position: int, data, pad_id: int, device) -> dict:
    """One forward and backward over the cells' micro-batches, one after the other; each cell's loss is the mean
    over its own target tokens (divided by its accumulation steps, as accelerate does)."""
    batches = [collate_train([data[i] for i in r.plan[position].batch], pad_id) for r in chunk]
    width = max(b["input_ids"].shape[1] for b in batches)

    def left(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)

    ids = torch.cat([left(b["input_ids"], pad_id) for b in batches]).to(device)
    mask = torch.cat([left(b["attention_mask"], 0) for b in batches]).to(device)
    labels = torch.cat([left(b["labels"], IGNORE) for b in batches]).to(device)
    keep = max(b["target_width"] for b in batches) + 1
    model.use_rows([r.index for r, b in zip(chunk, batches) for _ in range(len(b["input_ids"]))],
                   [b["input_ids"].shape[1] for b in batches])
    logits = model(ids, mask, logits_to_keep=keep).logits[:, :-1].float()
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


def _optimizer_step(r: _CellRun, micro: _Micro, loss: float) -> None:
    if not math.isfinite(loss):
        r.diverged = Diverged(r.step + 1, loss)
        return
    if r.cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(r.params, r.cfg.max_grad_norm)
    r.optimizer.step()
    r.scheduler.step()
    r.optimizer.zero_grad()
    r.step += 1
    if r.step % r.cfg.log_every == 0 or r.step == r.total_steps:
        point = {"step": r.step, "epoch": micro.epoch, "loss": loss, "lr": r.scheduler.get_last_lr()[0]}
        r.history.append(point)
        if r.logger:
            r.logger.log({"train/" + k: v for k, v in point.items()}, step=r.step)


def _evaluate_dev(model: FusedLoRA, evaluator: Evaluator, ending: list[_CellRun], position: int, decode) -> None:
    """The dev evaluation that ends an epoch of these cells, decoded together; then each cell's selection."""
    primary = evaluator.task.primary_metric
    for r, (dev, _, _) in zip(ending, _predict_cells(model, evaluator, [r.index for r in ending], "dev", decode)):
        epoch = r.plan[position].epoch
        log.info("cell %d epoch %d dev %s", r.index, epoch, dev)
        if r.logger:
            r.logger.log({f"dev/{k}": v for k, v in dev.items()} | {"epoch": epoch}, step=r.step)
        r.history.append({"step": r.step, "epoch": epoch, **{f"dev_{k}": v for k, v in dev.items()}})
        if r.best is None or r.cfg.select == "final" or dev[primary] > r.best["value"]:
            r.best = {"epoch": epoch, "value": dev[primary], "dev": dev, "state": model.cell_state(r.index)}


def _predict_cells(model: FusedLoRA, evaluator: Evaluator, cells: list[int], split: str, decode):
    """Each cell's (scores, predictions, items) on `split`, all cells' items in one decoding."""
    items = evaluator.task.eval_items(split)
    preds = evaluator.predict(model, items * len(cells), decode, desc=f"{split} x{len(cells)} cells",
                              cells=[c for c in cells for _ in items])
    out = []
    for i in range(len(cells)):
        own = preds[i * len(items):(i + 1) * len(items)]
        out.append((evaluator.task.score(own, items, full=False), own, items))
    return out


def evaluate_cells(model: FusedLoRA, evaluator: Evaluator, cells: list[int], split: str, decode) -> list[dict]:
    """Each cell's test results (`train.test_results`), all cells decoded together."""
    started = time.time()
    items = evaluator.task.eval_items(split)
    preds = evaluator.predict(model, items * len(cells), decode, desc=f"{split} x{len(cells)} cells",
                              cells=[c for c in cells for _ in items])
    decoded = time.time() - started
    return [test_record(evaluator.task, preds[i * len(items):(i + 1) * len(items)], items, decoded / len(cells))
            for i in range(len(cells))]
