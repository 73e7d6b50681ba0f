"""Checks of user input that run before anything slow starts, each failing with one clear line (a ValueError, which
`python -m peft_repro` prints as `error: ...` with exit code 2): typed config sections and the context length."""
from __future__ import annotations

import dataclasses
import logging
import types
import typing

SCALARS = (bool, int, float, str)
log = logging.getLogger("peft_repro")


def typed(cls, values: dict, section: str):
    """`cls(**values)` for a config dataclass, with unknown keys and values of the wrong type named, e.g.
    `trainer.batch_size must be int, not 'abc'` instead of a TypeError deep in the run."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{section} has no option {', '.join(unknown)}; it takes "
                         f"{', '.join(sorted(fields)) or 'none'}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        allowed = _allowed(hints[name])
        if allowed and not _fits(value, allowed):
            raise ValueError(f"{section}.{name} must be {_names(allowed)}, not {value!r}")
    return cls(**values)


def _allowed(hint) -> tuple | None:
    """The scalar types a field takes (None: not checked, e.g. lists and mappings)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if all(a in SCALARS or a is type(None) for a in args):
        return args
    return None


def _names(allowed: tuple) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in allowed)


def _fits(value, allowed: tuple) -> bool:
    if value is None:
        return type(None) in allowed
    if isinstance(value, bool):  # bool is an int in Python; an int option given true/false is a mistake
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    return type(value) in allowed


def check_context(max_positions: int | None, virtual_tokens: int, max_source: int | None, max_target: int | None,
                  max_new_tokens: int = 0) -> None:
    """Virtual tokens + source + target (or generated tokens) must fit the model's context; checked before
    training, not found at the first long batch."""
    if not max_positions:
        return
    target = max(max_target or 0, max_new_tokens)
    need = virtual_tokens + (max_source or 0) + target
    if need > max_positions:
        raise ValueError(f"{virtual_tokens} virtual tokens + {max_source} source + {target}"
                         f" target tokens = {need} exceed the model's context of {max_positions} positions: "
                         "lower method.num_virtual_tokens or task.max_source_tokens")


TRAINS_NOTHING = ("zero_shot", "discrete_prompt")  # methods without a learning rate to search
_warned_unsearched: set[str] = set()

# run-level and task keys read as numbers or switches, with what each takes
RUN_KEYS = {"seed": (int,), "threads": (int, type(None)), "record_samples": (int,), "resume": (bool,),
            "zero_shot": (bool,)}
TASK_SIZES = ("max_train_examples", "max_eval_examples", "max_dev_examples", "max_source_tokens", "max_target_tokens",
              "subset_seed")


def check_run_config(cfg, overrides=()) -> None:
    """The method's options, and the keys outside the dataclass-typed sections (trainer, decoding): the run's own
    switches, the task's sizes, the learning rate and its grid, and the results folder. Reads only these keys
    (`method=zero_shot` leaves others unresolvable). `overrides`: the command line's, where a rate given there meets a
    search that would replace it."""
    from omegaconf import OmegaConf

    from .paths import writable_folder

    for key, allowed in RUN_KEYS.items():
        if key in cfg and not _fits(cfg[key], allowed):
            raise ValueError(f"{key} must be {_names(allowed)}, not {cfg[key]!r}")
    if (cfg.get("threads") is not None and cfg.threads < 1) or cfg.get("record_samples", 0) < 0:
        raise ValueError("threads must be >= 1 (or null) and record_samples >= 0")
    for key in TASK_SIZES:
        value = cfg.task.get(key)
        if value is not None and (not _fits(value, (int,)) or value < (0 if key == "subset_seed" else 1)):
            raise ValueError(f"task.{key} must be a positive integer or null (all), not {value!r}")
    grid = OmegaConf.select(cfg, "lr_search.grid", default=None)
    grid = OmegaConf.to_container(grid) if OmegaConf.is_config(grid) else grid
    if grid is not None and (not isinstance(grid, list) or not grid
                             or not all(_fits(lr, (float,)) and lr > 0 for lr in grid)):
        raise ValueError(f"lr_search.grid must be a list of positive learning rates, not {grid!r}")
    method = OmegaConf.select(cfg, "method.name", default=None)
    if method not in (None, "zero_shot"):  # the method's options, before the model loads (zero_shot has none)
        from .methods import method_config

        method_config(OmegaConf.to_container(cfg.method, resolve=True))
    lr = OmegaConf.select(cfg, "trainer.lr", default=None, throw_on_resolution_failure=False)  # zero_shot: unset
    if cfg.get("lr_search") is not None and grid is None and method not in TRAINS_NOTHING:
        if lr is None:
            raise ValueError(f"method {method} has neither a learning-rate grid nor a rate here "
                             f"(method_settings.{method}.lr_grid or .lr): give trainer.lr=... with lr_search=null")
        if method not in _warned_unsearched:  # once per process: a fused sweep checks every job
            _warned_unsearched.add(method)
            log.warning("lr_search is set but method %s has no lr_grid (method_settings.%s.lr_grid): it trains at "
                        "trainer.lr=%s without a search", method, method, lr)
    given = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("trainer.lr=")]
    if grid and given:  # the search would replace the rate: the run would not be the one asked for
        raise ValueError(f"trainer.lr={given[0]} and the lr search on dev (lr_search.grid {grid}) both set the rate: "
                         f"add lr_search=null to train at {given[0]}, or drop trainer.lr to let dev choose")
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and not lr > 0:  # a string: TrainConfig names it
        raise ValueError(f"trainer.lr must be a positive learning rate, not {lr!r}")
    writable_folder(cfg.results_dir, "results_dir (PEFT_REPRO_RESULTS or results_dir=...)")
    extend = OmegaConf.select(cfg, "lr_search.extend", default=None)
    if extend is not None and (not _fits(extend, (int,)) or extend < 0):
        raise ValueError(f"lr_search.extend must be a non-negative integer (rates tried past the grid), not {extend!r}")
