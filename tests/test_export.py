"""PEFT export: our trained adapters, written by `peft_repro.export` and loaded by `PeftModel.from_pretrained` into a
fresh base model, give our logits on a left-padded batch."""
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from safetensors.torch import load_file

from peft_repro.export import export_from_checkpoint, export_peft, main as export_main
from peft_repro.methods import apply_method
from peft_repro.models import load_model

from .conftest import LOGIT_TOL, REPO, conf, max_diff_vs_peft, randomize, save_checkpoint, tiny_model

peft = pytest.importorskip("peft")


METHODS = {
    "lora_qv": {"name": "lora", "r": 4, "alpha": 8, "targets": ["q", "v"]},
    "lora_all": {"name": "lora", "r": 2, "alpha": 3, "dropout": 0.1, "targets": ["q", "k", "v", "o", "mlp"]},
    "prefix": {"name": "prefix", "num_virtual_tokens": 3},
    "prefix_mlp": {"name": "prefix", "num_virtual_tokens": 3, "projection": True, "mid_dim": 16},
    "embedding_only": {"name": "embedding_only", "num_virtual_tokens": 4},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_export_loads_in_peft_with_equal_logits(arch, tmp_path: Path, method):
    adapted = apply_method(tiny_model(arch), METHODS[method])
    randomize(adapted)
    export_peft(adapted, tmp_path)
    assert max_diff_vs_peft(adapted, tmp_path, tiny_model(arch)) <= LOGIT_TOL
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    if method == "prefix" and arch == "llama":  # GQA: 2 kv-heads of 8
        assert (config["token_dim"], config["num_attention_heads"]) == (16, 2)


def test_fused_gpt2_parts_become_one_block_diagonal_lora(tmp_path: Path):
    """q and v of c_attn: rank 2r with alpha 2*alpha (same scale), B zero on the k third."""
    adapted = apply_method(tiny_model("gpt2"), {"name": "lora", "r": 4, "alpha": 8, "targets": ["q", "v"]})
    randomize(adapted)
    export_peft(adapted, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    name = "transformer.h.0.attn.c_attn"
    assert config["rank_pattern"][name] == 8 and config["alpha_pattern"][name] == 16 and config["fan_in_fan_out"]
    B = load_file(str(tmp_path / "adapter_model.safetensors"))[f"base_model.model.{name}.lora_B.weight"]
    assert B.shape == (96, 8) and B[32:64].abs().sum() == 0


@pytest.mark.parametrize("method", ["lora_qv", "prefix_mlp", "embedding_only"])
def test_export_from_checkpoint(tmp_path: Path, method):
    """A run's trainable.safetensors -> the model rebuilt from conf/model/tiny_llama.yaml -> PEFT."""
    model_cfg = conf("model/tiny_llama.yaml")
    trained = apply_method(load_model(model_cfg)[0], METHODS[method])
    randomize(trained)
    save_checkpoint(trained, tmp_path / "run" / "trainable.safetensors")
    out = export_from_checkpoint(model_cfg, METHODS[method], tmp_path / "run" / "trainable.safetensors",
                                 tmp_path / "peft")
    assert max_diff_vs_peft(trained, out, load_model(model_cfg)[0]) <= LOGIT_TOL


def test_cli_exports_a_run_dir(tmp_path: Path):
    """`python -m peft_repro.export RUN_DIR OUT_DIR` reads the run's Hydra config beside its checkpoint (composed,
    interpolations kept, as Hydra saves it: conf/method/prefix_mlp.yaml builds on prefix.yaml)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=tiny_llama", "method=prefix_mlp"])
    run_dir = tmp_path / "run"
    trained = apply_method(load_model(cfg.model)[0], OmegaConf.to_container(cfg.method, resolve=True))
    assert trained.prefix.projection and trained.num_virtual_tokens == 10
    randomize(trained)
    save_checkpoint(trained, run_dir / "trainable.safetensors")
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    export_main([str(run_dir), str(tmp_path / "peft")])
    assert max_diff_vs_peft(trained, tmp_path / "peft", load_model(cfg.model)[0]) <= LOGIT_TOL


def test_unsupported_methods_are_clear_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="no PEFT export for method 'infix'"):
        export_peft(apply_method(tiny_model("llama"), {"name": "infix", "num_virtual_tokens": 2}), tmp_path)
