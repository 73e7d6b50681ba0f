"""Bad input and faults, as a new user meets them: each case gives one `error:` line (or Hydra's own message for an
unknown config name) and a non-zero exit, never a traceback, and leaves every existing record and table as it was."""
import hashlib
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from peft_repro.results import load_records

from .conftest import DATA, needs_data, run_cli_cases

# (overrides, exit code, a fragment of the message)
CONFIG_CASES = [
    (["trainer.batch_size=abc"], 2, "trainer.batch_size must be int, not 'abc'"),
    (["trainer.batch_size=0"], 2, "batch_size, grad_accum and epochs must be >= 1"),
    (["trainer.grad_accum=0"], 2, "batch_size, grad_accum and epochs must be >= 1"),
    (["trainer.epochs=0"], 2, "batch_size, grad_accum and epochs must be >= 1"),
    (["trainer.max_steps=0"], 2, "trainer.max_steps must be >= 1 or null"),
    (["trainer.max_steps=-1"], 2, "trainer.max_steps must be >= 1 or null"),
    (["+trainer.lrr=1"], 2, "trainer has no option lrr; it takes batch_size"),
    (["trainer.lr=fast"], 2, "trainer.lr must be float, not 'fast'"),
    (["trainer.precision=fp16"], 2, "trainer.precision must be auto, bf16 or fp32"),
    (["trainer.select=best"], 2, "trainer.select must be best_dev or final"),
    (["method.r=two"], 2, "method lora.r must be int, not 'two'"),
    (["method.r=0"], 2, "rank"),
    (["method.targets=qk"], 2, "must be a list such as"),
    (["method.targets=[qq]"], 2, "unknown weight roles"),
    (["+method.rank=3"], 2, "method lora has no option rank"),
    (["method=full", "+method.r=3"], 2, "method full has no option r; it takes none"),
    (["method=discrete_prompt", "method.candidates=abc"], 2, "discrete_prompt.candidates must be a list of prompts"),
    (["method=nosuch"], 1, "Could not find 'method/nosuch'"),
    (["method=prefix", "method.num_virtual_tokens=0"], 2, "num_virtual_tokens >= 1"),
    (["method=prefix", "method.num_virtual_tokens=5000"], 2, "exceed the model's context of 1024 positions"),
    (["task.decode.num_beams=0"], 2, "num_beams >= 1"),
    (["task.decode.num_beams=1.5"], 2, "task.decode.num_beams must be int, not 1.5"),
    (["task.decode.min_new_tokens=100"], 2, "min_new_tokens=100 > max_new_tokens=8"),
    (["+task.decode.beams=2"], 2, "task.decode has no option beams"),
    (["task.max_eval_examples=abc"], 2, "task.max_eval_examples must be a positive integer or null"),
    (["task.max_train_examples=0"], 2, "task.max_train_examples must be a positive integer or null"),
    (["task.max_source_tokens=-3"], 2, "task.max_source_tokens must be a positive integer or null"),
    (["task=nosuch"], 1, "Could not find 'task/nosuch'"),
    (["task.low_data={size: 7, subset: 0}"], 2, "has no subset 0 of size 7"),
    (["seed=abc"], 2, "seed must be int, not 'abc'"),
    (["threads=abc"], 2, "threads must be int or null"),
    (["threads=0"], 2, "threads must be >= 1"),
    (["record_samples=abc"], 2, "record_samples must be int"),
    (["resume=maybe"], 2, "resume must be bool, not 'maybe'"),
    (["lr_search={grid: [abc]}"], 2, "lr_search.grid must be a list of positive learning rates"),
    (["lr_search={grid: [0.001], extend: -1}"], 2, "lr_search.extend must be a non-negative integer"),
    (["+experiment=nosuch"], 1, "Could not find 'experiment/nosuch'"),
    (["model=nosuch"], 1, "Could not find 'model/nosuch'"),
    (["model.source=hub"], 2, "model.source must be smollm2_wheel, pretrained or random, not 'hub'"),
    (["model.config.hidden_size=30"], 2, "model.config cannot build a llama model"),
    (["model.source=pretrained", "+model.path=/nonexistent/model"], 2, "model.path /nonexistent/model does not load"),
    (["data_root=/nonexistent/data"], 2, "E2E train split not found: /nonexistent/data/e2e/trainset.csv"),
    (["trainer.lr=0"], 2, "trainer.lr must be a positive learning rate, not 0"),
    (["trainer.lr=-1e-3"], 2, "trainer.lr must be a positive learning rate, not -0.001"),
    (["trainer.lr=1e-4", "lr_search={grid: [0.001]}"], 2, "add lr_search=null to train at 1e-4, or drop trainer.lr"),
    (["trainer.lr=inf"], 3, "error: training diverged at step 2"),
]

# broken copies of the E2E training file: (name, content, message)
DATA_CASES = [
    ("truncated", 'mr,ref\n"name[A]",Good.\n"name[B], food[Th', "trainset.csv:3: the file ends in the middle of a line"),
    ("columns", "meaning,text\na,b\n", "expected columns mr,ref"),
    ("empty_field", 'mr,ref\n"name[A]",Good.\n"name[B]",\n', "trainset.csv:3: expected 2 fields with mr, ref filled"),
    ("missing_field", 'mr,ref\n"name[A]",Good.\n"name[B]"\n', "trainset.csv:3: expected 2 fields with mr, ref filled"),
]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@needs_data("e2e", "trainset.csv")
def test_bad_input_corpus_gives_clear_errors_and_changes_no_record(tmp_path: Path):
    results = tmp_path / "results"
    base = ["+scale=smoke", "logger=none", "task.test_metrics=[BLEU]", f"results_dir={results}"]
    [(code, err)] = run_cli_cases([[*base, f"hydra.run.dir={tmp_path}/run-ok"]])
    assert code == 0, err[-3000:]
    assert run_cli_cases([["report", "--results-dir", str(results), "--scale", "smoke"]])[0][0] == 0
    before = snapshot(results)

    cases = [(args, code, message) for args, code, message in CONFIG_CASES]
    for name, content, message in DATA_CASES:
        root = tmp_path / f"data-{name}"
        (root / "e2e").mkdir(parents=True)
        for split in ("devset.csv", "testset_w_refs.csv"):
            (root / "e2e" / split).symlink_to(DATA / "e2e" / split)
        (root / "e2e" / "trainset.csv").write_text(content)
        cases.append(([f"data_root={root}"], 2, message))
    broken = tmp_path / "broken"  # a cut record where a sweep looks for finished runs
    shutil.copytree(results, broken)
    next((broken / "runs" / "adhoc" / "smoke").glob("*.json")).write_text('{"status": "ok", "conf')
    (broken / "runs" / "e2e_main" / "smoke").mkdir(parents=True)  # and one where the tables read
    (broken / "runs" / "e2e_main" / "smoke" / "cut.json").write_text('{"status": "ok", "conf')
    cases.append(([f"results_dir={broken}", "seed=1"], 2, "malformed record"))
    # a rerun (resume=false) that fails keeps the record it would replace
    cases.append((["resume=false", "data_root=/nonexistent/data"], 2, "E2E train split not found"))
    a_file = tmp_path / "a_file"  # where a folder should be
    a_file.write_text("")
    cases.append(([f"results_dir={a_file}"], 2, f"(PEFT_REPRO_RESULTS or results_dir=...) {a_file} is a file"))
    empty = tmp_path / "empty"
    empty.mkdir()
    report_cases = [
        (["report", "--results-dir", str(empty)], 2, "error: no run records under"),
        (["report", "--results-dir", str(tmp_path / "mistyped")], 2, "error: no run records under"),
        (["report", "--results-dir", str(results), "--scale", "nosuch"], 2, "error: no run records under"),
        (["report", "--results-dir", str(broken), "--scale", "smoke"], 2, "error: malformed record"),
        (["report", "--results-dir", str(results), "--scale", "smoke", "--out", str(a_file)], 2,
         f"error: --out {a_file} is a file, not a folder"),
    ]
    argv = [[*base, *args, f"hydra.run.dir={tmp_path}/run-{i}"] for i, (args, _, _) in enumerate(cases)]
    answers = run_cli_cases(argv + [args for args, _, _ in report_cases])
    assert len(cases) + len(report_cases) >= 58  # README: "The corpus holds 58 such cases"
    for (args, code, message), (got_code, err) in zip(cases + report_cases, answers):
        assert "Traceback" not in err, (args, err[-3000:])
        assert got_code == code and message in err, (args, got_code, err[-1500:])
        if got_code == 2:  # ours: exactly one error line
            assert sum(line.startswith("error: ") for line in err.splitlines()) == 1, (args, err[-1500:])

    after = snapshot(results)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing there before was touched
    new = sorted(set(after) - set(before))
    assert len(new) == 1 and "lr=inf" in new[0]  # only the diverged run's own record
    assert [r["status"] for r in load_records(results, "adhoc", "smoke")].count("diverged") == 1
    assert not list(results.rglob("*.lock")) and not list(results.rglob("*.tmp-*"))


def _run_until(args: list[str], ready, timeout: float = 300):
    """Start `python -m peft_repro ARGS`, poll `ready()` and kill -9 the run the moment it holds."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "peft_repro", *args, "threads=1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not ready(proc.pid):
        assert proc.poll() is None, f"the run ended before the moment to kill it: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@needs_data("e2e", "trainset.csv")
def test_runs_killed_in_training_or_in_scoring_resume_to_the_uninterrupted_result(tmp_path: Path):
    """kill -9 (1) while the Java scorer runs, after training, with (2) a record write cut short (its temp file left):
    the rerun only evaluates, so its record is that of an uninterrupted training; (3) in training, after a
    checkpoint: the rerun continues and ends with that same record."""
    import json
    import tempfile

    import torch

    from .conftest import run_main

    args = ["+scale=smoke", "logger=none", "trainer.max_steps=16", "trainer.epochs=4", "checkpoint_every_steps=2",
            "task.max_dev_examples=2", "zero_shot=false", f"results_dir={tmp_path}"]
    folder = tmp_path / "runs" / "adhoc" / "smoke"

    def scoring(pid):  # the scorer's temp folder of this run exists: it is in the Java scoring
        pids.append(pid)
        return any(Path(tempfile.gettempdir()).glob(f"peft-repro-e2e-{pid}-*"))

    pids = []
    _run_until([*args, f"hydra.run.dir={tmp_path}/run-1"], scoring)
    assert any(Path(tempfile.gettempdir()).glob(f"peft-repro-e2e-{pids[0]}-*"))  # left by the kill
    (folder / f".cell.json.tmp-{pids[0]}").write_text('{"status": "ok", "te')  # a record write cut short
    rerun = run_main(*args, f"hydra.run.dir={tmp_path}/run-2")
    assert rerun.returncode == 0 and "resuming from" in rerun.stdout + rerun.stderr, rerun.stderr[-3000:]
    [expected] = load_records(tmp_path, "adhoc", "smoke")
    assert expected["steps"] == 16 and set(expected["test"]) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}
    assert not any(Path(tempfile.gettempdir()).glob(f"peft-repro-e2e-{pids[0]}-*"))  # cleaned by the next scorer
    assert not list(folder.glob("*.resume.pt"))  # removed once the record is written

    [path] = folder.glob("*.json")
    path.unlink()

    def in_training(pid):
        files = list(folder.glob("*.resume.pt"))
        return bool(files) and torch.load(files[0], weights_only=False)["step"] in range(4, 13)

    _run_until([*args, f"hydra.run.dir={tmp_path}/run-3"], in_training)
    assert not list(folder.glob("*.json"))
    rerun = run_main(*args, f"hydra.run.dir={tmp_path}/run-4")
    assert rerun.returncode == 0 and "resuming from" in rerun.stdout + rerun.stderr, rerun.stderr[-3000:]
    [record] = load_records(tmp_path, "adhoc", "smoke")
    assert (record["test"], record["dev"], record["history"]) == (expected["test"], expected["dev"],
                                                                  expected["history"])
    assert json.loads(path.read_text())["status"] == "ok"


@needs_data("e2e", "trainset.csv")
def test_two_identical_sweeps_started_together_train_each_cell_once(tmp_path: Path):
    import subprocess
    import sys

    args = ["+experiment=e2e_main", "scale=smoke", "method=full,lora", "seed=0,1,2", "task.test_metrics=[BLEU]",
            "zero_shot=false", f"results_dir={tmp_path}", "threads=1"]
    procs = [subprocess.Popen([sys.executable, "-m", "peft_repro", *args, f"hydra.sweep.dir={tmp_path}/sweep-{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    folder = tmp_path / "runs" / "e2e_main" / "smoke"
    assert len(list(folder.glob("*.json"))) == 6 and not list(folder.glob("*superseded*"))  # 2 methods x 3 seeds
    logs = "".join(o[0] + o[1] for o in outs)
    assert logs.count("trainable parameters") == 6  # each cell trained once, by one of the two
    assert logs.count("already done") == 6  # the other found it done, at once or after waiting for it
    assert all("table written" in o[0] for o in outs)
    assert not list(folder.glob("*.lock"))


def test_the_end_of_sweep_table_fails_the_sweep_on_a_cut_record(tmp_path: Path, capsys):
    """Hydra turns a callback's exception into a warning (exit 0): the callback exits 2 itself."""
    from omegaconf import OmegaConf

    from peft_repro.report import TableCallback

    folder = tmp_path / "runs" / "e2e_main" / "smoke"
    folder.mkdir(parents=True)
    (folder / "cut.json").write_text('{"status": "ok", "conf')
    config = OmegaConf.create({"experiment": "e2e_main", "results_dir": str(tmp_path), "scale_name": "smoke"})
    with pytest.raises(SystemExit) as exit_info:
        TableCallback().on_multirun_end(config)
    assert exit_info.value.code == 2 and "error: no table written: malformed record" in capsys.readouterr().err


def test_a_model_cache_that_does_not_load_is_converted_again(tmp_path: Path, monkeypatch):
    import peft_repro.models as models
    from peft_repro.models import load_model

    cache = tmp_path / "cache" / "SmolLM2"
    cache.mkdir(parents=True)
    (cache / "model.safetensors").write_bytes(b"cut")
    conversions, loads = [], []

    def convert(cache_dir):
        conversions.append(cache.exists())
        cache.mkdir(parents=True, exist_ok=True)
        return cache

    def load(path):
        loads.append(path)
        if len(loads) == 1:
            raise OSError("Error while deserializing header: incomplete metadata")
        return models._random_model("llama", {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
                                              "num_attention_heads": 2, "num_key_value_heads": 1}, 0), \
            models.byte_tokenizer()

    monkeypatch.setattr(models, "_converted_smollm2", convert)
    monkeypatch.setattr(models, "_load_pretrained", load)
    load_model(OmegaConf.create({"source": "smollm2_wheel", "cache_dir": str(tmp_path / "cache")}))
    assert conversions == [True, False] and len(loads) == 2  # the broken folder was removed, then converted again


def test_records_keep_no_machine_paths(tmp_path: Path):
    from peft_repro.paths import repo_root
    from peft_repro.results import portable_path

    assert portable_path(repo_root() / "multirun" / "x" / "0") == "multirun/x/0"
    assert portable_path(tmp_path / "elsewhere") is None


def test_records_name_the_commit_a_process_started_with(monkeypatch):
    """A sweep runs for hours from one checkout; a commit made meanwhile must not be named in its later records."""
    from peft_repro import results

    heads = iter(["aaaaaaaaaa", "bbbbbbbbbb"])
    calls = []

    def fake_git(args, **kwargs):
        calls.append(args)
        out = next(heads) if "rev-parse" in args else ""
        return type("Done", (), {"stdout": out})()

    results._git_state_at_first_call.cache_clear()
    monkeypatch.setattr(results.subprocess, "run", fake_git)
    try:
        first = results.git_state()
        first["dirty"] = True  # a caller changing its copy changes nothing for the next record
        assert results.git_state() == {"commit": "aaaaaaaaaa", "dirty": False}
        assert sum("rev-parse" in args for args in calls) == 1
    finally:
        results._git_state_at_first_call.cache_clear()
