"""`python -m peft_repro +experiment=NAME [scale=smoke|default|paper] [key=value ...]` (Hydra); without an experiment,
`python -m peft_repro +scale=smoke [key=value ...]` (an experiment file brings the `scale` group, a bare run adds it)."""
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .paths import repo_root

log = logging.getLogger("peft_repro")


def set_threads(threads, hc) -> None:
    """Torch threads per run. Unset: all cores, or cores / n_jobs under the joblib launcher, because two
    processes that each spin two OpenMP threads on two cores run 10x slower than one thread each."""
    import os

    import torch

    if threads is None and "joblib" in hc.launcher.get("_target_", "").lower():
        n_jobs = hc.launcher.n_jobs if hc.launcher.n_jobs > 0 else os.cpu_count()
        threads = max(1, os.cpu_count() // n_jobs)
    if threads:
        torch.set_num_threads(threads)


@hydra.main(config_path=str(repo_root() / "conf"), config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    from .checks import check_run_config
    from .results import git_state
    from .run import run
    from .tasks import DataMissing

    git_state()  # the commit of the code this process imported, before the checkout can move on
    hc = HydraConfig.get()
    try:
        check_run_config(cfg, list(hc.overrides.task))
        set_threads(cfg.threads, hc)
        record = run(cfg, list(hc.overrides.task), Path(hc.runtime.output_dir))
    except (DataMissing, ValueError) as err:  # user-fixable: one line, non-zero exit, records so far are kept
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception:  # a bug: in the job's log at once (a parallel sweep would report it only when all jobs end)
        log.exception("run failed: %s", " ".join(hc.overrides.task))
        raise
    if record["status"] == "diverged":  # recorded; a sweep goes on with its other cells, a single run fails
        if hc.mode == RunMode.RUN:
            print(f"error: training diverged at step {record['diverged_at_step']} (record: {record['record']})",
                  file=sys.stderr)
            sys.exit(3)
        return None
    return record["test"]


if __name__ == "__main__":
    main()
