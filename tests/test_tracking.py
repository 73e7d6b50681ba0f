import time
from pathlib import Path

from omegaconf import OmegaConf

from peft_repro.tracking import make_logger, read_offline_run


def test_wandb_offline_run_is_written(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = OmegaConf.create({"enabled": True, "mode": "offline", "project": "peft_repro_test", "max_samples": 2})
    logger = make_logger(cfg, name="cell-1", group="lora_rank_sweep/smoke", config={"experiment": "x", "r": 4},
                         run_dir=str(tmp_path))
    for step in range(1, 4):
        logger.log({"train/loss": 1.0 / step}, step=step)
    logger.finish({"test/accuracy": 0.5}, [{"source": "a", "prediction": "b"}] * 3, max_samples=2)
    [run_file] = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.time() + 30
    while not (run := read_offline_run(run_file))["complete"] and time.time() < deadline:
        time.sleep(0.2)  # the wandb service may still be flushing after finish() returns
    assert [row["train/loss"] for row in run["history"] if "train/loss" in row] == [1.0, 0.5, 1.0 / 3]
    assert run["summary"]["test/accuracy"] == 0.5


def test_disabled_logger_is_none():
    assert make_logger(OmegaConf.create({"enabled": False}), "n", "g", {}, "/tmp") is None
