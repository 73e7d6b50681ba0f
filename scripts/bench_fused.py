"""Training throughput of fused LoRA cells (peft_repro/fused.py) against one cell, ours and HF PEFT's, in one run.

At each per-cell batch size (8 and 32) on the same model and the same E2E training batches:
  (a) HF PEFT LoRA (r=4 on q,v) with a plain loop (forward with labels, backward, clip, AdamW), one cell;
  (b) our LoRA with our loss (`train.lm_loss`) and the same loop, one cell;
  (c) our fused step (`fused._forward_backward` + each cell's clip and AdamW), N cells of mixed ranks and targets.
Reports tokens/s (real tokens of every cell) and optimizer steps/s per cell, and the ratios (c)/(a) and (b)/(a).
Warm-up steps are not timed; CUDA is synchronized around the timed steps only. bf16 autocast where the device has
it (`precision: auto`), else fp32. Not a test.

    python scripts/bench_fused.py [--model smollm2_135m|tiny_llama] [--cells 8] [--steps 20] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
CELL_SHAPES = [(["q", "v"], 4), (["q"], 1), (["q", "k", "v", "o"], 8), (["q", "v"], 64)]  # (targets, rank), cycled


def batches(tokenizer, data_root: str, batch_size: int, count: int, seed: int):
    from peft_repro.batching import collate_train, encode_examples, length_grouped_batches
    from peft_repro.tasks import build_task

    task = build_task(OmegaConf.merge(OmegaConf.load(REPO / "conf/task/e2e.yaml"), {"max_train_examples": 2000}),
                      data_root)
    data = encode_examples(task.train_examples(), tokenizer, 256, 64, append_eos=True)
    order = length_grouped_batches([len(d) for d in data], batch_size, seed=seed)[:count]
    return [collate_train([data[i] for i in b], tokenizer.pad_token_id) for b in order]


def timed(step, n_warm: int, n: int, device) -> float:
    for _ in range(n_warm):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(args, batch_size: int, max_rows: int, model_cfg, device, bf16: bool) -> dict:
    from peft import LoraConfig, get_peft_model

    from peft_repro.fused import PAD_SLACK, _CellRun, _chunks, _forward_backward, _Micro
    from peft_repro.methods.lora_fused import FusedLoRA
    from peft_repro.methods import apply_method
    from peft_repro.methods.lora import LoRAConfig
    from peft_repro.models import load_model
    from peft_repro.train import TrainConfig, lm_loss

    def autocast():
        return torch.autocast(device.type, torch.bfloat16, enabled=bf16)

    total = args.warmup + args.steps
    model, tok = load_model(model_cfg)
    data = batches(tok, args.data_root, batch_size, total * max(args.cells, 1), seed=0)
    tokens = [int(b["attention_mask"].sum()) for b in data]
    out = {}

    def one_cell(adapted, loss_of) -> dict:
        """Steps of one cell, batch after batch: `loss_of(batch)`, backward, clip, AdamW."""
        adapted.to(device)
        params = [p for p in adapted.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        it = iter(range(10**9))

        def step():
            b = data[next(it) % total]
            with autocast():
                loss = loss_of(b)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()

        seconds = timed(step, args.warmup, args.steps, device)
        return {"seconds": seconds, "steps_per_s": args.steps / seconds,
                "tokens_per_s": sum(tokens[args.warmup:total]) / seconds}

    # (a) HF PEFT, plain loop
    theirs = get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                              lora_dropout=0.0))
    out["hf_peft"] = one_cell(theirs, lambda b: theirs(input_ids=b["input_ids"].to(device),
                                                       attention_mask=b["attention_mask"].to(device),
                                                       labels=b["labels"].to(device)).loss)
    theirs = None  # free the memory before the next model
    model, tok = load_model(model_cfg)

    # (b) ours, one cell
    ours = apply_method(model, {"name": "lora", "r": 4, "alpha": 32, "dropout": 0.0, "targets": ["q", "v"]})
    out["ours"] = one_cell(ours, lambda b: lm_loss(ours, b, device))
    ours = None
    model, tok = load_model(model_cfg)

    # (c) ours, fused: cell i takes batches i, i + N, ...
    n = args.cells
    shapes = [CELL_SHAPES[i % len(CELL_SHAPES)] for i in range(n)]
    fused = FusedLoRA(model, [(LoRAConfig(r=r, alpha=32, dropout=0.0, targets=t), i) for i, (t, r) in
                              enumerate(shapes)]).to(device)
    cfg = TrainConfig(batch_size=batch_size, precision="fp32")
    runs = []
    for i in range(n):
        params = list(fused.cell_params[i].values())
        opt = torch.optim.AdamW(params, lr=1e-4)
        plan = [_Micro(0, list(range(j * batch_size, (j + 1) * batch_size)), True) for j in range(total)]
        runs.append(_CellRun(i, cfg, plan, total, opt, None, params))
    flat = [row for b in data for row in _rows(b)]  # every row of the cells' batches, for _forward_backward
    lengths = [len(row) for row in flat]
    position = iter(range(10**9))

    def fused_step():
        p = next(position) % total
        for r in runs:  # cell i's batch at step p is batch p * N + i: the same rows as (a) and (b) take in turn
            r.plan[p].batch = list(range((p * n + r.index) * batch_size, (p * n + r.index + 1) * batch_size))
        with autocast():
            for chunk in _chunks(runs, p, max_rows, lengths, PAD_SLACK[device.type]):
                _forward_backward(fused, chunk, p, flat, tok.pad_token_id, device)
        for r in runs:
            torch.nn.utils.clip_grad_norm_(r.params, 1.0)
            r.optimizer.step()
            r.optimizer.zero_grad()

    seconds = timed(fused_step, args.warmup, args.steps, device)
    fused_tokens = sum(tokens[args.warmup * n:total * n])
    out["fused"] = {"cells": n, "max_rows": max_rows, "seconds": seconds, "steps_per_s_per_cell": args.steps / seconds,
                    "tokens_per_s": fused_tokens / seconds}
    out["ratio_fused_vs_hf_peft_tokens"] = out["fused"]["tokens_per_s"] / out["hf_peft"]["tokens_per_s"]
    out["ratio_ours_vs_hf_peft_tokens"] = out["ours"]["tokens_per_s"] / out["hf_peft"]["tokens_per_s"]
    return out


def _rows(batch: dict):
    """A collated batch back into its rows (source + target ids), for `fused._forward_backward`."""
    from peft_repro.batching import IGNORE, Encoded

    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        real = ids[mask.bool()].tolist()
        target = int((labels != IGNORE).sum())
        yield Encoded(real[:len(real) - target], real[len(real) - target:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2_135m", help="conf/model/<name>.yaml")
    parser.add_argument("--cells", type=int, default=8, help="fused cells (c)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on a GPU, 3 on a CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3 GPU, 1 CPU)")
    parser.add_argument("--max-rows", type=int, default=None, help="rows per fused forward (default: all cells; "
                        "cells of unlike batch widths still go in separate passes, as in fused training)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-root", default=os.environ.get("PEFT_REPRO_DATA_ROOT", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from peft_repro.results import git_state, hardware
    from peft_repro.train import bf16_available

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.steps = args.steps or (20 if device.type == "cuda" else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if device.type == "cuda" else 1)
    bf16 = bf16_available()
    model_cfg = OmegaConf.load(REPO / "conf" / "model" / f"{args.model}.yaml")
    report = {"hardware": hardware(), "git": git_state(), "torch": torch.__version__, "model": args.model,
              "precision": "bf16" if bf16 else "fp32", "threads": torch.get_num_threads(), "steps": args.steps,
              "warmup": args.warmup, "lora_one_cell": "r=4 on q,v", "fused_cell_shapes": CELL_SHAPES,
              "by_batch_size": {}}
    for batch_size in args.batch_sizes:
        max_rows = args.max_rows or args.cells * batch_size
        report["by_batch_size"][batch_size] = bench(args, batch_size, max_rows, model_cfg, device, bf16)
        print(json.dumps({batch_size: report["by_batch_size"][batch_size]}), flush=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
