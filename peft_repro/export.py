"""Export trained adapters in HF PEFT's format (``adapter_config.json`` + ``adapter_model.safetensors``), so that
``PeftModel.from_pretrained(base_model, out_dir)`` gives the same logits as ours. PEFT itself is not needed here.

  * LoRA -> PEFT LoRA. A module with one (A, B) pair maps directly (``lora_A.weight`` (r, d_in), ``lora_B.weight``
    (d_out, r)). GPT-2's fused ``c_attn`` with n adapted thirds becomes one LoRA of rank n*r: A stacks the n A's, B is
    block-diagonal (each third's rows see only its own A; thirds that are not adapted get zero rows), and
    ``alpha_pattern`` sets alpha n*alpha there so the scale stays alpha/r. The outputs are exact (dropout too, as
    both apply one dropout mask to the shared input); only further training in PEFT could fill the zero blocks.
  * prefix-tuning -> PEFT prefix tuning with ``prefix_projection=False``: ``prompt_embeddings`` (k, n_layers*2*kv_dim)
    is the projected prefix, whose per-token layout [layer, key/value, kv-head, head_dim] is PEFT's. Under GQA PEFT
    sizes the prefix by the kv-heads: ``token_dim`` = kv_dim and ``num_attention_heads`` = kv-heads.
  * embedding-only -> PEFT prompt tuning: ``prompt_embeddings`` (k, hidden size), the embeddings the forward uses
    (with ``reparam=mlp`` the MLP's output, so the MLP is not needed to load it).

Decoder-only models only (PEFT's CAUSAL_LM). PEFT gives the virtual tokens positions 0..k-1 as we do; with left
padding pass ``position_ids`` (real tokens counted from 0) to the PEFT prefix model, which offsets them by k.

CLI: ``python -m peft_repro.export RUN_DIR_OR_CHECKPOINT OUT_DIR`` (a run dir holds ``trainable.safetensors`` and
Hydra's ``.hydra/config.yaml``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .methods import apply_method
from .methods.lora import LoRALayer
from .methods.prefix import PrefixAdapted, hidden_size

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"


def _base_name(model) -> str | None:
    return getattr(model.config, "_name_or_path", None) or None  # random models have ""


def lora_export(adapted) -> tuple[dict, dict]:
    model = adapted.model
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALayer)]
    first = layers[0][1]
    r, dropout = first.lora_A.shape[1], first.dropout.p if isinstance(first.dropout, torch.nn.Dropout) else 0.0
    alpha = first.scale * r
    weights, rank_pattern, alpha_pattern = {}, {}, {}
    for name, layer in layers:
        A, B = layer.lora_A.detach(), layer.lora_B.detach()
        if layer.parts != [None]:  # fused q/k/v: one rank-n*r LoRA with a block-diagonal B (module docstring)
            n = len(layer.parts)
            block = torch.zeros(3, layer.part_size, n * r, dtype=B.dtype, device=B.device)
            for i, part in enumerate(layer.parts):
                block[part, :, i * r:(i + 1) * r] = B[i]
            A, B = A.reshape(1, n * r, -1), block.reshape(1, 3 * layer.part_size, n * r)
            rank_pattern[name], alpha_pattern[name] = n * r, n * alpha
        key = f"base_model.model.{name}"
        weights[f"{key}.lora_A.weight"] = A[0].contiguous()
        weights[f"{key}.lora_B.weight"] = B[0].contiguous()
    # full module names: a leaf name can be ambiguous (GPT-2's c_proj is both attn.c_proj (o) and mlp.c_proj)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": _base_name(model),
        "r": r, "lora_alpha": alpha, "lora_dropout": dropout, "target_modules": [name for name, _ in layers],
        "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern, "bias": "none", "use_rslora": False,
        "fan_in_fan_out": first.conv1d,  # transformers' Conv1D stores (d_in, d_out)
        "inference_mode": True,
    }
    return config, weights


def prefix_export(adapted: PrefixAdapted) -> tuple[dict, dict]:
    kv = adapted.export_prefix()  # (L, 2, k, kv_heads, head_dim): projected, no dropout
    n_layers, _, k, kv_heads, head_dim = kv.shape
    config = {
        "peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "base_model_name_or_path": _base_name(adapted.model),
        "num_virtual_tokens": k, "num_layers": n_layers, "token_dim": kv_heads * head_dim,
        "num_attention_heads": kv_heads, "num_transformer_submodules": 1, "prefix_projection": False,
        "inference_mode": True,
    }
    return config, {"prompt_embeddings": kv.permute(2, 0, 1, 3, 4).reshape(k, -1).contiguous()}


def embedding_only_export(adapted) -> tuple[dict, dict]:
    emb = adapted.virtual_embeddings().detach()
    config = {
        "peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "base_model_name_or_path": _base_name(adapted.model),
        "num_virtual_tokens": emb.shape[0], "token_dim": hidden_size(adapted.config),
        "num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM", "inference_mode": True,
    }
    return config, {"prompt_embeddings": emb.contiguous()}


EXPORTERS = {"lora": lora_export, "prefix": prefix_export, "embedding_only": embedding_only_export}


def export_peft(adapted, out_dir) -> Path:
    """Write `adapted` as a PEFT adapter folder; returns the folder."""
    if adapted.method not in EXPORTERS or adapted.config.is_encoder_decoder:
        raise ValueError(f"no PEFT export for method {adapted.method!r} on {adapted.config.model_type}: "
                         f"supported are {sorted(EXPORTERS)} on decoder-only models")
    from safetensors.torch import save_file

    config, weights = EXPORTERS[adapted.method](adapted)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.float().cpu() for k, v in weights.items()}, str(out / WEIGHTS_FILE))
    return out


def export_from_checkpoint(model_cfg, method_cfg, checkpoint_path, out_dir) -> Path:
    """Rebuild the adapted model (`model_cfg`: a conf/model mapping; `method_cfg`: a conf/method mapping), load a
    run's `trainable.safetensors` into it and export it."""
    from safetensors.torch import load_file

    from .models import load_model

    model, _ = load_model(OmegaConf.create(dict(model_cfg)) if isinstance(model_cfg, dict) else model_cfg)
    method_cfg = OmegaConf.to_container(method_cfg, resolve=True) if OmegaConf.is_config(method_cfg) \
        else dict(method_cfg)
    adapted = apply_method(model, method_cfg)
    adapted.load_trainable_state_dict(load_file(str(checkpoint_path)))
    return export_peft(adapted, out_dir)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: python -m peft_repro.export RUN_DIR_OR_CHECKPOINT OUT_DIR")
    source = Path(argv[0])
    checkpoint = source / "trainable.safetensors" if source.is_dir() else source
    cfg = OmegaConf.load(checkpoint.parent / ".hydra" / "config.yaml")
    print(export_from_checkpoint(cfg.model, cfg.method, checkpoint, argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
