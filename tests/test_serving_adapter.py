"""Reading a PEFT LoRA folder: the same function as the model with the adapter applied by hand."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from rft_jax.model import init_params, sequence_forward
from rft_jax.model.config import ModelConfig
from rft_jax.serving.adapter import AdapterError, load_adapter

CFG = ModelConfig(vocab_size=96, hidden_size=64, intermediate_size=112, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=16, tie_embeddings=False, max_position_embeddings=256)


def write_peft(folder, tensors, r=4, alpha=8, **extra):
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": alpha, "peft_type": "LORA",
                                                            "target_modules": ["q_proj", "down_proj"], **extra}))
    save_file(tensors, str(folder / "adapter_model.safetensors"))


def test_peft_adapter_equals_merged_weights(tmp_path):
    rng = np.random.default_rng(0)
    r = 4
    tensors = {}
    for i in range(CFG.num_layers):
        for module, (n_in, n_out) in {"self_attn.q_proj": (64, 64), "mlp.down_proj": (112, 64)}.items():
            prefix = f"base_model.model.model.layers.{i}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.normal(size=(r, n_in)).astype(np.float32) * 0.1
            tensors[f"{prefix}.lora_B.weight"] = rng.normal(size=(n_out, r)).astype(np.float32) * 0.1
    write_peft(tmp_path / "a", tensors, r=r, alpha=8)
    lora, scale = load_adapter(tmp_path / "a", CFG)
    assert scale == 2.0 and set(lora["layers"]) == {"q", "down"}

    params = init_params(CFG, jax.random.PRNGKey(0), std=0.2)
    merged = jax.tree.map(lambda x: x, params)
    for name, module in {"q": "self_attn.q_proj", "down": "mlp.down_proj"}.items():
        delta = np.stack([(tensors[f"base_model.model.model.layers.{i}.{module}.lora_B.weight"]
                           @ tensors[f"base_model.model.model.layers.{i}.{module}.lora_A.weight"]).T
                          for i in range(CFG.num_layers)])
        merged["layers"][name] = {"w": params["layers"][name]["w"] + scale * delta}
    tokens = jnp.array([[3, 14, 15, 92, 65]])
    mask = jnp.ones_like(tokens, bool)
    with_lora, _ = sequence_forward(params, CFG, tokens, mask, lora=lora, lora_scale=scale)
    by_merge, _ = sequence_forward(merged, CFG, tokens, mask)
    np.testing.assert_allclose(with_lora, by_merge, atol=2e-4)


def test_bad_adapters_are_named(tmp_path):
    write_peft(tmp_path / "lm", {"base_model.model.lm_head.lora_A.weight": np.zeros((4, 64), np.float32)})
    with pytest.raises(AdapterError, match="lm_head"):
        load_adapter(tmp_path / "lm", CFG)
    write_peft(tmp_path / "shape", {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((4, 32), np.float32),
                                    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((64, 4), np.float32)})
    with pytest.raises(AdapterError, match="expects"):
        load_adapter(tmp_path / "shape", CFG)
    with pytest.raises(AdapterError, match="adapter_config.json"):
        load_adapter(tmp_path / "missing", CFG)
