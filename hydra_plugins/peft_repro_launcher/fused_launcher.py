"""`hydra/launcher=fused`: the sweep's LoRA cells train together on one loaded model (peft_repro/sweep.py).

Hydra only loads launchers from the `hydra_plugins` package, hence this module; the work is in peft_repro.
"""
from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path
from typing import Sequence

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


class FusedLauncher(Launcher):
    def __init__(self, max_rows: int = 64, processes: int = 1) -> None:
        super().__init__()
        self.max_rows, self.processes = max_rows, processes

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from peft_repro.checks import check_run_config
        from peft_repro.sweep import run_jobs
        from peft_repro.tasks import DataMissing

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs, composed = [], {}
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            config = self._sweep_config(list(overrides), composed)
            with open_dict(config):
                config.hydra.job.id = config.hydra.job.num = idx
            HydraConfig.instance().set_config(config)
            output_dir = (sweep_dir / str(OmegaConf.select(config, "hydra.sweep.subdir"))).resolve()
            with read_write(config.hydra.runtime):
                config.hydra.runtime.output_dir = str(output_dir)
            HydraConfig.instance().set_config(config)
            output_dir.mkdir(parents=True, exist_ok=True)
            task_cfg = copy.deepcopy(config)
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]
            jobs.append((task_cfg, list(overrides), output_dir, config))
        HydraConfig.instance().set_config(jobs[0][3])
        configure_log(jobs[0][3].hydra.job_logging, self.config.hydra.verbose)  # the log file of job 0's folder
        log.info("fused launcher: %d jobs, at most %d rows a forward pass, %d process(es)", len(jobs), self.max_rows,
                 self.processes)
        try:
            for cfg, overrides, *_ in jobs:
                check_run_config(cfg, overrides)
            records = run_jobs([job[:3] for job in jobs], self.max_rows, self.processes)
        except (DataMissing, ValueError) as err:  # user-fixable: one line, non-zero exit, records so far are kept
            log.error("%s", err)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        returns = []
        for (cfg, overrides, output_dir, config), record in zip(jobs, records):
            ret = JobReturn(overrides=overrides, cfg=cfg, hydra_cfg=config, working_dir=str(output_dir),
                            task_name=config.hydra.job.name, status=JobStatus.COMPLETED)
            ret.return_value = record.get("test")
            returns.append(ret)
        return returns

    def _sweep_config(self, overrides: list[str], composed: dict) -> DictConfig:
        """The job's config, as `load_sweep_config` composes it. Composing takes ~0.3 s a job, so jobs whose overrides
        differ only in values (method.r=1 vs method.r=2, not a config group such as task=mnli) share one composition:
        a copy of it gets the job's values by Hydra's own override step (values never change the defaults list)."""
        loader = self.hydra_context.config_loader
        parsed = OverridesParser.create().parse_overrides(overrides)
        values = [o for o in parsed if o.type == OverrideType.CHANGE and o.package is None
                  and not o.is_hydra_override() and not loader.repository.group_exists(o.key_or_group)]
        key = (tuple(o.input_line for o in parsed if o not in values), tuple(o.key_or_group for o in values))
        if key not in composed:
            config = loader.load_sweep_config(self.config, overrides)
            composed[key] = copy.deepcopy(config)  # as composed: the launch marks the job's config read-only
            return config
        config = copy.deepcopy(composed[key])
        OmegaConf.copy_cache(from_config=self.config, to_config=config)
        ConfigLoaderImpl._apply_overrides_to_config(values, config)
        task = [o for o in parsed if not o.is_hydra_override()]
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.task = [o.input_line for o in task]
            job = config.hydra.job.config.override_dirname
            config.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task, kv_sep=job.kv_sep, item_sep=job.item_sep, exclude_keys=job.exclude_keys)
        return config
