"""Export a trained policy: a Hugging Face folder (merged weights) and, for LoRA, a PEFT adapter."""

from __future__ import annotations

import json
from pathlib import Path

from rft_jax.model.config import ModelConfig, config_to_hf
from rft_jax.model.lora import merge_lora, save_peft_adapter
from rft_jax.model.weights_hf import save_hf_params


def export_model(folder: str | Path, cfg: ModelConfig, params: dict, tokenizer, dtype: str = "float32") -> Path:
    """A Hugging Face model folder that transformers loads as it is, its weights in `dtype`
    (weights_hf.EXPORT_DTYPES). config.json names the dtype under both keys, `dtype` for transformers 5 and
    `torch_dtype` for older readers, so from_pretrained(dtype="auto") loads it in that dtype."""
    folder = Path(folder)
    save_hf_params(folder, cfg, params, dtype)
    hf_config = {**config_to_hf(cfg), "torch_dtype": dtype, "dtype": dtype}
    (folder / "config.json").write_text(json.dumps(hf_config, indent=1))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": list(tokenizer.eos_ids),
                                                               "pad_token_id": tokenizer.pad_id}))
    tokenizer.hf.save_pretrained(str(folder))
    return folder


def export_run(cfg, model_cfg: ModelConfig, base_params: dict, trainable: dict, tokenizer, folder: Path,
               base_origin: str = "") -> None:
    """`folder/model` (merged HF folder) and, for LoRA, `folder/adapter` (PEFT).

    `base_origin`: set when `base_params` are not `cfg.model.name`'s own weights but
    a policy the run started from (an `init_from` checkpoint merged into them, a warm
    start); it says which. The adapter only reproduces the policy on that base, so
    the base is written beside it as `folder/base` (with `origin.json`: the model it
    was trained from and `base_origin`) and the adapter names that folder.
    Everything is written in `cfg.export_dtype`.
    """
    dtype = cfg.export_dtype
    if cfg.mode == "lora":
        base_model = cfg.model.name
        if base_origin:
            base_model = str(export_model(folder / "base", model_cfg, base_params, tokenizer, dtype).absolute())
            (folder / "base" / "origin.json").write_text(json.dumps({"model": cfg.model.name,
                                                                    "started_from": base_origin}, indent=1))
        save_peft_adapter(folder / "adapter", model_cfg, trainable, cfg.lora, base_model=base_model, dtype=dtype)
        params = merge_lora(base_params, trainable, cfg.lora.scale)
    else:
        params = trainable
    export_model(folder / "model", model_cfg, params, tokenizer, dtype)
    print(f"[rft-jax] exported {folder / 'model'}" + (f" and {folder / 'adapter'}" if cfg.mode == "lora" else ""))
