"""Learning rates chosen on dev: each grid point is a run of its own at the search point, shared by every run of the
group; tables keep only the runs at the chosen rate."""
import json
from pathlib import Path

from peft_repro.lr_search import choose_lr, dev_selected, past_the_edge
from peft_repro.results import load_records

from .conftest import needs_data, run_main

SEARCH = {"grid": [1e-4, 1e-3, 1e-2], "seed": 0, "reference": {"task.low_data.subset": 0}}


def record(lr, dev, seed=0, subset=0, method="prefix", search=SEARCH, tested=True):
    return {"record": f"{method}-{lr}-{seed}-{subset}", "seed": seed, "dev": {"BLEU": dev},
            "test": {"BLEU": dev} if tested else None,
            "config": {"seed": seed, "lr_search": search, "method": {"name": method},
                       "task": {"name": "e2e", "low_data": {"size": 50, "subset": subset}}, "trainer": {"lr": lr}}}


def test_tables_keep_the_runs_at_the_rate_chosen_on_dev_at_the_search_point():
    points = [record(1e-4, 0.40, tested=False), record(1e-3, 0.50), record(1e-2, 0.45, tested=False)]
    others = [record(1e-3, 0.10, seed=1), record(1e-3, 0.20, subset=3), record(1e-2, 0.90, seed=1)]  # not points
    older = [record(1e-3, 0.3, seed=1, subset=2, search=None)]  # made before the search: joins its group
    lora = [record(1e-3, 0.2, method="lora"), record(1e-3, 0.3, method="lora", seed=1)]  # one rate: kept as is
    kept = dev_selected(points + others + older + lora)
    assert sorted(r["record"] for r in kept) == sorted(
        ["prefix-0.001-0-0", "prefix-0.001-1-0", "prefix-0.001-0-3", "prefix-0.001-1-2", "lora-0.001-0-0",
         "lora-0.001-1-0"])
    assert choose_lr({1e-3: 0.5, 1e-4: 0.5, 1e-2: 0.1}) == 1e-4  # a tie goes to the smaller rate
    assert dev_selected(lora) == lora
    # a chosen point whose deferred test has not run yet is no result
    assert dev_selected([record(1e-4, 0.40), record(1e-3, 0.50, tested=False)]) == []


@needs_data("e2e")
def test_parallel_runs_share_one_search_and_use_its_rate(tmp_path: Path):
    out = run_main("+experiment=e2e_main", "scale=smoke", "method=lora", "seed=0,1", "task.test_metrics=[BLEU]",
                   "lr_search={grid: [0.001, 0.05], seed: 0}", "hydra/launcher=local_parallel", "logger=none",
                   "trainer.save_checkpoint=true",  # into the lr-grid point's own folder, made when needed
                   f"results_dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/multirun")
    assert out.returncode == 0, out.stderr[-3000:]
    records = load_records(tmp_path, "e2e_main", "smoke")
    assert sorted((r["seed"], r["config"]["trainer"]["lr"]) for r in records)[:2] == [(0, 0.001), (0, 0.05)]
    [selection] = [r["lr_selection"] for r in records if r["seed"] == 1]
    dev = {r["config"]["trainer"]["lr"]: r["dev"]["BLEU"] for r in records if r["seed"] == 0}
    assert {p["lr"]: p["dev"] for p in selection["points"]} == dev and selection["selected"] == choose_lr(dev)
    assert len(records) == 3 and [r["config"]["trainer"]["lr"] for r in records if r["seed"] == 1] == [
        selection["selected"]]
    assert not list((tmp_path / "runs").rglob("*.lock"))
    # only the chosen grid point is tested; no trained state is left behind
    assert {r["config"]["trainer"]["lr"]: r["test"] is not None for r in records if r["seed"] == 0} == {
        lr: lr == selection["selected"] for lr in (0.001, 0.05)}
    assert not list((tmp_path / "runs").rglob("*.safetensors"))
    assert {(r["seed"], r["config"]["trainer"]["lr"]) for r in dev_selected(records)} == {
        (0, selection["selected"]), (1, selection["selected"])}


def test_a_choice_on_the_grids_edge_tries_the_next_rate_past_it():
    assert past_the_edge({1e-4: 0.5, 2e-4: 0.4}, extra_left=2) == 5e-5  # the lowest rate won: one step down
    assert past_the_edge({1e-4: 0.3, 2e-4: 0.4}, extra_left=2) == 5e-4  # the highest won: one step up
    assert past_the_edge({1e-4: 0.3, 2e-4: 0.4, 5e-4: 0.1}, extra_left=2) is None  # inside: the grid is wide enough
    assert past_the_edge({1e-4: 0.5, 2e-4: 0.4}, extra_left=0) is None  # no extra rate left
    assert past_the_edge({5e-3: 0.5, 1e-2: float("-inf")}, extra_left=2) == 2e-3  # a diverged top is no choice
    assert past_the_edge({3e-4: 0.5, 1e-3: 0.1}, extra_left=1) == 2e-4  # off-scale rates step onto the 1-2-5 scale
    assert past_the_edge({1e-4: 0.5, 2e-4: 0.5, 5e-4: 0.2}, extra_left=2) is None  # a tie at the edge points nowhere
    assert past_the_edge({1e-4: 0.5}, extra_left=2) is None  # one rate is no grid


@needs_data("e2e")
def test_the_search_extends_a_grid_whose_choice_is_on_its_edge(tmp_path: Path):
    """search_lr with grid points whose dev score peaks at 2e-5, below the grid: it steps down until the choice is
    inside or `extend` rates are spent; points made once are reused."""
    import math

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from peft_repro import results
    from peft_repro.lr_search import search_lr

    from .conftest import REPO

    trained = []

    def run_point(point, point_overrides, run_dir):  # a grid point's record, its dev BLEU highest at 2e-5
        trained.append(point.trainer.lr)
        path = results.record_path(tmp_path, "e2e_main", "smoke", results.run_key(point_overrides))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"status": "ok", "config": OmegaConf.to_container(point, resolve=True),
                                    "dev": {"BLEU": 1 - abs(math.log10(point.trainer.lr / 2e-5))}}))

    def search(extend):
        overrides = ["+experiment=e2e_main", "scale=smoke", "method=lora", "seed=1", f"results_dir={tmp_path}",
                     f"lr_search={{grid: [1e-4, 1e-3], seed: 0, extend: {extend}}}"]
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        return search_lr(cfg, overrides, tmp_path / "run", run_point)

    selection = search(extend=2)
    assert trained == [1e-4, 1e-3, 5e-5, 2e-5]  # still on the edge at 2e-5, but no extra rate is left
    assert selection["selected"] == 2e-5
    assert [(p["lr"], p.get("extended", False)) for p in selection["points"]] == [
        (2e-5, True), (5e-5, True), (1e-4, False), (1e-3, False)]
    assert search(extend=3)["selected"] == 2e-5 and trained[4:] == [1e-5]  # 1e-5 is worse: the choice is inside


@needs_data("e2e")
def test_a_diverging_rate_is_recorded_never_chosen_and_a_single_diverging_run_fails(tmp_path: Path):
    import math

    assert choose_lr({1e-3: 0.2, 1e6: float("-inf")}) == 1e-3 and choose_lr({1e-3: 0.2, 1e6: math.nan}) == 1e-3
    out = run_main("+scale=smoke", "method=full", "trainer.lr=inf", "logger=none",
                   f"results_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 3 and "error: training diverged at step" in out.stderr
    [record] = load_records(tmp_path, "adhoc", "smoke")
    assert record["status"] == "diverged" and "test" not in record and "NaN" not in json.dumps(record)


@needs_data("mnli")
def test_method_zero_shot_records_an_experiments_zero_shot_row_once(tmp_path: Path):
    """`method=zero_shot` in a LoRA experiment (whose method options do not apply to it) writes runs/zero_shot/."""
    args = ["+experiment=lora_rank_sweep", "scale=smoke", "task=mnli", "method=zero_shot", "hydra.mode=RUN",
            f"results_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run"]
    assert run_main(*args).returncode == 0 and run_main(*args).returncode == 0
    [record] = load_records(tmp_path, "zero_shot", "smoke")
    assert 0 < record["test"]["majority_rate"] < 1 and len(record["test_items"]["ids"]) == 4
    assert not load_records(tmp_path, "lora_rank_sweep", "smoke")
    # an experiment whose trainer.lr reads method_settings.<method>.lr, which zero_shot does not have
    assert run_main("+experiment=xsum_main", "scale=smoke", "method=zero_shot", "hydra.mode=RUN",
                    f"results_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run2").returncode == 0
    assert len(load_records(tmp_path, "zero_shot", "smoke")) == 2
    # a record of the same setting under an older key (made when the model config had a cache_dir key) is found
    [path] = [p for p in (tmp_path / "runs" / "zero_shot" / "smoke").glob("*.json")
              if json.loads(p.read_text())["config"]["task"]["name"] == "mnli"]
    older = json.loads(path.read_text())
    older["config"]["model"]["cache_dir"] = "~/.cache/peft_repro"
    path.unlink()
    (path.parent / "zero_shot-0123456789ab.json").write_text(json.dumps(older))
    assert run_main(*args).returncode == 0 and len(load_records(tmp_path, "zero_shot", "smoke")) == 2


def test_runs_tested_on_more_items_keep_the_choice_of_the_grid_points_of_their_training():
    """e2e_main's main rows tested again on all 630 MRs (`task.max_eval_examples` null, lr_search off): they join the
    group of the grid points made with the 200-MR test, so a rerun at a rate not chosen on dev is left out."""
    points = [record(1e-4, 0.40, tested=False), record(1e-3, 0.50), record(1e-2, 0.45, tested=False)]
    full_test = [{**r, "record": r["record"] + "-all",
                  "config": {**r["config"], "lr_search": None, "task": {**r["config"]["task"], "max_eval_examples": None,
                                                                        "decode": {"num_beams": 5}}}}
                 for r in (record(1e-3, 0.50), record(1e-3, 0.30, seed=1), record(1e-2, 0.95, seed=1))]
    kept = dev_selected(points + full_test)
    assert sorted(r["record"] for r in kept) == ["prefix-0.001-0-0", "prefix-0.001-0-0-all", "prefix-0.001-1-0-all"]
