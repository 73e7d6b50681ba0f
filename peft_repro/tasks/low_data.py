"""Low-data subsets (Li & Liang 2021, §6.3): training sizes {50, 100, 200, 500}, 5 random subsets per size, and a
dev split of 30% of the training size for early stopping, drawn from the rest of the training pool.

The original authors never released their subsets. Ours are ids (row indices into the task's training pool, in
file order), committed under `peft_repro/tasks/low_data_subsets/<task>.json`, so anyone regenerates the same subsets;
`python -m peft_repro.tasks.low_data TASK POOL_SIZE` rewrites a file from the sampler, and a test checks that the
committed ids are exactly what the sampler produces.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SIZES = (50, 100, 200, 500)
SUBSETS = 5
DEV_FRACTION = 0.3


def ids_path(task: str) -> Path:
    return Path(__file__).parent / "low_data_subsets" / f"{task}.json"


def sample(task: str, pool_size: int, sizes=SIZES, subsets: int = SUBSETS) -> dict:
    """{size: [{"train": ids, "dev": ids}, ...]}; each subset has its own seeded generator, so adding sizes or
    subsets never changes the existing ones."""
    out = {}
    for size in sizes:
        n_dev = round(DEV_FRACTION * size)
        if size + n_dev > pool_size:
            raise ValueError(f"{task}: {size} + {n_dev} dev examples do not fit in a pool of {pool_size}")
        out[str(size)] = []
        for k in range(subsets):
            drawn = random.Random(f"{task}/{size}/{k}").sample(range(pool_size), size + n_dev)
            out[str(size)].append({"train": sorted(drawn[:size]), "dev": sorted(drawn[size:])})
    return {"task": task, "pool_size": pool_size, "dev_fraction": DEV_FRACTION, "subsets": out}


def subset_ids(task: str, pool_size: int, size: int, subset: int) -> dict:
    path = ids_path(task)
    if not path.exists():
        raise FileNotFoundError(f"no committed low-data ids for {task}: {path} "
                                f"(write them with `python -m peft_repro.tasks.low_data {task} {pool_size}`)")
    committed = json.loads(path.read_text())
    if committed["pool_size"] != pool_size:
        raise ValueError(f"{path} was drawn from a pool of {committed['pool_size']} rows, this data has {pool_size}")
    if str(size) not in committed["subsets"] or not 0 <= subset < len(committed["subsets"][str(size)]):
        raise ValueError(f"{path} has no subset {subset} of size {size}")
    return committed["subsets"][str(size)][subset]


if __name__ == "__main__":
    name, pool = sys.argv[1], int(sys.argv[2])
    ids_path(name).parent.mkdir(parents=True, exist_ok=True)
    ids_path(name).write_text(json.dumps(sample(name, pool)) + "\n")
    print(f"wrote {ids_path(name)}")
