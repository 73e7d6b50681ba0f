"""Weights & Biases logging, offline unless the user says otherwise (`logger.mode=online`, or `wandb sync` later).

Runs of one sweep share a group, `<experiment>/<scale>`, and the job type `<experiment>`; tags name the method,
task, model, experiment and scale. Besides the resolved config, each run's config carries `table_row` and
`table_col`: its cell of the experiment's table (the labels of the report's table, e.g. "Wq,Wv (wikisql)" and "4"),
so a W&B panel grouped by `table_row` with `table_col` on the x axis shows the lecture table (docs/wandb.md). The final
metrics go to the summary under the record's keys (`test/BLEU` for the record's `test.BLEU`).
"""
from __future__ import annotations

import os


def table_cell(config: dict) -> dict:
    """`table_row` / `table_col` of a run: its cell of the experiment's table (`experiments/<experiment>.yaml`, placed
    by the report's `cells_of`); nothing when the experiment has no table or the run fills no cell. A run that fills
    several columns (a table whose columns are metrics) has no `table_col`."""
    from .report.spec import at_scale, cells_of, spec_of

    spec = spec_of(str(config.get("experiment")))
    cells = cells_of({"config": config}, at_scale(spec, config.get("scale_name"))) if spec else []
    if not cells:
        return {}
    rows, columns = {row for row, _ in cells}, {str(col) for _, col in cells}
    return {"table_row": min(rows), **({"table_col": columns.pop()} if len(columns) == 1 else {})}


def run_tags(config: dict) -> list[str]:
    """Tags for filtering runs: method, task, model, experiment, scale (W&B caps a tag at 64 characters)."""
    def name(section):
        node = config.get(section)
        return node.get("name") if isinstance(node, dict) else None

    tags = [name("method"), name("task"), name("model"), config.get("experiment"), config.get("scale_name")]
    return list(dict.fromkeys(str(t)[:64] for t in tags if t))


class WandbLogger:
    def __init__(self, cfg, name: str, group: str, config: dict, run_dir: str, concurrent: bool = False):
        import wandb

        os.environ.setdefault("WANDB_MODE", cfg.mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb = wandb
        self.run = wandb.init(project=cfg.project, entity=cfg.get("entity"), group=group, name=name,
                              job_type=config.get("experiment"), tags=run_tags(config),
                              config={**config, **table_cell(config)}, dir=run_dir,
                              reinit="create_new" if concurrent else "finish_previous")  # fused cells: open together

    def log(self, values: dict, step: int | None = None) -> None:
        self.run.log(values, step=step)

    @property
    def dir(self) -> str:
        """The run's folder: what `wandb sync` uploads."""
        return self.run.dir

    def abort(self) -> None:
        """Close a failed run (exit code 1), so that what it logged stays readable."""
        self.run.finish(exit_code=1)

    def finish(self, summary: dict, samples: list[dict], max_samples: int) -> None:
        """Final metrics into the summary (keys as given: `test/<metric>`), system outputs as a `samples` table."""
        self.run.summary.update(summary)
        if samples:
            columns = list(samples[0])
            table = self.wandb.Table(columns=columns,
                                     data=[[str(s.get(c)) for c in columns] for s in samples[:max_samples]])
            self.run.log({"samples": table})
        self.run.finish()


def make_logger(cfg, name: str, group: str, config: dict, run_dir: str, concurrent: bool = False):
    if not cfg.get("enabled", False):
        return None
    return WandbLogger(cfg, name, group, config, run_dir, concurrent)


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def read_offline_run(path) -> dict:
    """What an offline W&B run file (`run-*.wandb`) holds, read without the wandb service.

    Returns `history` (one dict per committed step; a logged table appears as `{"_type": "table-file", "path": ...}`,
    the path relative to the run's `files/` folder), `summary`, `config` (the run's config, `_wandb` internals
    left out), `group`, `job_type`, `tags`, `name`, `project` and `complete`: whether the run's exit record is
    there (the wandb service writes the file asynchronously).

    The file is wandb's LevelDB-style log: a 7-byte header, then 32 KiB blocks of records (crc32, length,
    type: full/first/middle/last), each record a `wandb_internal_pb2.Record` protobuf.
    """
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    def items(entries):  # a nested key (["samples", "nrows"]) becomes a nested dict, as it was logged
        out = {}
        for item in entries:
            *parents, last = [item.key] if item.key else list(item.nested_key)
            node = out
            for parent in parents:
                node = node.setdefault(parent, {})
            node[last] = json.loads(item.value_json)
        return out

    data = open(path, "rb").read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    block, pos, chunks, complete = 32768, 7, b"", False
    out = {"history": [], "summary": {}, "config": {}, "group": None, "job_type": None, "tags": [], "name": None,
           "project": None}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a header never straddles a block: skip the padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4) and chunks:  # full or last piece: one whole record
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            which = record.WhichOneof("record_type")
            if which == "history":
                out["history"].append(items(record.history.item))
            elif which == "exit":
                complete = True
            elif which == "summary":
                _merge(out["summary"], items(record.summary.update))
            elif which == "config":
                out["config"].update(items(record.config.update))
                for removed in record.config.remove:
                    out["config"].pop(removed.key or removed.nested_key[0], None)
            elif which == "run":
                run = record.run
                out["config"].update(items(run.config.update))
                out.update(group=run.run_group or None, job_type=run.job_type or None, tags=list(run.tags),
                           name=run.display_name or None, project=run.project or None)
    out["config"].pop("_wandb", None)
    return {**out, "complete": complete}
