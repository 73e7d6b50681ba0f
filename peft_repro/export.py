"""Export trained adapters in HF PEFT's format (``adapter_config.json`` + ``adapter_model.safetensors``), so that
``PeftModel.from_pretrained(base_model, out_dir)`` gives the same logits as ours. PEFT itself is not needed here.

Each method writes its own part (`Adapted.peft_type` and `peft_export`, in peft_repro/methods/):
  * LoRA -> PEFT LoRA (`lora.LoRAAdapted`); GPT-2's fused ``c_attn`` becomes one LoRA of rank n*r per module with a
    block-diagonal B (`lora.LoRALayer.peft_weights`).
  * prefix-tuning -> PEFT prefix tuning with ``prefix_projection=False`` (`prefix.PrefixAdapted`): the projected
    prefix, so the MLP is not needed to load it.
  * embedding-only -> PEFT prompt tuning (`embedding_only.EmbeddingOnlyAdapted`): the embeddings the forward uses.

Decoder-only models only (PEFT's CAUSAL_LM). PEFT gives the virtual tokens positions 0..k-1 as we do; with left
padding pass ``position_ids`` (real tokens counted from 0) to the PEFT prefix model, which offsets them by k.

CLI: ``python -m peft_repro.export RUN_DIR_OR_CHECKPOINT OUT_DIR`` (a run dir holds ``trainable.safetensors`` and
Hydra's ``.hydra/config.yaml``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from .methods import Adapted, apply_method

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"


def exportable_methods(cls=Adapted) -> set[str]:
    """The methods with a PEFT counterpart: those whose Adapted class sets `peft_type`."""
    names = set()
    for sub in cls.__subclasses__():
        names |= ({sub.method} if sub.peft_type else set()) | exportable_methods(sub)
    return names


def export_peft(adapted, out_dir) -> Path:
    """Write `adapted` as a PEFT adapter folder; returns the folder."""
    if adapted.peft_type is None or adapted.config.is_encoder_decoder:
        raise ValueError(f"no PEFT export for method {adapted.method!r} on {adapted.config.model_type}: "
                         f"supported are {sorted(exportable_methods())} on decoder-only models")
    from safetensors.torch import save_file

    own, weights = adapted.peft_export()
    config = {"peft_type": adapted.peft_type, "task_type": "CAUSAL_LM",
              "base_model_name_or_path": getattr(adapted.config, "_name_or_path", None) or None,  # random models: ""
              **own, "inference_mode": True}
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

    model, tokenizer = load_model(OmegaConf.create(dict(model_cfg)) if isinstance(model_cfg, dict) else model_cfg)
    method_cfg = OmegaConf.to_container(method_cfg, resolve=True) if OmegaConf.is_config(method_cfg) \
        else dict(method_cfg)
    adapted = apply_method(model, method_cfg, tokenizer)
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
