import os
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
