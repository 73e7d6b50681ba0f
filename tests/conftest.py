import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from peft_repro.batching import left_pad, positions
from peft_repro.models import _random_model, byte_tokenizer
from peft_repro.paths import repo_root
from peft_repro.results import load_records
from peft_repro.tasks import EvalItem, Example, Task

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
from peft_repro.report.__main__ import main as report_main
answers = []
for args in json.load(sys.stdin):
    GlobalHydra.instance().clear()
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err):
        try:
            if args[:1] == ["report"]:
                code = report_main(args[1:])
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
    """(exit code, stderr) of `python -m peft_repro ARGS` for each ARGS (`["report", ...]`: the report CLI), all in
    one Python process: the imports are paid once, not per case."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0", **(env_extra or {}))
    out = subprocess.run([sys.executable, "-c", CLI_DRIVER], cwd=REPO, env=env, input=json.dumps(cases),
                         capture_output=True, text=True, timeout=timeout)
    line = next((l for l in out.stdout.splitlines() if l.startswith("ANSWERS ")), None)
    assert line, out.stderr[-3000:]
    return [tuple(a) for a in json.loads(line[len("ANSWERS "):])]


# ------------------------------------------------------------------ helpers shared by test modules

EOS, PAD = 2, 0  # the byte tokenizer's
LOGIT_TOL = 1e-5
SEQS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 200]]  # a left-padded batch of three lengths


class CopyTask(Task):
    """A toy generation task: the target repeats the source word."""
    kind, primary_metric = "generation", "exact"

    def __init__(self):
        super().__init__(OmegaConf.create({"stop_at_newline": False}))
        self.words = ["cat", "dog", "sun", "hat", "red", "map", "cup", "pen"]

    def train_examples(self):
        return [Example(f"{w}:", f" {w}") for w in self.words]

    def eval_items(self, split):
        return [EvalItem(f"{w}:", [w]) for w in self.words]

    def score(self, predictions, items, full=True):
        return {"exact": sum(p == it.references[0] for p, it in zip(predictions, items)) / len(items)}


class ConstantTask(CopyTask):
    """Every target is " ok": a frozen random model can learn it through a handful of virtual tokens."""

    def train_examples(self):
        return [Example(f"{w}:", " ok") for w in self.words]


def ids(batch=2, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 259, (batch, length), generator=g)


def greedy_reference(adapted, sources, steps):
    """Recompute the whole sequence at every step, no cache, one row at a time."""
    outs = []
    for src in sources:
        seq = list(src)
        for _ in range(steps):
            t = torch.tensor([seq])
            logits = adapted(t, torch.ones_like(t), source_lens=torch.tensor([len(src)])).logits[0, -1]
            seq.append(int(logits.argmax()))
            if seq[-1] == EOS:
                break
        gen = seq[len(src):]
        outs.append(gen[: gen.index(EOS)] if EOS in gen else gen)
    return outs


def randomize(adapted):
    """Move every trainable weight off its init (LoRA's B starts at zero)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in adapted.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)


def save_checkpoint(adapted, path: Path) -> None:
    """What the trainer writes: <run dir>/trainable.safetensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in adapted.trainable_state_dict().items()}, str(path))


def peft_logits(theirs, x, mask, k):
    """PEFT's logits of the real tokens. LoRA and prefix tuning take our position ids (PEFT offsets them by k for
    the prefix); prompt tuning drops position ids, so each row runs alone, unpadded (as tests/test_prefix.py)."""
    import peft

    if isinstance(theirs.active_peft_config, peft.PromptTuningConfig):
        rows = []
        for row, m in zip(x, mask):
            real = row[m.bool()][None]
            out = theirs(input_ids=real, attention_mask=torch.ones_like(real)).logits[0, k:]
            rows.append(torch.cat([out.new_zeros(len(row) - out.shape[0], out.shape[1]), out]))
        return torch.stack(rows)
    return theirs(input_ids=x, attention_mask=mask, position_ids=positions(mask)).logits


def max_diff_vs_peft(adapted, out_dir: Path, fresh_base) -> float:
    """Max |logit difference| over the real tokens of a left-padded batch, ours vs PEFT loading `out_dir`."""
    import peft

    theirs = peft.PeftModel.from_pretrained(fresh_base, out_dir).eval()
    adapted.eval()
    x, mask = left_pad(SEQS, PAD)
    with torch.no_grad():
        ours = adapted(x, mask).logits
        ref = peft_logits(theirs, x, mask, adapted.num_virtual_tokens)
    real = mask.bool()
    return (ours[real] - ref[real]).abs().max().item()


def our_rows(table: str) -> list[str]:
    """Our rows of an end-of-sweep table (not the papers', not zero-shot or majority class), in table order."""
    rows = [line for line in table.split("## Runs")[0].splitlines() if " | ours | " in line
            and not line.startswith(("| Zero-shot", "| Majority class"))]
    assert rows
    return rows


def runs_in_table(table: str) -> set[str]:
    """The records an end-of-sweep table places in its cells (the record names of its Runs list)."""
    lines = [line for line in table.split("## Runs")[1].splitlines() if line.startswith("| ")][1:]  # header aside
    return {line.rstrip(" |").rsplit(" | ", 1)[1] for line in lines}


def run_smoke(tmp_path: Path, experiment: str, extra: list[str]):
    args = [f"+experiment={experiment}", "scale=smoke", f"results_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path}/multirun", *extra]
    out = run_main(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    records = load_records(tmp_path, experiment, "smoke")
    assert records and all(r["status"] == "ok" for r in records)
    [table] = (tmp_path / "tables" / experiment).glob("*.md")
    return records, table.read_text()


def render_module():
    """scripts/render_notebooks.py as a module."""
    spec = importlib.util.spec_from_file_location("render_notebooks", REPO / "scripts" / "render_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

