"""Export a trained policy: a Hugging Face folder (merged weights) and, for LoRA, a PEFT adapter."""

from __future__ import annotations

import json
from pathlib import Path

from rft_jax.model.config import SUPPORTED_ARCHITECTURES, ModelConfig
from rft_jax.model.lora import merge_lora, save_peft_adapter
from rft_jax.model.weights_hf import save_hf_params


def config_to_hf(cfg: ModelConfig) -> dict:
    """The `config.json` transformers needs to load the exported weights."""
    out = {
        "architectures": [SUPPORTED_ARCHITECTURES[cfg.architecture]],
        "model_type": cfg.architecture,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    if cfg.architecture == "llama":
        out["attention_bias"] = cfg.qkv_bias
    if cfg.rope_scaling.kind != "default":
        rs = cfg.rope_scaling
        out["rope_scaling"] = {"rope_type": rs.kind, "factor": rs.factor, "low_freq_factor": rs.low_freq_factor,
                               "high_freq_factor": rs.high_freq_factor,
                               "original_max_position_embeddings": rs.original_max_position_embeddings}
    return out


def export_model(folder: str | Path, cfg: ModelConfig, params: dict, tokenizer) -> Path:
    folder = Path(folder)
    save_hf_params(folder, cfg, params)
    (folder / "config.json").write_text(json.dumps(config_to_hf(cfg), indent=1))
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
    """
    if cfg.mode == "lora":
        base_model = cfg.model.name
        if base_origin:
            base_model = str(export_model(folder / "base", model_cfg, base_params, tokenizer).absolute())
            (folder / "base" / "origin.json").write_text(json.dumps({"model": cfg.model.name,
                                                                    "started_from": base_origin}, indent=1))
        save_peft_adapter(folder / "adapter", model_cfg, trainable, cfg.lora, base_model=base_model)
        params = merge_lora(base_params, trainable, cfg.lora.scale)
    else:
        params = trainable
    export_model(folder / "model", model_cfg, params, tokenizer)
    print(f"[rft-jax] exported {folder / 'model'}" + (f" and {folder / 'adapter'}" if cfg.mode == "lora" else ""))
