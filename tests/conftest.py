import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from peft_repro.models import _random_model, byte_tokenizer, repo_root

REPO = repo_root()
SHARED = Path(os.environ.get("PEFT_REPRO_SHARED", REPO.parent / "shared"))
DATA = Path(os.environ.get("PEFT_REPRO_DATA_ROOT", SHARED / "data"))

# tiny models whose random weights are large enough that outputs differ between tokens (std 0.02 gives flat logits)
TINY = {
    "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
                  initializer_range=0.2),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=256, initializer_range=0.2),
}


@pytest.fixture(params=["llama", "gpt2"])
def arch(request):
    return request.param


def tiny_model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    model = _random_model(arch, dict(TINY[arch]), seed)
    model.eval()
    return model


@pytest.fixture
def tokenizer():
    return byte_tokenizer()


def conf(path: str):
    return OmegaConf.load(REPO / "conf" / path)


def needs_data(*parts):
    path = DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"data not found: {path} (set PEFT_REPRO_DATA_ROOT)")


# pytest -n 2 runs two workers on two cores: one torch thread each, or OpenMP spinning makes both 10x slower
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["PEFT_REPRO_SUBPROCESS_THREADS"] = "1"


def run_main(*args, env_extra=None, timeout=600):
    """`python -m peft_repro ARGS` in a subprocess (one torch thread under pytest -n)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    threads = os.environ.get("PEFT_REPRO_SUBPROCESS_THREADS")
    if threads:
        args = (*args, f"threads={threads}")
    return subprocess.run([sys.executable, "-m", "peft_repro", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


CLI_DRIVER = """
import contextlib, io, json, sys, traceback
from hydra.core.global_hydra import GlobalHydra
from peft_repro.__main__ import main
from peft_repro import tables
answers = []
for args in json.load(sys.stdin):
    GlobalHydra.instance().clear()
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err):
        try:
            if args[:1] == ["tables"]:
                code = tables.main(args[1:])
            else:
                sys.argv = ["peft_repro", *args]
                main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:  # what a user must never see: kept whole for the assertion message
            err.write("Traceback (most recent call last):\\n" + traceback.format_exc())
            code = 1
    answers.append([code, err.getvalue()])
print("ANSWERS " + json.dumps(answers))
"""


def run_cli_cases(cases: list[list[str]], env_extra=None, timeout=900) -> list[tuple[int, str]]:
    """(exit code, stderr) of `python -m peft_repro ARGS` for each ARGS (`["tables", ...]`: the tables CLI), all in
    one Python process: the imports are paid once, not per case."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0", **(env_extra or {}))
    out = subprocess.run([sys.executable, "-c", CLI_DRIVER], cwd=REPO, env=env, input=json.dumps(cases),
                         capture_output=True, text=True, timeout=timeout)
    line = next((l for l in out.stdout.splitlines() if l.startswith("ANSWERS ")), None)
    assert line, out.stderr[-3000:]
    return [tuple(a) for a in json.loads(line[len("ANSWERS "):])]
