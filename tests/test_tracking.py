import json
import time
from pathlib import Path

from omegaconf import OmegaConf

from peft_repro.tracking import make_logger, read_offline_run, run_tags, table_cell


CONFIG = {  # the parts of a resolved run config that tracking reads
    "experiment": "lora_rank_sweep", "scale_name": "smoke", "seed": 0,
    "model": {"name": "tiny_llama"}, "task": {"name": "mnli"},
    "method": {"name": "lora", "r": 4, "targets": ["q", "v"]},
}


def test_wandb_offline_run_is_written(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = OmegaConf.create({"enabled": True, "mode": "offline", "project": "peft_repro_test", "max_samples": 2})
    logger = make_logger(cfg, name="cell-1", group="lora_rank_sweep/smoke", config=CONFIG, run_dir=str(tmp_path))
    for step in range(1, 4):
        logger.log({"train/loss": 1.0 / step}, step=step)
    logger.log({"dev/accuracy": 0.4, "epoch": 0}, step=3)
    samples = [{"source": f"s{i}", "prediction": "p", "reference": "r"} for i in range(3)]
    logger.finish({"test/accuracy": 0.5, "params/trainable": 1234}, samples, max_samples=2)
    [run_dir] = (tmp_path / "wandb").glob("offline-run-*")
    [run_file] = run_dir.glob("run-*.wandb")
    deadline = time.time() + 30
    while not (run := read_offline_run(run_file))["complete"] and time.time() < deadline:
        time.sleep(0.2)  # the wandb service may still be flushing after finish() returns
    assert run["complete"]
    # curves and final metrics, under the record's keys
    assert [row["train/loss"] for row in run["history"] if "train/loss" in row] == [1.0, 0.5, 1.0 / 3]
    assert [row["dev/accuracy"] for row in run["history"] if "dev/accuracy" in row] == [0.4]
    assert run["summary"]["test/accuracy"] == 0.5 and run["summary"]["params/trainable"] == 1234
    # the samples table: logged once, max_samples rows, its file beside the run
    [table] = [row["samples"] for row in run["history"] if "samples" in row]
    assert table["_type"] == "table-file" and table["nrows"] == 2 and table["ncols"] == 3
    data = json.loads((run_dir / "files" / table["path"]).read_text())
    assert data["columns"] == ["source", "prediction", "reference"] and [r[0] for r in data["data"]] == ["s0", "s1"]
    # grouping for the dashboard: group, job type, tags, the config and the run's table cell
    assert run["group"] == "lora_rank_sweep/smoke" and run["job_type"] == "lora_rank_sweep"
    assert run["name"] == "cell-1" and run["project"] == "peft_repro_test"
    assert set(run["tags"]) == {"lora", "mnli", "tiny_llama", "lora_rank_sweep", "smoke"}
    assert run["config"]["method"] == CONFIG["method"] and run["config"]["experiment"] == "lora_rank_sweep"
    assert run["config"]["table_row"] == "Wq,Wv (mnli)" and run["config"]["table_col"] == "4"


def test_table_cell_and_tags():
    """The run's cell of its experiment's table (experiments/<experiment>.yaml), with the report's labels."""
    assert table_cell(CONFIG) == {"table_row": "Wq,Wv (mnli)", "table_col": "4"}
    assert table_cell({**CONFIG, "task": {"name": "wikisql"}, "method": {**CONFIG["method"], "r": 64}}) == \
        {"table_row": "Wq,Wv (wikisql)", "table_col": "64"}
    assert table_cell({"experiment": "adhoc"}) == {}  # no table
    assert table_cell({**CONFIG, "method": {"name": "full"}}) == {}  # in no cell of the table
    # a table whose columns are metrics: the row only
    assert table_cell({"experiment": "e2e_main", "method": {"name": "prefix", "num_virtual_tokens": 10}}) == \
        {"table_row": "Prefix"}
    assert run_tags(CONFIG) == ["lora", "mnli", "tiny_llama", "lora_rank_sweep", "smoke"]
    assert run_tags({"experiment": "adhoc", "method": {"name": "adhoc"}}) == ["adhoc"]


def test_disabled_logger_is_none():
    assert make_logger(OmegaConf.create({"enabled": False}), "n", "g", {}, "/tmp") is None
