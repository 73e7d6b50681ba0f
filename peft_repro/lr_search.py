"""Learning rates chosen on dev: the grid search a run makes before training (`search_lr`), and the choice the tables
apply to records (`dev_selected`).

An experiment lists `method_settings.<method>.lr_grid` and sets `lr_search: {grid, seed, reference, extend}`. Every
grid rate is trained once at the search point (the seed, plus `reference` settings such as low-data subset 0) as an
ordinary run with its own record; every run of the group (same settings but the rate, the seed and the reference keys)
then uses the rate with the best dev score of the task's primary metric. A best rate on the grid's edge says the best
may lie beyond it: the next rate past the edge is tried too, up to `extend` rates beyond the grid. Test scores play no
part.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import socket
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import results
from .results import lookup
from .tasks import build_task, task_classes

log = logging.getLogger(__name__)


def lr_search_cell(config: dict) -> tuple[str, dict] | None:
    """(group, search point) of a run under `lr_search`: the group is its settings without the learning rate, the
    seed, the `reference` keys (so every seed and, e.g., every low-data subset shares one choice) and the experiment's
    name (experiments that share runs share the choice); the search
    point is the seed and reference values whose runs, one per grid lr, make the choice. The test settings
    (`results.TEST_ONLY`) are left out too: runs tested on more items (e2e_main's 630 MRs) keep the choice made on dev
    by the grid points of the same training. None without a search."""
    search = config.get("lr_search")
    if not search:
        return None
    point = point_settings(search)
    group = json.loads(json.dumps(results.identity({**config, "experiment": None})))  # shared across experiments
    for dotted in ["trainer.lr", *point, *(f"task.{key}" for key in results.TEST_ONLY)]:
        *parents, leaf = dotted.split(".")
        node = group
        for part in parents:
            node = node.get(part) or {}
        node.pop(leaf, None)
    return json.dumps(group, sort_keys=True), point


def choose_lr(points: dict[float, float]) -> float:
    """The grid learning rate with the best dev score; a tie goes to the smaller rate; a non-finite score (a
    diverged run) is never chosen over a finite one."""
    return max(points, key=lambda lr: (math.isfinite(points[lr]), points[lr] if math.isfinite(points[lr]) else 0, -lr))


def dev_selected(records: list[dict]) -> list[dict]:
    """The records that a table shows: in each `lr_search` group, only the runs at the learning rate chosen on dev
    at the search point (mean dev score of its primary metric over the records there). The experiment's search
    settings apply to its older records too (made before the search, they may be its points); a group whose search
    point has one learning rate only stays as it is."""
    search = next((r["config"]["lr_search"] for r in records if r["config"].get("lr_search")), None)
    if not search:
        return [r for r in records if r.get("test") is not None]
    groups: dict[str, list[tuple[dict, dict]]] = {}
    for record in records:
        group, point = lr_search_cell({**record["config"], "lr_search": search})
        groups.setdefault(group, []).append((record, point))
    kept = []
    for members in groups.values():
        points: dict[float, list[float]] = {}
        for record, point in members:
            if all(lookup(record, k if k == "seed" else f"config.{k}") == v for k, v in point.items()):
                dev = record.get("dev") or {}
                points.setdefault(lookup(record, "config.trainer.lr"), []).append(dev.get(record_primary(record)))
        points = {lr: sum(v) / len(v) for lr, v in points.items() if None not in v}
        chosen = choose_lr(points) if len(points) > 1 else None
        kept += [r for r, _ in members if chosen is None or lookup(r, "config.trainer.lr") == chosen]
    return [r for r in kept if r.get("test") is not None]  # a grid point whose test waits is not a result yet


def record_primary(record: dict) -> str:
    task = task_classes().get(lookup(record, "config.task.name"))
    return task.primary_metric if task else ""


def dev_curve(record: dict) -> list[tuple[int, float]]:
    """[(epoch, dev score of the primary metric)] after each epoch of a run (its `history`), empty without one."""
    key = f"dev_{record_primary(record)}"
    return [(h["epoch"], h[key]) for h in record.get("history") or [] if key in h]


def search_point(cfg: DictConfig) -> DictConfig:
    """The run's config at the search point: `lr_search.seed` and the `reference` settings."""
    at_point = copy.deepcopy(cfg)
    for dotted, value in point_settings(cfg.lr_search).items():
        OmegaConf.update(at_point, dotted, value, merge=False)
    return at_point


def point_settings(search) -> dict:
    return {"seed": search.get("seed", 0), **(search.get("reference") or {})}


def point_task(cfg: DictConfig):
    """The task the grid points are scored on (built once per search: it reads the data)."""
    at_point = search_point(cfg)
    return build_task(at_point.task, at_point.data_root)


def grid_points(cfg: DictConfig, overrides: list[str], rates: list[float] | None = None) -> list[tuple]:
    """Per rate (the grid's by default): (lr, the point's config, its overrides, its record path)."""
    settings, at_point = point_settings(cfg.lr_search), search_point(cfg)
    points = []
    for lr in cfg.lr_search.grid if rates is None else rates:
        point = copy.deepcopy(at_point)
        OmegaConf.update(point, "trainer.lr", lr, merge=False)
        point_overrides = [o for o in overrides if not o.startswith(tuple(f"{k}=" for k in settings)
                                                                    + ("trainer.lr=",))]
        point_overrides += [f"{k}={v}" for k, v in {**settings, "trainer.lr": lr}.items()]
        path = results.record_path(Path(cfg.results_dir), cfg.experiment, cfg.scale_name,
                                   results.run_key(point_overrides))
        points.append((lr, point, point_overrides, path))
    return points


def extra_rates_left(search, dev: dict[float, float]) -> int:
    """How many rates past the grid the search may still try (`lr_search.extend` less those tried)."""
    return int(search.get("extend") or 0) - (len(dev) - len(set(search.grid)))


# the rates a grid is extended by: 1, 2, 5 times each power of ten
RATE_SCALE = sorted(float(f"{m}e{e}") for e in range(-10, 2) for m in (1, 2, 5))


def past_the_edge(dev: dict[float, float], extra_left: int) -> float | None:
    """The next rate to try when the rate chosen on dev is the lowest or the highest tried and beats its neighbour
    (the best may lie beyond the grid): the next one past it on the 1-2-5 scale. None when the choice lies inside, ties
    its neighbour (a flat stretch points nowhere), or no extra rate is left."""
    rates = sorted(dev)
    if extra_left <= 0 or len(rates) < 2:
        return None
    chosen = choose_lr(dev)
    if chosen == rates[0] and dev[chosen] > dev[rates[1]]:
        beyond = [lr for lr in RATE_SCALE if lr < chosen * (1 - 1e-6)]
        return beyond[-1] if beyond else None
    if chosen == rates[-1] and dev[chosen] > dev[rates[-2]]:
        beyond = [lr for lr in RATE_SCALE if lr > chosen * (1 + 1e-6)]
        return beyond[0] if beyond else None
    return None


def search_lr(cfg: DictConfig, overrides: list[str], run_dir: Path, run_point) -> dict:
    """The learning rate of `lr_search.grid` with the best dev score at the search point (`lr_search.seed` and the
    `reference` settings, e.g. low-data subset 0): each grid point is an ordinary run with its own record, made once
    and shared by every run of the group (the other seeds and subsets). A choice on the edge of the rates tried adds
    the next rate past it (`past_the_edge`), up to `lr_search.extend` rates beyond the grid. Runs in parallel split the
    points between them (a lock file per point) and wait for the ones another run is making. Test scores are never
    looked at. `run_point(cfg, overrides, run_dir)` makes one point's run."""
    search = cfg.lr_search
    task, points = point_task(cfg), grid_points(cfg, overrides)
    fingerprint = task.fingerprint()
    dev = measure(points, task, fingerprint, run_dir, run_point, cfg.experiment)
    paths = {lr: path for lr, _, _, path in points}
    if all(score == float("-inf") for score in dev.values()):
        raise ValueError(f"every learning rate of lr_search.grid {list(search.grid)} diverged")
    while (beyond := past_the_edge(dev, extra_rates_left(search, dev))) is not None:
        log.info("lr %g, chosen on dev, is the edge of the rates tried (%s): trying %g", choose_lr(dev), dev, beyond)
        [point] = grid_points(cfg, overrides, [beyond])
        dev |= measure([point], task, fingerprint, run_dir, run_point, cfg.experiment)
        paths[beyond] = point[3]
    selected = choose_lr(dev)
    log.info("lr %g chosen on dev (%s)", selected, dev)
    for lr, path in paths.items():  # the trained states of the rates not chosen are never tested
        if lr != selected:
            results.state_path(path).unlink(missing_ok=True)
    return {"points": [{"lr": lr, "dev": score if score > float("-inf") else "diverged",
                        **({"extended": True} if lr not in search.grid else {})} for lr, score in sorted(dev.items())],
            "selected": selected, "at": point_settings(search),
            "rule": "highest dev score of the primary metric at the search point; a tie goes to the smaller lr; a "
                    "choice on the edge of the rates tried adds the next rate past it (1-2-5 scale, up to "
                    f"{int(search.get('extend') or 0)})"}


def measure(points: list, task, fingerprint: str, run_dir: Path, run_point, experiment: str) -> dict[float, float]:
    """Each point's dev score of the task's primary metric (-inf for a diverged run), its run made here unless another
    process is making it (a lock file per point), whose record it then waits for."""
    dev = {}
    pending = {lr: (point, point_overrides, path) for lr, point, point_overrides, path in points}
    while pending:
        for lr, (point, point_overrides, path) in list(pending.items()):
            score = recorded_dev(point, path, task, fingerprint)
            if score is None and claim(path.with_suffix(".lock")):
                try:
                    log.info("lr search: %s at lr %g", experiment, lr)
                    run_point(point, point_overrides, run_dir / f"lr_search_{lr:g}")
                finally:
                    path.with_suffix(".lock").unlink(missing_ok=True)
                score = recorded_dev(point, path, task, fingerprint)
            if score is not None:
                dev[lr] = score
                del pending[lr]
        if pending:
            time.sleep(20)  # another run is making these points
    return dev


def recorded_dev(point: DictConfig, path: Path, task, fingerprint: str) -> float | None:
    """A grid point's dev score from its record (-inf if it diverged: never chosen), None while it has none."""
    done = results.find_done(path, OmegaConf.to_container(point, resolve=True), fingerprint)
    if not done:
        return None
    record = results.load_json(done)
    return record["dev"][task.primary_metric] if record["status"] == "ok" else float("-inf")


def next_extension(cfg: DictConfig, overrides: list[str]):
    """The point past the grid's edge that the search would train next, judged from the records made so far (the
    fused launcher trains these together before its jobs search): (lr, config, overrides, record path), or None when
    a grid point has no record yet or the search needs no further rate."""
    task = point_task(cfg)
    fingerprint = task.fingerprint()
    dev = {lr: recorded_dev(point, path, task, fingerprint) for lr, point, _, path in grid_points(cfg, overrides)}
    if None in dev.values() or all(score == float("-inf") for score in dev.values()):
        return None
    while (beyond := past_the_edge(dev, extra_rates_left(cfg.lr_search, dev))) is not None:
        [point] = grid_points(cfg, overrides, [beyond])
        if (score := recorded_dev(point[1], point[3], task, fingerprint)) is None:
            return point
        dev[beyond] = score
    return None


def claim(lock: Path) -> bool:
    """Take a lock file (`pid@host`) for this process: True if taken or already ours. A lock whose process has died
    on this host is taken over; a lock of another host is respected (delete it by hand if that host crashed)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = f"{os.getpid()}@{socket.gethostname()}"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            owner = lock.read_text()
        except FileNotFoundError:  # released meanwhile
            return claim(lock)
        pid, _, host = owner.partition("@")
        if owner == me:
            return True
        if host and host != socket.gethostname():
            return False
        try:
            os.kill(int(pid or 0), 0)
            return False
        except (ProcessLookupError, ValueError):
            lock.unlink(missing_ok=True)  # stale: its run died
            return claim(lock)
        except PermissionError:
            return False
    os.write(fd, me.encode())
    os.close(fd)
    return True
