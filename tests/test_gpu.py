"""The paths a lent GPU window runs, on a CUDA device (skipped without one): training, dev and test decoding, label
scoring, fused groups and the command line. `scripts/gpu/lecture.sh` runs this file before its queue, so a window
learns in its first minute whether the rest can work: session 22's first window trained on the GPU and failed at
every run's first dev evaluation, whose decoding built its tensors on the CPU. Where CPU and GPU should agree
(decoding the same weights), they are compared in float64: in float32 their kernels' rounding could flip a near-tie,
and a flaky preflight would cost the window it guards."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from peft_repro.decoding import DecodeConfig, generate
from peft_repro.evaluation import Evaluator
from peft_repro.fused import train_fused
from peft_repro.methods import apply_method
from peft_repro.methods.lora import LoRAConfig
from peft_repro.methods.lora_fused import FusedLoRA
from peft_repro.methods.prefix import PrefixConfig
from peft_repro.methods.prefix_fused import FusedPrefix
from peft_repro.results import load_records
from peft_repro.tasks import EvalItem
from peft_repro.train import TrainConfig, train

from .conftest import CopyTask, needs_data, run_main, tiny_model
from .test_fused import alone

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

EOS, PAD = 2, 0
METHODS = {
    "full": {},
    "lora": {"r": 4, "targets": ["q", "v"]},
    "prefix": {"num_virtual_tokens": 3, "projection": True, "mid_dim": 16},
    "embedding_only": {"num_virtual_tokens": 3},
    "infix": {"num_virtual_tokens": 3},
}
DEV, TEST = DecodeConfig(max_new_tokens=6), DecodeConfig(num_beams=2, max_new_tokens=6)
TRAINER = dict(epochs=2, batch_size=4, lr=1e-2, warmup_steps=1, precision="fp32", save_checkpoint=False)


def on_cuda(module) -> bool:
    return all(p.device.type == "cuda" for p in module.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_a_run_trains_and_decodes_on_the_gpu_as_the_cpu_decodes_its_weights(method, tokenizer, tmp_path: Path):
    task = CopyTask()
    adapted = apply_method(tiny_model("llama"), {"name": method, **METHODS[method]})
    out = train(adapted, tokenizer, task, task.cfg, TrainConfig(**TRAINER, seed=0), DEV, TEST, tmp_path)
    assert on_cuda(adapted), "the trainer runs where the GPU is"
    losses = [h["loss"] for h in out["history"] if "loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert set(out["test"]) == {"exact"}
    sources = [tokenizer(p, add_special_tokens=False).input_ids for p in ["cat:", "a", "the quick brown fox"]]
    adapted.double()
    for decode in (DecodeConfig(max_new_tokens=12), DecodeConfig(num_beams=3, max_new_tokens=12)):
        gpu = generate(adapted, sources, decode, [EOS], PAD)
        assert generate(adapted.cpu(), sources, decode, [EOS], PAD) == gpu, decode
        adapted.cuda()


class LabelTask(CopyTask):
    """Classification over label words of one token ("a", "b") or several ("yes", "no")."""
    kind = "classification"

    def __init__(self, words):
        super().__init__()
        self.label_words = words


@pytest.mark.parametrize("words", [["a", "b"], [" yes", " no"]], ids=["one-token", "several-tokens"])
def test_label_scoring_on_the_gpu_equals_the_cpu(words, tokenizer):
    task = LabelTask(words)
    evaluator = Evaluator(task, tokenizer, OmegaConf.create({}), eval_batch_size=3)
    model = apply_method(tiny_model("llama"), {"name": "lora", "r": 2, "targets": ["q"]}).double()
    items = [EvalItem(f"{w} or {v}?", [0]) for w in task.words for v in task.words[:2]]
    cpu = evaluator.predict(model, items)
    assert evaluator.predict(model.cuda(), items) == cpu


@pytest.mark.parametrize("name,fused_class,config_class,cells", [
    ("lora", FusedLoRA, LoRAConfig, [dict(r=1, targets=["q"]), dict(r=4, targets=["q", "v"], dropout=0.1)]),
    ("prefix", FusedPrefix, PrefixConfig, [dict(num_virtual_tokens=1),
                                           dict(num_virtual_tokens=5, projection=True, dropout=0.1, mid_dim=8)]),
], ids=["lora", "prefix"])
def test_a_fused_group_trains_on_the_gpu_as_each_cell_alone(name, fused_class, config_class, cells, tokenizer,
                                                             tmp_path: Path):
    """Dropout included: a cell's masks come from its own stream on the GPU's generator, as the run alone draws
    them (a wrong stream shows as losses apart by far more than the kernels' rounding)."""
    task = CopyTask()
    trainers = [TrainConfig(**TRAINER, seed=seed, log_every=1) for seed in range(len(cells))]
    fused = fused_class(tiny_model("llama"), [(config_class(**c), t.seed) for c, t in zip(cells, trainers)])
    outs = train_fused(fused, tokenizer, task, task.cfg, trainers, DEV, TEST, [True] * len(cells), max_rows=8)
    assert on_cuda(fused.model)
    for out, cell, trainer in zip(outs, cells, trainers):
        expected, _ = alone(tokenizer, task, cell, trainer, tmp_path, name=name)
        losses = [h["loss"] for h in out["history"] if "loss" in h]
        assert losses == pytest.approx([h["loss"] for h in expected["history"] if "loss" in h], abs=1e-3), cell
        assert set(out["test"]) == {"exact"}


@needs_data("e2e", "trainset.csv")
@pytest.mark.parametrize("launcher", ["local_parallel", "fused"])
def test_an_e2e_sweep_on_the_command_line_records_gpu_runs(launcher, tmp_path: Path):
    """The queue's path (one process per cell, an lr grid whose chosen point is tested from its saved state) and the
    fused launcher's; BLEU and NIST only, as on the GPU image (no Java)."""
    out = run_main("+experiment=e2e_main", "scale=smoke", "method=lora", "seed=0,1", "task.test_metrics=[BLEU,NIST]",
                   "lr_search={grid: [0.001, 0.05], seed: 0}", "trainer.save_checkpoint=true", "logger=none",
                   f"hydra/launcher={launcher}", f"results_dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/multirun")
    assert out.returncode == 0, out.stderr[-3000:]
    records = load_records(tmp_path, "e2e_main", "smoke")
    gpu = torch.cuda.get_device_name(0)
    assert len(records) == 3 and all(gpu in r["hardware"] for r in records), [r["hardware"] for r in records]
    tested = [r for r in records if r["test"] is not None]
    assert len(tested) == 2 and all(set(r["test"]) >= {"BLEU", "NIST"} for r in tested)
