"""What `hydra/launcher=fused` runs (the Hydra side: hydra_plugins/peft_repro_launcher): a sweep's jobs, with the
cells that share a method (LoRA, prefix-tuning direct or through the MLP, infix, embedding-only), base model, task
and evaluation trained together (peft_repro/fused.py), and every other job run one by one as the local launcher
runs it (`run.run`).

Records are the cells' own, written as each group ends: a killed sweep, run again, skips the finished cells and
trains the others. Under `lr_search` the grid points of every fused job train first, as one group (tests wait for
the choice), then any rates past a grid's edge (`lr_search.extend`), a round each; then the jobs train at their chosen
rates. `processes` > 1 splits each phase's cells over that many processes of cores / processes torch threads each
(two one-thread processes beat one two-thread one on 2 cores).
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import time
from collections import defaultdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .fused import train_fused
from .methods.embedding_only_fused import FusedEmbeddingOnly
from .methods.fused_cells import base_has_dropout
from .methods.lora_fused import FusedLoRA
from .methods.prefix_fused import FusedInfix, FusedPrefix
from .lr_search import claim, grid_points, next_extension
from .methods import method_config
from .models import load_model
from .run import (RunCell, cell_logger, check_model_fits, finished_record, record_diverged, record_result,
                  record_zero_shot, resolve_cell, run, task_decode, train_and_record, trainer_config)
from .train import Diverged

log = logging.getLogger(__name__)

Job = tuple[DictConfig, list[str], Path]  # a job's config, its overrides, its output folder


FUSED = {"lora": FusedLoRA, "prefix": FusedPrefix, "infix": FusedInfix, "embedding_only": FusedEmbeddingOnly}
# full fine-tuning changes the base, and discrete prompts choose their prompt before training (`Adapted.prepare`,
# which a fused group does not call): they run one by one (`run.run`)


def fusible(cfg: DictConfig) -> bool:
    return cfg.method.name in FUSED


def group_key(cfg: DictConfig) -> str:
    """Cells with equal keys share one loaded model and their evaluations."""
    config = OmegaConf.to_container(cfg, resolve=True)
    shared = {k: config.get(k) for k in ("model", "task", "data_root", "results_dir", "scale_name", "zero_shot")}
    shared["method"] = config["method"]["name"]
    trainer = config["trainer"]
    return json.dumps(shared | {"precision": trainer["precision"], "eval_batch_size": trainer["eval_batch_size"]},
                      sort_keys=True, default=str)


def run_jobs(jobs: list[Job], max_rows: int = 64, processes: int = 1) -> list[dict]:
    """Every job's record, in job order."""
    fused = [i for i, (cfg, _, _) in enumerate(jobs) if fusible(cfg)]
    points: dict[str, Job] = {}
    for i in fused:
        cfg, overrides, run_dir = jobs[i]
        if cfg.get("lr_search") and cfg.lr_search.get("grid"):
            for lr, point, point_overrides, path in grid_points(cfg, overrides):
                points.setdefault(str(path), (point, point_overrides, run_dir / f"lr_search_{lr:g}"))
    tried: set[str] = set()
    while points:  # the grid points, then those past a grid's edge (`lr_search.extend`), each round fused
        log.info("fused: %d lr-grid points%s first", len(points), " past a grid's edge" if tried else "")
        _in_processes(list(points.values()), False, max_rows, processes)
        tried, points = tried | set(points), {}
        for i in fused:
            cfg, overrides, run_dir = jobs[i]
            if cfg.get("lr_search") and cfg.lr_search.get("grid") and (point := next_extension(cfg, overrides)):
                lr, point_cfg, point_overrides, path = point
                if str(path) not in tried:  # trained and still without a record: its job's search says why
                    points.setdefault(str(path), (point_cfg, point_overrides, run_dir / f"lr_search_{lr:g}"))
    records: list[dict | None] = [None] * len(jobs)
    for i, record in zip(fused, _in_processes([jobs[i] for i in fused], True, max_rows, processes)):
        records[i] = record
    for i, job in enumerate(jobs):
        if records[i] is None:
            records[i] = run(*job)
    return records


def _in_processes(jobs: list[Job], search: bool, max_rows: int, processes: int) -> list[dict]:
    """`fused_phase` over the jobs, split round-robin over `processes` processes; records in job order."""
    processes = max(1, min(processes, len(jobs)))
    if processes == 1:
        return fused_phase(jobs, search, max_rows)
    threads = max(1, (os.cpu_count() or 1) // processes)
    shares = [jobs[p::processes] for p in range(processes)]
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_worker, shares, [search] * processes, [max_rows] * processes, [threads] * processes))
    records = [None] * len(jobs)
    for p, part in enumerate(parts):
        records[p::processes] = part
    return records


def _worker(jobs: list[Job], search: bool, max_rows: int, threads: int) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format=f"[%(asctime)s][worker {os.getpid()}][%(name)s] %(message)s")
    return fused_phase(jobs, search, max_rows)


def fused_phase(jobs: list[Job], search: bool, max_rows: int) -> list[dict]:
    """Records of the jobs (lr-grid points when not `search`: trained, their tests deferred); what is not done yet
    trains in fused groups."""
    cells = [resolve_cell(cfg, overrides, run_dir, search=search, defer_test=not search)
             for cfg, overrides, run_dir in jobs]
    records = [finished_record(cell) for cell in cells]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, cell in enumerate(cells):
        if records[i] is None:
            groups[group_key(cell.cfg)].append(i)
    for members in groups.values():
        for i, record in train_group([cells[i] for i in members], max_rows).items():
            records[members[i]] = record
    return records


def train_group(cells: list[RunCell], max_rows: int) -> dict[int, dict]:
    """Train the cells (one group) together; records by position in `cells`. A cell another process has claimed
    is waited for (`run.run`)."""
    claimed = [i for i, cell in enumerate(cells) if claim(cell.path.with_suffix(".lock"))]
    records: dict[int, dict] = {}
    try:
        if claimed:
            records |= _train_claimed([cells[i] for i in claimed], max_rows, claimed)
    finally:
        for i in claimed:
            cells[i].path.with_suffix(".lock").unlink(missing_ok=True)
    for i, cell in enumerate(cells):
        if i not in records:
            records[i] = run(cell.cfg, cell.overrides, cell.run_dir, search=False, defer_test=cell.defer_test)
    return records


def _train_claimed(cells: list[RunCell], max_rows: int, positions: list[int]) -> dict[int, dict]:
    first = cells[0].cfg
    trainers = [trainer_config(cell.cfg) for cell in cells]
    dev_decode, test_decode = task_decode(first, "dev_decode"), task_decode(first, "decode")
    started = time.time()
    model, tokenizer = load_model(first.model)
    if model.config.is_encoder_decoder or base_has_dropout(model):
        log.info("fused: %s has dropout in its base or an encoder; its %d cells run one by one", first.model.name,
                 len(cells))
        return {p: train_and_record(cell) for p, cell in zip(positions, cells)}
    if first.get("zero_shot"):
        record_zero_shot(first, model, tokenizer, cells[0].task, test_decode, trainers[0])
    method_cfgs = [method_config(OmegaConf.to_container(cell.cfg.method, resolve=True))[1] for cell in cells]
    fused = FUSED[first.method.name](model, [(m, cell.cfg.seed) for m, cell in zip(method_cfgs, cells)], tokenizer)
    check_model_fits(first, model, fused.num_virtual_tokens, dev_decode, test_decode)
    log.info("fused: %d %s cells of %s on %s in one model", len(cells), first.method.name, first.task.name,
             first.model.name)
    loggers = [cell_logger(cell, concurrent=True) for cell in cells]
    try:
        outs = train_fused(fused, tokenizer, cells[0].task, first.task, trainers, dev_decode, test_decode,
                           [not cell.defer_test for cell in cells], loggers, max_rows)
    except BaseException:
        for logger in loggers:
            if logger:
                logger.abort()
        raise
    records = {}
    for index, (position, cell, out, logger) in enumerate(zip(positions, cells, outs, loggers)):
        params = fused.cell_parameter_counts(index)
        if isinstance(out, Diverged):
            if logger:
                logger.abort()
            records[position] = record_diverged(cell, out, params, started, fused.cell_record_fields(index))
            continue
        if trainers[index].save_checkpoint:
            from safetensors.torch import save_file

            cell.run_dir.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in out["state"].items()},
                      str(cell.run_dir / "trainable.safetensors"))
        records[position] = record_result(cell, out, params, started, logger, fused.cell_record_fields(index))
    return records
