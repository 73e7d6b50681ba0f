"""Weights & Biases logging, offline unless the user says otherwise (`logger.mode=online`, or `wandb sync` later)."""
from __future__ import annotations

import os


class WandbLogger:
    def __init__(self, cfg, name: str, group: str, config: dict, run_dir: str):
        import wandb

        os.environ.setdefault("WANDB_MODE", cfg.mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb = wandb
        self.run = wandb.init(project=cfg.project, entity=cfg.get("entity"), group=group, name=name,
                              job_type=config.get("experiment"), config=config, dir=run_dir, reinit="finish_previous")

    def log(self, values: dict, step: int | None = None) -> None:
        self.run.log(values, step=step)

    def finish(self, summary: dict, samples: list[dict], max_samples: int) -> None:
        self.run.summary.update(summary)
        if samples:
            columns = list(samples[0])
            table = self.wandb.Table(columns=columns,
                                     data=[[str(s[c]) for c in columns] for s in samples[:max_samples]])
            self.run.log({"samples": table})
        self.run.finish()


def make_logger(cfg, name: str, group: str, config: dict, run_dir: str):
    if not cfg.get("enabled", False):
        return None
    return WandbLogger(cfg, name, group, config, run_dir)
