"""How close evaluation runs to this CPU's matrix-multiply ceiling: what is left to speed up (issue 16).

One process, one torch thread. First the ceiling: SmolLM2-135M's projection GEMMs (q, k, v, o, gate, up, down) and
its LM head, timed alone at the row counts evaluation uses (a decoding step of 32 or 160 rows; a scoring batch of
about 1,600 token positions). Then three evaluations of a LoRA (r=4 on Wq,Wv) trained briefly on E2E as
scripts/bench_eval.py trains its adapter (so that outputs have their real lengths; `--state` loads one instead),
counting the token positions the model computed:
- MNLI dev label scoring (100 pairs, eval batch 32, length-sorted batches);
- E2E dev greedy decoding (50 MRs, batch 32);
- E2E test beam decoding (`--test-items` MRs, beam 5, batch 32).
Each phase's useful work is 2 x the non-embedding weights per real token position, plus 2 x the LM head per position
whose logits were kept (attention over the cache is left out: a few percent here). Achieved GFLOPS over the ceiling's
GFLOPS at the phase's row count is the share of the ceiling the evaluation uses; `padding` is the share of computed
positions that were padding. Run it on an otherwise idle machine: on a 2-vCPU machine a second busy process takes
about half of each number.

    python scripts/bench_ceiling.py [--state lora.safetensors] [--out results/bench/ceiling_<host>.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def gemm_ceiling(model, rows: int, seconds: float = 2.0) -> dict:
    """GFLOPS of the model's own projection weights and LM head as lone GEMMs on `rows` rows."""
    import torch

    layer = model.model.layers[0]
    weights = [layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight,
               layer.self_attn.o_proj.weight, layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight,
               layer.mlp.down_proj.weight]
    out = {}
    for name, group in (("body", weights), ("head", [model.lm_head.weight])):
        flops = sum(2 * rows * w.shape[0] * w.shape[1] for w in group)
        inputs = [torch.randn(rows, w.shape[1]) for w in group]
        for x, w in zip(inputs, group):
            torch.nn.functional.linear(x, w)  # warm-up
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for x, w in zip(inputs, group):
                torch.nn.functional.linear(x, w)
            n += 1
        out[name] = flops * n / (time.perf_counter() - start) / 1e9
    return out


class Counter:
    """Token positions the base model computed (all, and those under a 1 in the 2-D attention mask), and the rows
    the LM head scored."""

    def __init__(self, model):
        self.positions = self.real = self.head_rows = 0
        model.model.register_forward_pre_hook(self._body, with_kwargs=True)
        model.lm_head.register_forward_pre_hook(self._head)

    def _body(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.positions += ids.numel()
        mask = kwargs.get("attention_mask")
        new = ids.shape[1]
        # a 2-D mask covers the cache too: its last `new` columns are these positions
        self.real += int(mask[:, -new:].sum()) if mask is not None and mask.dim() == 2 else ids.numel()

    def _head(self, module, args):
        self.head_rows += args[0].numel() // args[0].shape[-1]

    def take(self) -> tuple[int, int, int]:
        out = (self.positions, self.real, self.head_rows)
        self.positions = self.real = self.head_rows = 0
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, help="trained LoRA weights instead of training them here")
    parser.add_argument("--train-steps", type=int, default=25)
    parser.add_argument("--test-items", type=int, default=64)
    parser.add_argument("--data-root", default=os.environ.get("PEFT_REPRO_DATA_ROOT", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "scripts"))
    import torch
    from bench_eval import METHOD, conf, train_adapter
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from peft_repro.decoding import DecodeConfig
    from peft_repro.evaluation import Evaluator
    from peft_repro.methods import apply_method
    from peft_repro.models import load_model
    from peft_repro.results import git_state, hardware
    from peft_repro.tasks import build_task

    torch.set_num_threads(1)
    model, tok = load_model(OmegaConf.create(conf("model/smollm2_135m.yaml")))
    ceilings = {rows: gemm_ceiling(model, rows) for rows in (32, 160, 1600)}  # before LoRA wraps the projections
    adapted = apply_method(model, METHOD)
    if args.state is None:
        args.state = train_adapter(args, Path(tempfile.mkdtemp(prefix="bench-ceiling-")))
    adapted.load_trainable_state_dict(load_file(str(args.state)))
    adapted.eval()
    body = sum(p.numel() for n, p in model.model.named_parameters() if "embed_tokens" not in n)
    head = model.lm_head.weight.numel()
    counter = Counter(model)

    e2e = OmegaConf.create(conf("task/e2e.yaml") | {"max_train_examples": 200, "max_eval_examples": args.test_items,
                                                     "max_dev_examples": 50})
    mnli = OmegaConf.create(conf("task/mnli.yaml") | {"max_eval_examples": 400, "max_dev_examples": 100})
    phases = [("mnli dev scoring", mnli, "dev", None, 1600),
              ("e2e dev greedy", e2e, "dev", DecodeConfig(num_beams=1, max_new_tokens=64, batch_size=32), 32),
              ("e2e test beam 5", e2e, "test", DecodeConfig(num_beams=5, max_new_tokens=64, batch_size=32), 160)]
    report = {"benchmark": "evaluation throughput against the GEMM ceiling (issue 16)", "commit": git_state(),
              "hardware": hardware(), "threads": 1, "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
              "non_embedding_params": body, "head_params": head,
              "ceiling_gflops": {str(r): c for r, c in ceilings.items()}, "phases": {}}
    for name, task_cfg, split, decode, rows in phases:
        evaluator = Evaluator(build_task(task_cfg, args.data_root), tok, task_cfg, 32)
        items = evaluator.task.eval_items(split)
        counter.take()
        start = time.perf_counter()
        evaluator.predict(adapted, items, decode, desc=name)
        seconds = time.perf_counter() - start
        positions, real, head_rows = counter.take()
        useful = 2 * body * real + 2 * head * head_rows
        ceiling = ceilings[rows]
        best = (2 * body * real / ceiling["body"] + 2 * head * head_rows / ceiling["head"]) / 1e9
        report["phases"][name] = {
            "items": len(items), "seconds": seconds, "positions": positions, "real_positions": real,
            "padding": 1 - real / positions, "head_rows": head_rows, "gflops": useful / seconds / 1e9,
            "ceiling_rows": rows, "seconds_at_ceiling": best, "share_of_ceiling": best / seconds}
        print(f"{name}: {seconds:.1f} s, {useful / seconds / 1e9:.1f} GFLOPS, {best / seconds:.0%} of the ceiling "
              f"({1 - real / positions:.0%} padding)", file=sys.stderr)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
