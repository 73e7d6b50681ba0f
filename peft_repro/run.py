"""One run: model + method + task -> trained, selected, evaluated, recorded. The Hydra entry point calls `main`."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import results
from .decoding import DecodeConfig
from .methods import apply_method
from .methods.discrete_prompt import select_prompt
from .models import load_model
from .tasks import build_task
from .tracking import make_logger
from .train import Evaluator, TrainConfig, seed_everything, train

log = logging.getLogger(__name__)


def run(cfg: DictConfig, overrides: list[str], run_dir: Path) -> dict:
    key = results.run_key(overrides)
    path = results.record_path(Path(cfg.results_dir), cfg.experiment, cfg.scale_name, key)
    config = OmegaConf.to_container(cfg, resolve=True)
    done = results.find_done(path, config) if cfg.resume else None
    if done:
        log.info("skipping %s: already done (%s); resume=false reruns it", key, done)
        return results.load_json(done)
    if path.exists():
        results.supersede(path)  # rerun or changed settings: the old record is kept beside the new one

    # validate every config section before the slow parts start
    def plain(node):
        return OmegaConf.to_container(node, resolve=True)

    trainer_cfg = TrainConfig(**plain(cfg.trainer), seed=cfg.seed)
    dev_decode = DecodeConfig(**plain(cfg.task.dev_decode)) if "dev_decode" in cfg.task else None
    test_decode = DecodeConfig(**plain(cfg.task.decode)) if "decode" in cfg.task else None
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    task = build_task(cfg.task, cfg.data_root)

    started = time.time()
    seed_everything(cfg.seed)
    model, tokenizer = load_model(cfg.model)
    selection = None
    if method_cfg.get("candidates"):  # discrete prompts: the best candidate on dev becomes the prompt
        evaluator = Evaluator(task, tokenizer, cfg.task, trainer_cfg.eval_batch_size)
        selection = select_prompt(lambda: model, method_cfg["candidates"], evaluator, dev_decode)
        method_cfg["prompt"] = selection["prompt"]
        log.info("prompt %r selected by %s: %s %.4f", selection["prompt"], selection["rule"], selection["metric"],
                 selection["score"])
    adapted = apply_method(model, method_cfg)
    params = adapted.parameter_counts()
    log.info("%s on %s: %d trainable parameters (%.4f%% of %d)", adapted.method, cfg.model.name,
             params["trainable"], params["trainable_pct"], params["base"])
    logger = make_logger(cfg.logger, name=key, group=f"{cfg.experiment}/{cfg.scale_name}", config=config,
                         run_dir=str(run_dir))
    try:
        out = train(adapted, tokenizer, task, cfg.task, trainer_cfg, dev_decode, test_decode, run_dir, logger)
    except BaseException:
        if logger:
            logger.abort()
        raise
    record = {
        "status": "ok", "record": key, "experiment": cfg.experiment, "scale": cfg.scale_name, "seed": cfg.seed,
        "overrides": overrides, "config": config, "git": results.git_state(), "hardware": results.hardware(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_seconds": time.time() - started,
        "peak_memory_mb": results.peak_memory_mb(), "params": params,
        "run_dir": str(run_dir), "wandb_dir": logger.dir if logger else None, "prompt_selection": selection,
        **{k: v for k, v in out.items() if k != "samples"},
        "samples": out["samples"][: cfg.record_samples],
    }
    results.write_record(path, record)
    if logger:
        summary = {f"test/{k}": v for k, v in out["test"].items()}
        summary |= {f"dev/{k}": v for k, v in (out["dev"] or {}).items()}  # the selected epoch's
        summary |= {f"params/{k}": v for k, v in params.items()}
        summary |= {"selected_epoch": out["selected_epoch"], "wall_seconds": record["wall_seconds"]}
        logger.finish(summary, out["samples"], cfg.logger.max_samples)
    log.info("test %s -> %s", out["test"], path)
    return record
