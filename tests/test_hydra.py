from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from peft_repro.checks import typed
from peft_repro.decoding import DecodeConfig
from peft_repro.methods import method_config
from peft_repro.results import load_records
from peft_repro.train import TrainConfig

from .conftest import REPO, needs_data, our_rows, run_main, runs_in_table

CONF = REPO / "conf"
GROUPS = ["model", "task", "method", "trainer", "logger"]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SCALES = sorted(p.stem for p in (CONF / "scale").glob("*.yaml"))


def composed(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_group_option_composes(group, option):
    from omegaconf import OmegaConf

    cfg = composed([f"{group}={option}"])
    own = OmegaConf.load(CONF / group / f"{option}.yaml")
    for key in own:  # the option's own keys arrive as written (an option that builds on another may add keys)
        if key != "defaults":
            assert OmegaConf.to_container(cfg[group], resolve=False)[key] == \
                OmegaConf.to_container(own, resolve=False)[key], (group, option, key)
    if group == "method":
        method_config(dict(cfg.method))  # the method's dataclass accepts every key
    elif group == "trainer":
        typed(TrainConfig, OmegaConf.to_container(cfg.trainer, resolve=True), "trainer")
    elif group == "task":  # generation tasks decode; MNLI scores label words
        parts = [part for part in ("decode", "dev_decode") if part in cfg.task]
        assert parts == ["decode", "dev_decode"] or (not parts and cfg.task.label_words)
        for part in parts:
            typed(DecodeConfig, OmegaConf.to_container(cfg.task[part], resolve=True), f"task.{part}")
    elif group == "model":
        assert cfg.model.source in ("smollm2_wheel", "pretrained", "random")
    elif group == "logger":
        assert cfg.logger.enabled == (option != "none")


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_at_every_scale(experiment, scale):
    cfg = composed([f"+experiment={experiment}", f"scale={scale}"])
    assert cfg.experiment == experiment and cfg.scale_name == scale
    method_config(dict(cfg.method))



@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("task", ["wikisql", "mnli"])
def test_lora_tables_5_and_6_make_the_same_runs_at_every_scale(task, scale):
    """conf/setting/lora_gpt3.yaml: Table 5's Wq at r=8 and Wq,Wv at r=4 are Table 6's runs (as in the paper), so
    the two experiments' configs of these cells compute the same thing and their lr choices are made alike."""
    from omegaconf import OmegaConf

    from peft_repro.lr_search import lr_search_cell
    from peft_repro.results import same_settings

    for targets, rank in (("[q]", 8), ("[q,v]", 4)):
        table5, table6 = (OmegaConf.to_container(composed(
            [f"+experiment={experiment}", f"scale={scale}", f"task={task}", f"method.targets={targets}", *extra]),
            resolve=True) for experiment, extra in (("lora_weight_type", []),
                                                     ("lora_rank_sweep", [f"method.r={rank}"])))
        assert table5["method"]["r"] == rank
        assert same_settings(table5, table6, any_experiment=True), (targets, scale)
        assert lr_search_cell(table5) == lr_search_cell(table6)
        assert "lora_rank_sweep" in table5["shares_runs_with"] and "lora_weight_type" in table6["shares_runs_with"]


@pytest.mark.parametrize("table,check,epochs,grid", [("xsum_main", "xsum_main_budget", (2, 4), [1e-3, 2e-3]),
                                                     ("low_data_xsum", "low_data_xsum_budget", (3, 6), [1e-3, 2e-3])])
def test_an_xsum_budget_check_changes_prefix_tunings_epochs_and_grid_only(table, check, epochs, grid):
    """conf/setting/xsum.yaml, low_data_xsum.yaml: a budget check is its table's prefix-tuning at the default scale
    with twice the epochs and its own grid: the data, decoding, search point and the sweep's seeds and subsets are
    the table's. At every other scale it trains twice the table's epochs there."""
    from omegaconf import OmegaConf, open_dict

    size = ["task.low_data.size=50"] if table == "low_data_xsum" else []

    def config(name, scale):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"+experiment={name}", f"scale={scale}",
                                                           "method=prefix_mlp", *size], return_hydra_config=True)
        sweep = OmegaConf.to_container(cfg.hydra.sweeper.params)
        with open_dict(cfg):
            del cfg["hydra"]
        return OmegaConf.to_container(cfg, resolve=True), sweep

    (ours, our_sweep), (theirs, their_sweep) = config(table, "default"), config(check, "default")
    assert (ours["trainer"]["epochs"], theirs["trainer"]["epochs"]) == epochs
    assert theirs["lr_search"]["grid"] == grid and ours["lr_search"]["grid"][-2:] == [2e-3, 5e-3]
    for cfg in (ours, theirs):
        for key in ("experiment", "method_settings"):
            cfg.pop(key)
        cfg["lr_search"].pop("grid")
        cfg["trainer"].pop("epochs")
    assert ours == theirs
    assert {k: v for k, v in our_sweep.items() if k not in ("method", "task.low_data.size")} == \
        {k: v for k, v in their_sweep.items() if k not in ("method", "task.low_data.size")}
    assert their_sweep["method"] == "prefix_mlp" and str(their_sweep.get("task.low_data.size", 50)) == "50"
    for scale in SCALES:
        assert config(check, scale)[0]["trainer"]["epochs"] == 2 * config(table, scale)[0]["trainer"]["epochs"], scale


def test_smoke_scale_uses_a_tiny_model_and_user_overrides_win():
    cfg = composed(["+experiment=lora_rank_sweep", "scale=smoke", "trainer.lr=0.123"])
    assert cfg.model.name == "tiny_llama" and cfg.trainer.lr == 0.123
    assert cfg.task.name == "mnli"


def test_smoke_sweep_writes_a_30_cell_table_and_resumes(tmp_path: Path):
    """The 30 cells train fused (hydra/launcher=fused, tests/test_fused.py has its equality with the local
    launcher); the rerun with the default launcher finds every record."""
    args = ["+experiment=lora_rank_sweep", "scale=smoke", f"results_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path}/multirun"]
    first = run_main(*args, "hydra/launcher=fused")
    assert first.returncode == 0, first.stderr[-3000:]
    records = load_records(tmp_path, "lora_rank_sweep", "smoke")
    assert len(records) == 30 and all(r["status"] == "ok" for r in records)
    assert {(r["config"]["task"]["name"], tuple(r["config"]["method"]["targets"]), r["config"]["method"]["r"])
            for r in records} == {(task, t, r) for task in ["mnli", "wikisql"]
                                  for t in [("q",), ("q", "v"), ("q", "k", "v", "o")] for r in [1, 2, 4, 8, 64]}
    for r in records:
        metric = "accuracy" if r["config"]["task"]["name"] == "mnli" else "logical_form_accuracy"
        assert r["params"]["trainable"] > 0 and 0 <= r["test"][metric] <= 1
        assert r["git"]["commit"] and r["hardware"] and r["wall_seconds"] > 0 and r["fused_cells"] == 15
    [table] = (tmp_path / "tables" / "lora_rank_sweep").glob("*.md")
    text = table.read_text()
    rows = our_rows(text)  # the report's table: one row per weight type and task, columns the ranks
    assert [row.split(" | ")[0] for row in rows] == [f"| {t} ({task})" for task in ("wikisql", "mnli")
                                                       for t in ("Wq", "Wq,Wv", "Wq,Wk,Wv,Wo")]
    assert all("–" not in cell for row in rows for cell in row.split(" | ")[2:7])  # every rank has its run
    assert runs_in_table(text) == {r["record"] for r in records}

    again = run_main(*args)  # every cell is done: skipped, and the table, unchanged, gets no new version
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipping") + again.stderr.count("skipping") == 30
    assert len(list((tmp_path / "tables" / "lora_rank_sweep").glob("*.md"))) == 1


def test_resume_finds_a_record_by_its_settings_under_another_name(tmp_path: Path):
    """A sweep that now names a default value explicitly (`task=mnli`) still finds the runs made without it."""
    args = ["+experiment=lora_rank_sweep", "scale=smoke", f"results_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path}/multirun", "method.targets=[q]", "method.r=1"]
    assert run_main(*args, "hydra.mode=RUN", f"hydra.run.dir={tmp_path}/run").returncode == 0
    [first] = load_records(tmp_path, "lora_rank_sweep", "smoke")
    assert "task=mnli" not in first["overrides"]
    again = run_main(*args, "hydra.sweeper.params.task=mnli")  # the sweep passes task=mnli to its one run
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skipping" in again.stdout + again.stderr
    assert load_records(tmp_path, "lora_rank_sweep", "smoke") == [first]


def test_missing_data_is_a_one_line_error(tmp_path: Path):
    out = run_main("+scale=smoke", "task=mnli", f"data_root={tmp_path}/nowhere", f"results_dir={tmp_path}",
                   f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 2
    assert f"{tmp_path}/nowhere/mnli/train_subset.jsonl.gz" in out.stderr
    assert "error: MNLI train file not found" in out.stderr


def test_settings_identity_and_a_superseded_record_is_kept_aside(tmp_path: Path, monkeypatch):
    import json
    import time

    from peft_repro.results import same_settings, supersede, write_record

    base = {"trainer": {"lr": 1e-3}, "results_dir": "/a", "threads": 1, "logger": {"enabled": True}}
    assert same_settings(base, {**base, "results_dir": "/b", "threads": None, "logger": {"enabled": False}})
    assert not same_settings(base, {**base, "trainer": {"lr": 2e-3}})
    assert same_settings(base, {**base, "trainer": {"lr": 1e-3, "new_option": None}})  # null: the old behaviour
    assert not same_settings(base, {**base, "trainer": {"lr": 1e-3, "new_option": 1}})
    path = tmp_path / "runs" / "x" / "default" / "cell.json"
    write_record(path, {"status": "ok", "config": base})
    moved = supersede(path)
    assert not path.exists() and moved.name.startswith("cell.json.superseded-")
    write_record(path, {"status": "ok", "config": {**base, "seed": 1}})
    stamp = moved.name.split("superseded-")[1]
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: stamp)  # superseded again within the same second
    again = supersede(path)  # both records are kept
    assert again != moved and {json.loads(p.read_text())["config"].get("seed") for p in (moved, again)} == {None, 1}
    assert load_records(tmp_path, "x", "default") == []


def test_changed_settings_are_rerun_and_the_old_record_kept(tmp_path: Path):
    """Run one cell three times: unchanged, the rerun trains nothing and leaves its record byte for byte; after its
    record's settings are changed (a record made by other code), the rerun trains again and keeps the old record
    aside (`*.json.superseded-*`), the new one made with the current settings."""
    import json

    from peft_repro.results import write_record

    args = ["+experiment=lora_rank_sweep", "scale=smoke", f"results_dir={tmp_path}", "method.targets=[q]",
            "method.r=1", "hydra.mode=RUN", f"hydra.run.dir={tmp_path}/run"]
    folder = tmp_path / "runs" / "lora_rank_sweep" / "smoke"
    first = run_main(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "trainable parameters" in first.stdout + first.stderr  # the log line of a run that trains
    [path] = folder.glob("*.json")
    made = path.read_bytes()

    again = run_main(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "skipping" in log and "trainable parameters" not in log, log[-3000:]
    assert path.read_bytes() == made and list(folder.glob("*.json*")) == [path]

    changed = json.loads(made)
    changed["config"]["trainer"]["lr"] *= 2  # as if another version had run it at another rate
    write_record(path, changed)
    edited = path.read_bytes()
    third = run_main(*args)
    assert third.returncode == 0, third.stderr[-3000:]
    log = third.stdout + third.stderr
    assert "trainable parameters" in log and "skipping" not in log, log[-3000:]
    [moved] = folder.glob("*.json.superseded-*")
    assert moved.name.startswith(path.name) and moved.read_bytes() == edited
    new = json.loads(path.read_bytes())
    assert new["config"] == json.loads(made)["config"] and new["status"] == "ok"
    assert new["finished"] >= json.loads(made)["finished"] and list(folder.glob("*.json")) == [path]


@needs_data("e2e")
def test_experiments_of_one_setting_share_runs_and_tables_read_them(tmp_path: Path):
    """conf/setting/e2e.yaml: e2e_main's lr-grid points of PREFIX-10 serve emb_vs_infix's search too, its chosen
    point is emb_vs_infix's PREFIX-10 seed-0 cell (neither is trained again), and the emb_vs_infix paper table shows
    it. Only PREFIX-1 is new."""
    from peft_repro.report.cells import build_tables
    from peft_repro.report.spec import load_specs

    common = ["scale=smoke", "method=prefix_mlp", "seed=0", "task.test_metrics=[BLEU]", "logger=none",
              f"results_dir={tmp_path}"]
    search = "lr_search={grid: [0.001, 0.05], seed: 0, reference: {method.num_virtual_tokens: 10}}"
    first = run_main("+experiment=e2e_main", *common, search, f"hydra.sweep.dir={tmp_path}/a")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_main("+experiment=emb_vs_infix", "method.num_virtual_tokens=1,10", *common, search,
                      f"hydra.sweep.dir={tmp_path}/b")
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert log.count("trainable parameters") == 1 and "/e2e_main/smoke/" in log  # PREFIX-1 only
    assert len(load_records(tmp_path, "e2e_main", "smoke")) == 2  # the two grid points
    [own] = load_records(tmp_path, "emb_vs_infix", "smoke")
    assert own["config"]["method"]["num_virtual_tokens"] == 1
    assert own["lr_selection"]["points"] == sorted(({"lr": r["config"]["trainer"]["lr"], "dev": r["dev"]["BLEU"]}
                                                    for r in load_records(tmp_path, "e2e_main", "smoke")),
                                                   key=lambda p: p["lr"])  # the search lists its points by rate
    specs, _ = load_specs(REPO / "experiments")
    built = build_tables({"emb_vs_infix": specs["emb_vs_infix"]}, tmp_path, "smoke")
    rows = {row.label: len(row.cells["BLEU"].runs) for row in built["emb_vs_infix"].rows}
    assert rows["PREFIX"] == rows["PREFIX-1"] == 1


def test_a_search_without_a_grid_for_the_method_warns_and_a_rate_beside_a_search_is_an_error(caplog, tmp_path):
    """A search whose grid the method lacks (`method_settings.<method>.lr_grid`) would train at the fallback rate."""
    from peft_repro.checks import check_run_config

    cfg = composed(["method=full", "lr_search={seed: 0}", f"results_dir={tmp_path}"])
    with caplog.at_level("WARNING", logger="peft_repro"):
        check_run_config(cfg)
    assert "method full has no lr_grid (method_settings.full.lr_grid): it trains at trainer.lr=" in caplog.text
    caplog.clear()
    cfg = composed(["+experiment=lora_rank_sweep", f"results_dir={tmp_path}"])
    check_run_config(cfg)  # LoRA has its grid: no warning
    assert "lr_grid" not in caplog.text
    for given in ("trainer.lr=1e-4", "++trainer.lr=1e-4"):
        with pytest.raises(ValueError, match="trainer.lr=1e-4 and the lr search on dev"):
            check_run_config(cfg, [given])
    caplog.clear()
    check_run_config(composed(["method=full", "lr_search={seed: 0}", f"results_dir={tmp_path}"]))
    assert "lr_grid" not in caplog.text  # warned once a process (a fused sweep checks every job)
    for untrained in ("zero_shot", "discrete_prompt"):  # nothing to search
        check_run_config(composed([f"method={untrained}", "lr_search={seed: 0}", f"results_dir={tmp_path}"]))
    assert "lr_grid" not in caplog.text
    # no grid and no rate either (XSum's setting reads method_settings.<method>.lr): an error, not a run at None
    with pytest.raises(ValueError, match="method infix has neither a learning-rate grid nor a rate"):
        check_run_config(composed(["+experiment=xsum_main", "method=infix", f"results_dir={tmp_path}"]))
