"""The shared trainer: one visible loop for every method and task.

AdamW, linear warmup then linear decay, gradient accumulation, bf16 autocast where the hardware has it,
length-grouped batches with dynamic padding, an evaluation on dev after every epoch, and a selection rule:
`best_dev` restores the trainable weights of the best dev epoch before the test evaluation, `final` keeps the last.
Built on accelerate, so `accelerate launch -m peft_repro ...` runs the same loop as DDP on several GPUs.
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import IGNORE, collate_train, encode_examples, length_grouped_batches
from .decoding import DecodeConfig
from .evaluation import Evaluator, test_results

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; caps the epochs
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto: bf16 where the device supports it, else fp32
    select: str = "best_dev"  # or "final"
    eval_batch_size: int = 32
    seed: int = 0
    save_checkpoint: bool = True
    log_every: int = 10

    def uses_bf16(self) -> bool:
        return self.precision == "bf16" or (self.precision == "auto" and bf16_available())

    def __post_init__(self):
        if self.select not in ("best_dev", "final"):
            raise ValueError(f"trainer.select must be best_dev or final, not {self.select!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"trainer.precision must be auto, bf16 or fp32, not {self.precision!r}")
        if not self.lr > 0:  # nan too; inf is left to the divergence guard
            raise ValueError(f"trainer.lr must be a positive learning rate, not {self.lr}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1:
            raise ValueError("trainer.batch_size, grad_accum and epochs must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"trainer.max_steps must be >= 1 or null (no cap), not {self.max_steps}")


class Diverged(RuntimeError):
    """The training loss stopped being a finite number: the run is recorded as diverged, never with its metrics."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"training diverged at step {step}: loss {loss}")
        self.step, self.loss = step, loss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_device() -> torch.device:
    """Where runs train (the Accelerator below picks the same): the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_available() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def lm_loss(model, batch: dict, device) -> torch.Tensor:
    """Mean cross-entropy over target tokens; the LM head only runs on the last target_width + 1 columns."""
    keep = batch["target_width"] + 1
    source_lens = batch.get("source_lens")
    logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device), logits_to_keep=keep,
                   source_lens=None if source_lens is None else source_lens.to(device)).logits
    targets = batch["labels"][:, -keep + 1:].to(device)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                             ignore_index=IGNORE)


def lr_schedule(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def train(adapted, tokenizer, task, task_cfg, cfg: TrainConfig, dev_decode: DecodeConfig,
          test_decode: DecodeConfig | None, run_dir: Path, logger=None, evaluate_test: bool = True,
          resume_file: Path | None = None, checkpoint_every: int | None = None) -> dict:
    """Train `adapted` on the task, select on dev, evaluate on test. Returns metrics, curves and timings.
    `evaluate_test=False` (an lr-grid point, tested only if its rate is chosen) returns the selected trainable state
    as `state` instead of test results. `resume_file`: the training state is saved there at every epoch end (and
    every `checkpoint_every` steps; 0: never), and a run that finds it continues from it, to the same result."""
    from accelerate import Accelerator

    seed_everything(cfg.seed)
    use_bf16 = cfg.uses_bf16()
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no", gradient_accumulation_steps=cfg.grad_accum,
                              cpu=not torch.cuda.is_available())
    data = encode_examples(task.train_examples(), tokenizer, task_cfg.get("max_source_tokens"),
                           task_cfg.get("max_target_tokens"), append_eos=task.kind == "generation")
    if not data:
        raise ValueError("the training set is empty")
    params = [p for p in adapted.parameters() if p.requires_grad]
    # zero trainable parameters (discrete prompts): no training steps, one dev evaluation, then test
    optimizer = torch.optim.AdamW(params or [torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    batches_per_epoch = math.ceil(len(data) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = min(cfg.max_steps or 10**12, steps_per_epoch * cfg.epochs) if params else 0
    epochs = math.ceil(total_steps / steps_per_epoch) if params else 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg.warmup_steps, total_steps))
    model, optimizer, scheduler = accelerator.prepare(adapted, optimizer, scheduler)
    evaluator = Evaluator(task, tokenizer, task_cfg, cfg.eval_batch_size)

    history, best, step, tokens, train_seconds = [], None, 0, 0, 0.0
    start_epoch, start_batch = 0, 0
    saving = resume_file is not None and checkpoint_every != 0 and accelerator.is_main_process

    def checkpoint(next_epoch: int, next_batch: int) -> None:
        if saving:
            save_resume(resume_file, {
                "epoch": next_epoch, "batch": next_batch, "step": step, "tokens": tokens,
                "train_seconds": train_seconds + time.time() - epoch_start, "history": history, "best": best,
                "trainable": accelerator.unwrap_model(model).trainable_state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": (torch.get_rng_state(), random.getstate(), np.random.get_state(),
                        torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)})

    if resume_file is not None and resume_file.exists():
        state = torch.load(resume_file, weights_only=False, map_location="cpu")  # saved on a GPU, loads anywhere
        accelerator.unwrap_model(model).load_trainable_state_dict(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"][0]), random.setstate(state["rng"][1]), np.random.set_state(state["rng"][2])
        if len(state["rng"]) > 3 and state["rng"][3] is not None and torch.cuda.is_available():  # dropout's stream
            torch.cuda.set_rng_state_all(state["rng"][3])
        start_epoch, start_batch, step, tokens = state["epoch"], state["batch"], state["step"], state["tokens"]
        train_seconds, history, best = state["train_seconds"], state["history"], state["best"]
        log.info("resuming from %s: epoch %d, step %d", resume_file, start_epoch, step)
    bar = tqdm(total=total_steps, initial=step, desc=f"train {adapted.method}", disable=not accelerator.is_main_process)
    for epoch in range(start_epoch, epochs):
        model.train()
        epoch_start = time.time()
        batches = length_grouped_batches([len(d) for d in data], cfg.batch_size, seed=cfg.seed + epoch)
        batches = batches[accelerator.process_index::accelerator.num_processes] if params else []
        for index, batch_ids in enumerate(batches):
            if epoch == start_epoch and index < start_batch:  # done before the checkpoint
                continue
            batch = collate_train([data[i] for i in batch_ids], tokenizer.pad_token_id)
            with accelerator.accumulate(model):
                loss = lm_loss(model, batch, accelerator.device)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            tokens += int(batch["attention_mask"].sum())
            if accelerator.sync_gradients:
                if not math.isfinite(loss_value := loss.item()):  # one sync per step, as the progress bar had
                    raise Diverged(step + 1, loss_value)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", epoch=epoch)
                if step % cfg.log_every == 0 or step == total_steps:
                    point = {"step": step, "epoch": epoch, "loss": loss_value, "lr": scheduler.get_last_lr()[0]}
                    history.append(point)
                    if logger:
                        logger.log({"train/" + k: v for k, v in point.items()}, step=step)
                if step >= total_steps:
                    break
                if checkpoint_every and step % checkpoint_every == 0:
                    checkpoint(epoch, index + 1)
        train_seconds += time.time() - epoch_start
        model.eval()
        unwrapped = accelerator.unwrap_model(model)
        with accelerator.autocast():
            dev, _, _ = evaluator.evaluate(unwrapped, "dev", dev_decode, full=False, desc=f"dev epoch {epoch}")
        dev_value = dev[task.primary_metric]
        log.info("epoch %d dev %s", epoch, dev)
        if logger:
            logger.log({f"dev/{k}": v for k, v in dev.items()} | {"epoch": epoch}, step=step)
        history.append({"step": step, "epoch": epoch, **{f"dev_{k}": v for k, v in dev.items()}})
        if best is None or cfg.select == "final" or dev_value > best["value"]:
            best = {"epoch": epoch, "value": dev_value, "dev": dev,
                    "state": {k: v.detach().clone() for k, v in unwrapped.trainable_state_dict().items()}}
        epoch_start = time.time()
        checkpoint(epoch + 1, 0)
        if step >= total_steps:
            break
    bar.close()

    if cfg.save_checkpoint and accelerator.is_main_process:
        from safetensors.torch import save_file

        run_dir.mkdir(parents=True, exist_ok=True)  # an lr-grid point's folder exists only once something is saved
        save_file({k: v.contiguous() for k, v in best["state"].items()}, str(run_dir / "trainable.safetensors"))
    out = {"dev": best["dev"], "selected_epoch": best["epoch"], "history": history, "train_examples": len(data),
           "steps": step, "train_tokens": tokens, "train_seconds": train_seconds,
           "tokens_per_second": tokens / train_seconds if train_seconds else None, "bf16": use_bf16}
    if not evaluate_test:
        return out | {"test": None, "test_items": None, "samples": [], "state": best["state"]}
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_trainable_state_dict(best["state"])
    with accelerator.autocast():
        return out | test_results(unwrapped, evaluator, test_decode)


def save_resume(path: Path, state: dict) -> None:
    """Atomically: a kill while saving leaves the previous checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
