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


def read_offline_run(path) -> dict:
    """History rows and summary of an offline W&B run file (`run-*.wandb`), without the wandb service.
    `complete` tells whether the run's exit record is there (the wandb service writes the file asynchronously).

    The file is wandb's LevelDB-style log: a 7-byte header, then 32 KiB blocks of records (crc32, length,
    type: full/first/middle/last), each record a `wandb_internal_pb2.Record` protobuf.
    """
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    block, pos, chunks, history, summary, complete = 32768, 7, b"", [], {}, False
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
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            elif which == "exit":
                complete = True
            elif which == "summary":
                summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
    return {"history": history, "summary": summary, "complete": complete}
