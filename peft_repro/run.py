"""One run: model + method + task -> trained, selected, evaluated, recorded. The Hydra entry point calls `main`."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from . import results
from .checks import check_context, typed
from .decoding import DecodeConfig, model_device
from .evaluation import Evaluator, test_record, test_results
from .lr_search import claim, search_lr
from .methods import Adapted, apply_method
from .models import load_model
from .tasks import build_task, item_ids
from .tracking import make_logger
from .train import Diverged, TrainConfig, seed_everything, train, train_device

log = logging.getLogger(__name__)


@dataclass
class RunCell:
    """One run of a sweep, resolved: its settings (the chosen lr in place), record path and data."""
    cfg: DictConfig
    overrides: list[str]
    run_dir: Path
    key: str
    path: Path
    config: dict
    task: object
    fingerprint: str
    lr_selection: dict | None = None
    defer_test: bool = False  # an lr-grid point: its test waits until its rate is chosen (`complete_test`)


def run(cfg: DictConfig, overrides: list[str], run_dir: Path, search: bool = True, defer_test: bool = False) -> dict:
    """Train, select, test and record one run, or return its record if it is done."""
    if cfg.method.name == "zero_shot":  # an experiment's zero-shot row on its own (its method options do not apply)
        task = build_task(cfg.task, cfg.data_root)
        model, tokenizer = load_model(cfg.model)
        decode = task_decode(cfg, "decode")
        # only what evaluation reads: an experiment's lr may interpolate per-method settings that zero_shot lacks
        trainer = TrainConfig(eval_batch_size=cfg.trainer.eval_batch_size, precision=cfg.trainer.precision)
        return results.load_json(record_zero_shot(cfg, model, tokenizer, task, decode, trainer))
    cell = resolve_cell(cfg, overrides, run_dir, search, defer_test)
    if (record := finished_record(cell)) is not None:
        return record
    lock = cell.path.with_suffix(".lock")
    if not claim(lock):  # an identical sweep runs this cell now: wait for its record instead of training it twice
        log.info("%s is being run by another process (%s); waiting for it", cell.key, lock)
        while not claim(lock):
            time.sleep(15)
        lock.unlink()
        return run(cfg, overrides, run_dir, search=False, defer_test=defer_test)  # done now, or the other failed
    try:
        return train_and_record(cell)
    finally:
        lock.unlink(missing_ok=True)


def resolve_cell(cfg: DictConfig, overrides: list[str], run_dir: Path, search: bool = True,
                 defer_test: bool = False) -> RunCell:
    """The run's cell: with `search`, its lr is chosen on dev first (the grid points are made here if missing)."""
    lr_selection = None
    if search and cfg.get("lr_search") and cfg.lr_search.get("grid"):
        lr_selection = search_lr(cfg, overrides, run_dir, lambda *point: run(*point, search=False, defer_test=True))
        cfg.trainer.lr = lr_selection["selected"]
        overrides = [o for o in overrides if not o.startswith("trainer.lr=")] + [f"trainer.lr={cfg.trainer.lr}"]
    key = results.run_key(overrides)
    task, fingerprint = task_of(cfg)
    return RunCell(cfg, overrides, run_dir, key, results.record_path(Path(cfg.results_dir), cfg.experiment,
                                                                    cfg.scale_name, key),
                   results.portable_config(OmegaConf.to_container(cfg, resolve=True)), task, fingerprint, lr_selection,
                   defer_test)


_TASKS: dict[str, tuple] = {}


def task_of(cfg: DictConfig) -> tuple:
    """The run's task and its data fingerprint (which reads and checks the data files before anything slow starts);
    built once per process for each task setting, as the cells of a sweep share it."""
    key = json.dumps([OmegaConf.to_container(cfg.task, resolve=True), cfg.data_root], sort_keys=True, default=str)
    if key not in _TASKS:
        task = build_task(cfg.task, cfg.data_root)
        _TASKS[key] = (task, task.fingerprint())
    return _TASKS[key]


def finished_record(cell: RunCell) -> dict | None:
    """The cell's record if the run is done (a chosen lr-grid point's test is completed now), else None."""
    done = results.find_done(cell.path, cell.config, cell.fingerprint) if cell.cfg.resume else None
    if not done:
        return None
    record = results.load_json(done)
    if not record.get("test_deferred") or cell.defer_test:
        log.info("skipping %s: already done (%s); resume=false reruns it", cell.key, done)
        return record
    if (completed := complete_test(cell.cfg, cell.task, done, record)) is not None:
        return completed
    log.info("%s: the trained state of this lr-grid point is gone; training it again", done)
    return None


def train_and_record(cell: RunCell) -> dict:
    cfg = cell.cfg
    # validate every config section before the slow parts start
    trainer_cfg = trainer_config(cfg)
    dev_decode, test_decode = task_decode(cfg, "dev_decode"), task_decode(cfg, "decode")
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)

    started = time.time()
    seed_everything(cfg.seed)
    model, tokenizer = load_model(cfg.model)
    check_model_fits(cfg, model, method_cfg.get("num_virtual_tokens") or 0, dev_decode, test_decode)
    # zero-shot decoding goes through the decoder-only Adapted; encoder-decoder models have no such path yet
    if cfg.get("zero_shot") and method_cfg["name"] != "zero_shot" and not model.config.is_encoder_decoder:
        record_zero_shot(cfg, model, tokenizer, cell.task, test_decode, trainer_cfg)
    seed_everything(cfg.seed)  # the method's initialization draws the same numbers whatever ran before (a random
    # model's own seed, the zero-shot run)
    adapted = apply_method(model, method_cfg, tokenizer)
    adapted.to(train_device())  # after the init's draws (the CPU's generator on any machine) and before `prepare`,
    # which decodes (a discrete prompt's search)
    adapted.prepare(Evaluator(cell.task, tokenizer, cfg.task, trainer_cfg.eval_batch_size), dev_decode)  # e.g. a
    # discrete prompt picks its prompt on dev; then the context holds the real k (init words or the prompt set it)
    check_model_fits(cfg, model, adapted.num_virtual_tokens, dev_decode, test_decode)
    params = adapted.parameter_counts()
    log.info("%s: %s on %s, %d trainable parameters (%.4f%% of %d)", cell.key, adapted.method, cfg.model.name,
             params["trainable"], params["trainable_pct"], params["base"])
    resume_file = results.resume_path(cell.path, cell.config, cell.fingerprint)
    if not cfg.resume:  # resume=false: start over, not from a killed run's checkpoint
        resume_file.unlink(missing_ok=True)
    logger = cell_logger(cell)
    try:
        out = train(adapted, tokenizer, cell.task, cfg.task, trainer_cfg, dev_decode, test_decode, cell.run_dir,
                    logger, evaluate_test=not cell.defer_test, resume_file=resume_file,
                    checkpoint_every=cfg.get("checkpoint_every_steps"))
    except Diverged as err:  # a result of its own: recorded (no metrics), left out of tables, the sweep goes on
        if logger:
            logger.abort()
        return record_diverged(cell, err, params, started, adapted.record_fields())
    except BaseException:
        if logger:
            logger.abort()
        raise
    return record_result(cell, out, params, started, logger, adapted.record_fields())


def trainer_config(cfg: DictConfig) -> TrainConfig:
    return typed(TrainConfig, {**OmegaConf.to_container(cfg.trainer, resolve=True), "seed": cfg.seed}, "trainer")


def check_model_fits(cfg: DictConfig, model, num_virtual_tokens: int, *decodes: DecodeConfig | None) -> None:
    check_context(getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None),
                  num_virtual_tokens, cfg.task.get("max_source_tokens"), cfg.task.get("max_target_tokens"),
                  max([d.max_new_tokens for d in decodes if d] or [0]))


def cell_logger(cell: RunCell, concurrent: bool = False):
    return make_logger(cell.cfg.logger, name=cell.key, group=f"{cell.cfg.experiment}/{cell.cfg.scale_name}",
                       config=cell.config, run_dir=str(cell.run_dir), concurrent=concurrent)


def record_diverged(cell: RunCell, err: Diverged, params: dict, started: float, extra: dict) -> dict:
    log.error("%s: %s", cell.key, err)
    cfg = cell.cfg
    record = {"status": "diverged", "record": cell.key, "experiment": cfg.experiment, "scale": cfg.scale_name,
              "seed": cfg.seed, "overrides": cell.overrides, "config": cell.config,
              "data_fingerprint": cell.fingerprint, "git": results.git_state(), "hardware": results.hardware(),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
              "wall_seconds": time.time() - started, "params": params, **extra, "diverged_at_step": err.step,
              "lr_selection": cell.lr_selection}
    write_new_record(cell.path, record)
    return record


def record_result(cell: RunCell, out: dict, params: dict, started: float, logger, extra: dict) -> dict:
    """Write the record of a trained run (`out`: what `train` returns; `extra`: `Adapted.record_fields`) and close
    its W&B run."""
    cfg = cell.cfg
    record = {
        "status": "ok", "record": cell.key, "experiment": cfg.experiment, "scale": cfg.scale_name, "seed": cfg.seed,
        "overrides": cell.overrides, "config": cell.config, "data_fingerprint": cell.fingerprint,
        "git": results.git_state(), "hardware": results.hardware(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_seconds": time.time() - started,
        "peak_memory_mb": results.peak_memory_mb(), "params": params,
        "run_dir": results.portable_path(cell.run_dir),
        "wandb_dir": results.portable_path(logger.dir) if logger else None,
        **extra,
        "lr_selection": cell.lr_selection,
        **{k: v for k, v in out.items() if k not in ("samples", "state")},
        "samples": out["samples"][: cfg.record_samples],
    }
    if cell.defer_test:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in out["state"].items()}, str(results.state_path(cell.path)))
        record["test_deferred"] = True
    write_new_record(cell.path, record)
    if logger:
        summary = {f"test/{k}": v for k, v in (out["test"] or {}).items()}
        summary |= {f"dev/{k}": v for k, v in (out["dev"] or {}).items()}  # the selected epoch's
        summary |= {f"params/{k}": v for k, v in params.items()}
        summary |= {"selected_epoch": out["selected_epoch"], "wall_seconds": record["wall_seconds"]}
        logger.finish(summary, out["samples"], cfg.logger.max_samples)
    log.info("%s: test %s -> %s", cell.key, out["test"] if not cell.defer_test else
             "deferred until this lr is chosen", cell.path)
    return record


def write_new_record(path: Path, record: dict) -> None:
    """Write a finished run's record; a record already at its path (a rerun, changed settings) is kept beside it,
    moved aside only now that the new run has succeeded. The run's resume checkpoint is no longer needed."""
    if path.exists():
        results.supersede(path)
    results.write_record(path, record)
    results.resume_path(path, record["config"], record.get("data_fingerprint")).unlink(missing_ok=True)


def task_decode(cfg: DictConfig, part: str) -> DecodeConfig | None:
    """The task's `decode` (test) or `dev_decode` settings, checked; None for tasks that score labels."""
    if part not in cfg.task:
        return None
    return typed(DecodeConfig, OmegaConf.to_container(cfg.task[part], resolve=True), f"task.{part}")


def complete_test(cfg: DictConfig, task, path: Path, record: dict) -> dict | None:
    """Evaluate on test the lr-grid point whose rate was chosen, from its saved trained state; None if the state is
    gone (the caller trains it again)."""
    from safetensors.torch import load_file

    state = results.state_path(path)
    if not state.exists():
        return None
    started = time.time()
    model, tokenizer = load_model(cfg.model)
    adapted = apply_method(model, OmegaConf.to_container(cfg.method, resolve=True), tokenizer)
    adapted.load_trainable_state_dict(load_file(str(state)))
    evaluator = Evaluator(task, tokenizer, cfg.task, cfg.trainer.eval_batch_size)
    device = train_device()  # where it trained
    with torch.autocast(device.type, torch.bfloat16, enabled=bool(record.get("bf16"))):  # the precision it trained in
        out = test_results(adapted.to(device).eval(), evaluator, task_decode(cfg, "decode"))
    record = {k: v for k, v in record.items() if k != "test_deferred"} | out | {
        "samples": out["samples"][: cfg.record_samples], "wall_seconds": record["wall_seconds"] + time.time() - started,
        "test_completed": time.strftime("%Y-%m-%d %H:%M:%S"), "test_git": results.git_state()}
    results.write_record(path, record)
    state.unlink()
    log.info("test of the chosen lr-grid point %s -> %s", out["test"], path)
    return record


def recorded_zero_shot(folder: Path, setting: dict) -> Path | None:
    """A zero-shot record of this setting and these test items written under an older key (a key changes when a
    config gains a key that says where inputs come from, such as `task.hub_fallback`)."""
    for path in sorted(folder.glob("zero_shot-*.json")):
        record = results.load_json(path)
        if (record.get("test_items", {}).get("ids") == setting["items"]
                and results.same_settings(results.eval_setting(record["config"]),
                                          {"model": setting["model"], "task": setting["task"]})):
            return path
    return None


def record_zero_shot(cfg: DictConfig, model, tokenizer, task, decode: DecodeConfig | None, trainer: TrainConfig):
    """The untrained base model on this run's test items, prompt and decoding, recorded once per such setting in
    `runs/zero_shot/<scale>/` (every table's zero-shot row); a run that finds it, or finds another run making it,
    goes on. Returns the record's path."""
    items = task.eval_items("test")
    setting = results.eval_setting({part: OmegaConf.to_container(cfg[part], resolve=True)
                                    for part in ("model", "task")})
    setting["items"] = item_ids(items)
    key = "zero_shot-" + hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:12]
    path = results.record_path(Path(cfg.results_dir), "zero_shot", cfg.scale_name, key)
    lock = path.with_suffix(".lock")
    if path.exists():
        return path
    recorded = recorded_zero_shot(path.parent, setting)
    if recorded:
        return recorded
    if not claim(lock):
        log.info("zero-shot %s is being recorded by another run", key)
        return path
    back = model_device(model)
    try:
        started = time.time()
        evaluator = Evaluator(task, tokenizer, cfg.task, trainer.eval_batch_size)
        device = train_device()
        base = Adapted(model, "zero_shot").to(device).eval()  # moved back below: the caller draws its method's
        # initial weights beside the model, from the CPU's generator on every machine
        # the trained runs' test precision
        with torch.autocast(device.type, torch.bfloat16, enabled=trainer.uses_bf16()):
            preds = evaluator.predict(base, items, decode, desc="zero-shot test")
        out = test_record(task, preds, items, 0.0)
        if task.kind == "classification":  # the rate to beat when every answer is the most frequent label
            labels = [it.label for it in items]
            out["test"]["majority_rate"] = max(labels.count(y) for y in set(labels)) / len(labels)
        results.write_record(path, {
            "status": "ok", "record": key, "experiment": "zero_shot", "scale": cfg.scale_name, "seed": None,
            "first_needed_by": cfg.experiment, "config": {"model": setting["model"], "task": setting["task"],
                                                          "method": {"name": "zero_shot"}},
            "git": results.git_state(), "hardware": results.hardware(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "wall_seconds": time.time() - started, "params": {"trainable": 0, "trainable_pct": 0.0},
            "train_examples": 0, "test": out["test"], "test_items": out["test_items"],
            "samples": out["samples"][: cfg.record_samples]})
        log.info("zero-shot test %s -> %s", out["test"], path)
    finally:
        model.to(back)
        lock.unlink(missing_ok=True)
    return path
