"""Fused training (peft_repro/fused.py): a cell trained in a fused group ends where it ends when trained alone."""
from pathlib import Path

import pytest
import torch

from peft_repro.decoding import DecodeConfig
from peft_repro import fused as fused_module
from peft_repro.fused import train_fused, training_plan
from peft_repro.methods.lora_fused import FusedLoRA
from peft_repro.methods.prefix import PrefixConfig
from peft_repro.methods.embedding_only import EmbeddingOnlyConfig
from peft_repro.methods.embedding_only_fused import FusedEmbeddingOnly
from peft_repro.methods.infix import InfixConfig
from peft_repro.methods.prefix_fused import FusedInfix, FusedPrefix
from peft_repro.methods import apply_method
from peft_repro.methods.lora import LoRAConfig
from peft_repro.train import TrainConfig, seed_everything, train

from peft_repro.results import load_records

from .conftest import CopyTask, needs_data, run_main, tiny_model

# mixed ranks and target weights in one batch; batch sizes, accumulation, seeds, rates and dropout differ per cell
CELLS = [
    (dict(r=1, alpha=2, targets=["q"]), dict(seed=0, lr=1e-2, batch_size=2)),
    (dict(r=64, alpha=64, targets=["q", "v"], dropout=0.1), dict(seed=1, lr=5e-3, batch_size=4)),
    (dict(r=4, alpha=8, targets=["q", "k", "v", "o"], dropout=0.1), dict(seed=0, lr=1e-2, batch_size=3,
                                                                          grad_accum=2)),
    (dict(r=2, alpha=4, targets=["mlp"]), dict(seed=2, lr=2e-2, batch_size=4, epochs=2, max_grad_norm=0.0)),
]
BASE = dict(epochs=3, warmup_steps=2, precision="fp32", save_checkpoint=False)
DEV, TEST = DecodeConfig(max_new_tokens=6), DecodeConfig(num_beams=2, max_new_tokens=6)


def alone(tokenizer, task, method: dict, trainer: TrainConfig, tmp_path: Path, name: str = "lora"):
    model = tiny_model("llama")
    seed_everything(trainer.seed)  # run.train_and_record seeds right before the method
    adapted = apply_method(model, {"name": name, **method})
    out = train(adapted, tokenizer, task, task.cfg, trainer, DEV, TEST, tmp_path)
    return out, adapted.trainable_state_dict()


def test_a_mixed_fused_group_trains_each_cell_as_it_trains_alone(tokenizer, tmp_path: Path):
    task = CopyTask()
    trainers = [TrainConfig(**{**BASE, "log_every": 1, **t}) for _, t in CELLS]
    fused = FusedLoRA(tiny_model("llama"), [(LoRAConfig(**c), t.seed) for (c, _), t in zip(CELLS, trainers)])
    outs = train_fused(fused, tokenizer, task, task.cfg, trainers, DEV, TEST, [True] * len(CELLS), max_rows=8)
    for index, ((lora, _), trainer) in enumerate(zip(CELLS, trainers)):
        expected, state = alone(tokenizer, task, lora, trainer, tmp_path)
        out = outs[index]
        losses = [h["loss"] for h in out["history"] if "loss" in h]
        assert losses == pytest.approx([h["loss"] for h in expected["history"] if "loss" in h], abs=1e-5), index
        assert [h["step"] for h in out["history"]] == [h["step"] for h in expected["history"]]
        assert out["steps"] == expected["steps"] and out["selected_epoch"] == expected["selected_epoch"]
        assert out["train_tokens"] == expected["train_tokens"]
        assert out["dev"] == expected["dev"] and out["test"] == expected["test"], index
        assert [s["prediction"] for s in out["samples"]] == [s["prediction"] for s in expected["samples"]]
        for name, value in fused.cell_state(index).items():
            torch.testing.assert_close(value, state[name], atol=1e-5, rtol=1e-4)


# prefix lengths 1, 5 (from init words), 10 and 20 in one batch; direct and through the MLP; with and without dropout
PREFIX_CELLS = [
    (dict(num_virtual_tokens=1), dict(seed=0, lr=1e-2, batch_size=2)),
    (dict(num_virtual_tokens=10, dropout=0.1), dict(seed=1, lr=5e-3, batch_size=4)),
    (dict(projection=True, mid_dim=16, init_text="copy:", fit_steps=20, fit_lr=1e-2), dict(seed=0, lr=1e-3,
                                                                                            batch_size=3)),
    (dict(num_virtual_tokens=20, projection=True, mid_dim=8, dropout=0.2), dict(seed=2, lr=1e-3, batch_size=4,
                                                                                grad_accum=2)),
]


# embedding-only: k 1, 10, 5 (from init words) and 20; directly and through the MLP; word, vocabulary and random init
EMB_CELLS = [
    (dict(num_virtual_tokens=1, reparam="none"), dict(seed=0, lr=1e-2, batch_size=2)),
    (dict(num_virtual_tokens=10, mid_dim=16), dict(seed=1, lr=5e-3, batch_size=4)),
    (dict(mid_dim=16, init="words", init_text="copy:"), dict(seed=0, lr=1e-3, batch_size=3)),
    (dict(num_virtual_tokens=20, reparam="none", init="vocab"), dict(seed=2, lr=1e-3, batch_size=4, grad_accum=2)),
]

FUSED_GROUPS = {"prefix": (FusedPrefix, PrefixConfig, PREFIX_CELLS),
                "infix": (FusedInfix, InfixConfig, PREFIX_CELLS),
                "embedding_only": (FusedEmbeddingOnly, EmbeddingOnlyConfig, EMB_CELLS)}


@pytest.mark.parametrize("slack", [1.0, 10.0])  # passes of equal widths only (CPU), or of all cells (k mixed)
@pytest.mark.parametrize("method", FUSED_GROUPS)
def test_a_mixed_fused_virtual_token_group_trains_each_cell_as_it_trains_alone(method, slack, tokenizer,
                                                                                tmp_path: Path, monkeypatch):
    """Cells of k 1, 5, 10 and 20 (prefix, infix, embedding-only): each ends where it ends alone."""
    monkeypatch.setitem(fused_module.PAD_SLACK, "cpu", slack)
    task = CopyTask()
    fused_class, config_class, cells = FUSED_GROUPS[method]
    trainers = [TrainConfig(**{**BASE, "log_every": 1, **t}) for _, t in cells]
    fused = fused_class(tiny_model("llama"), [(config_class(**c), t.seed) for (c, _), t in zip(cells, trainers)])
    assert fused.ks == [1, 10, len("copy:"), 20]  # the byte tokenizer: one token per character
    outs = train_fused(fused, tokenizer, task, task.cfg, trainers, DEV, TEST, [True] * len(cells))
    for index, ((prefix, _), trainer) in enumerate(zip(cells, trainers)):
        expected, state = alone(tokenizer, task, prefix, trainer, tmp_path, name=method)
        out = outs[index]
        assert [h.get("loss") for h in out["history"]] == pytest.approx(
            [h.get("loss") for h in expected["history"]], abs=1e-5), index
        assert out["dev"] == expected["dev"] and out["test"] == expected["test"], index
        assert [s["prediction"] for s in out["samples"]] == [s["prediction"] for s in expected["samples"]]
        assert fused.cell_state(index).keys() == state.keys()
        for name, value in fused.cell_state(index).items():
            torch.testing.assert_close(value, state[name], atol=1e-5, rtol=1e-4)


def test_the_fused_plan_is_the_trainers_order_of_batches():
    lengths = list(range(3, 13))
    plan, total = training_plan(lengths, TrainConfig(epochs=3, batch_size=3, grad_accum=2, seed=5))
    assert total == 6  # ceil(ceil(10 / 3) / 2) steps per epoch
    assert sum(m.sync for m in plan) == 6 and plan[-1].sync
    assert [m.epoch for m in plan if m.epoch_end] == [0, 1, 2]
    capped, total = training_plan(lengths, TrainConfig(epochs=3, batch_size=3, max_steps=3, seed=5))
    assert total == 3 and len(capped) == 3 and capped[-1].epoch_end and capped[-1].epoch == 0


def test_rows_of_a_cell_must_be_adjacent():
    fused = FusedLoRA(tiny_model("llama"), [(LoRAConfig(r=2), 0), (LoRAConfig(r=2), 1)])
    with pytest.raises(ValueError, match="together"):
        fused.use_rows([0, 1, 0])


def records_by_launcher(tmp_path: Path, experiment: str, *overrides: str) -> dict[str, dict[str, dict]]:
    """The smoke sweep's records (BLEU only) under the fused and the default launcher, each by record name."""
    records = {}
    for launcher in ("fused", "basic"):
        out = run_main(f"+experiment={experiment}", "scale=smoke", *overrides, "task.test_metrics=[BLEU]",
                       "logger=none", f"hydra/launcher={launcher}", f"results_dir={tmp_path / launcher}",
                       f"hydra.sweep.dir={tmp_path / launcher}/multirun")
        assert out.returncode == 0, out.stderr[-3000:]
        records[launcher] = {r["record"]: r for r in load_records(tmp_path / launcher, experiment, "smoke")}
    return records


@needs_data("e2e")
def test_a_fused_sweep_records_what_the_local_launcher_records(tmp_path: Path):
    """e2e_main's LoRA (dropout 0.1) and prefix (MLP) at two seeds under an lr search: each method's grid points
    train as one fused group, then the other seed; each record equals the default launcher's (the chosen point's
    deferred test included)."""
    records = records_by_launcher(tmp_path, "e2e_main", "method=lora,prefix_mlp", "seed=0,1",
                                  "lr_search={grid: [0.001, 0.05], seed: 0}")
    assert len(records["fused"]) == 6 and records["fused"].keys() == records["basic"].keys()
    for key, alone in records["basic"].items():
        fused = records["fused"][key]
        assert fused["fused_cells"] == (2 if fused["seed"] == 0 else 1) and "fused_cells" not in alone
        assert fused["dev"] == alone["dev"] and fused["test"] == alone["test"], key
        assert fused["lr_selection"] == alone["lr_selection"] and fused["params"] == alone["params"]
        assert fused["num_virtual_tokens"] == alone["num_virtual_tokens"]
        assert_same_losses(fused, alone)
        assert fused["test_items"] == alone["test_items"]
        assert {**fused["config"], "results_dir": None} == {**alone["config"], "results_dir": None}


def assert_same_losses(fused: dict, alone: dict) -> None:
    """The same training-loss history, to float32 rounding: the fused batch has other GEMM shapes, and on an AVX-512
    CPU an EMB run's epoch loss of ~5.56 differed by 6.5e-5 (1.2e-5 relative; the same every time), where a wrong
    batch, lr or step differs by 1e-3 and more (dev and test outputs are compared exactly). Tolerance: 4x that."""
    losses = [[h.get("loss") for h in r["history"]] for r in (fused, alone)]
    assert [x is None for x in losses[0]] == [x is None for x in losses[1]]
    assert [x for x in losses[0] if x is not None] == pytest.approx([x for x in losses[1] if x is not None],
                                                                    rel=5e-5, abs=1e-5)


@needs_data("e2e")
def test_a_fused_emb_vs_infix_sweep_records_what_the_local_launcher_records(tmp_path: Path):
    """Embedding-only and infix at k 1 and 5: one fused group per method; each record equals the default
    launcher's."""
    records = records_by_launcher(tmp_path, "emb_vs_infix", "method=embedding_only,infix",
                                  "method.num_virtual_tokens=1,5", "lr_search=null")
    assert len(records["fused"]) == 4 and records["fused"].keys() == records["basic"].keys()
    for key, alone in records["basic"].items():
        fused = records["fused"][key]
        assert fused["fused_cells"] == 2 and "fused_cells" not in alone
        assert fused["dev"] == alone["dev"] and fused["test"] == alone["test"], key
        assert fused["params"] == alone["params"] and fused["num_virtual_tokens"] == alone["num_virtual_tokens"]
        assert_same_losses(fused, alone)


def test_a_diverging_cell_stops_at_the_step_it_stops_alone_and_the_others_go_on(tokenizer, tmp_path: Path):
    from peft_repro.train import Diverged

    task = CopyTask()
    lora = dict(r=2, alpha=4, targets=["q", "v"])
    trainers = [TrainConfig(**BASE, seed=0, lr=1e-2, batch_size=2, log_every=3),
                TrainConfig(**BASE, seed=0, lr=float("inf"), batch_size=2, log_every=3)]
    fused = FusedLoRA(tiny_model("llama"), [(LoRAConfig(**lora), 0), (LoRAConfig(**lora), 0)])
    healthy, diverged = train_fused(fused, tokenizer, task, task.cfg, trainers, DEV, TEST, [True, True])
    with pytest.raises(Diverged) as alone_error:
        alone(tokenizer, task, lora, trainers[1], tmp_path)
    assert isinstance(diverged, Diverged) and diverged.step == alone_error.value.step
    expected, _ = alone(tokenizer, task, lora, trainers[0], tmp_path)
    assert healthy["test"] == expected["test"] and healthy["dev"] == expected["dev"]
    assert [h.get("loss") for h in healthy["history"]] == pytest.approx(
        [h.get("loss") for h in expected["history"]], abs=1e-5)


@needs_data("e2e")
def test_a_fused_sweep_trains_the_rates_past_a_grids_edge_in_rounds_before_its_jobs(tmp_path: Path, monkeypatch):
    """`run_jobs` under `lr_search.extend`: the grid points of every job train first, then the rate past the edge the
    records point to, one fused round each, and only then the jobs (which find every point made). The trainings are
    faked: each point's record has a dev score highest at 2e-5."""
    import json
    import math

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from peft_repro import results, sweep

    from .conftest import REPO

    rounds = []

    def fake_in_processes(jobs, search, max_rows, processes):
        if search:
            rounds.append("jobs")
            return [{"seed": cfg.seed} for cfg, _, _ in jobs]
        rounds.append(sorted(cfg.trainer.lr for cfg, _, _ in jobs))
        for cfg, overrides, _ in jobs:
            path = results.record_path(tmp_path, "e2e_main", "smoke", results.run_key(overrides))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"status": "ok", "config": OmegaConf.to_container(cfg, resolve=True),
                                        "dev": {"BLEU": 1 - abs(math.log10(cfg.trainer.lr / 2e-5))}}))
        return [None] * len(jobs)

    monkeypatch.setattr(sweep, "_in_processes", fake_in_processes)
    jobs = []
    for seed in (0, 1):
        overrides = ["+experiment=e2e_main", "scale=smoke", "method=lora", f"seed={seed}", f"results_dir={tmp_path}",
                     "lr_search={grid: [1e-4, 1e-3], seed: 0, extend: 2}"]
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            jobs.append((compose(config_name="config", overrides=overrides), overrides, tmp_path / f"job{seed}"))
    assert sweep.run_jobs(jobs) == [{"seed": 0}, {"seed": 1}]
    assert rounds == [[1e-4, 1e-3], [5e-5], [2e-5], "jobs"]  # both seeds share one search: each round once
