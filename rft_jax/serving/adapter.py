"""Reading a PEFT-style LoRA folder into the model's LoRA pytree.

A PEFT folder holds `adapter_config.json` (r, lora_alpha, target_modules) and
`adapter_model.safetensors` with keys such as
`base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` ([r, in]) and
`...lora_B.weight` ([out, r]). The forward wants `{"layers": {"q": {"a":
[L, D, R], "b": [L, R, out]}}}` and `lora_scale = alpha / r`; layers an adapter
leaves out get zeros, which is the same function.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from rft_jax.model.config import ModelConfig
from rft_jax.model.lora import check_targets
from rft_jax.model.params import projection_shapes

HF_MODULES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
              "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}
_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])(?:\.\w+)?\.weight$")


class AdapterError(ValueError):
    """An adapter folder that does not fit the model or uses a LoRA variant we cannot run."""


def lora_scale_of(config: dict) -> float:
    """alpha / r, or alpha / sqrt(r) for rsLoRA."""
    r, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def parse_adapter_tensors(tensors: dict[str, np.ndarray]) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """projection -> layer index -> {"A": [r, in], "B": [out, r]} from PEFT tensor names."""
    found: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for name, value in tensors.items():
        match = _KEY.search(name)
        if match is None:
            raise AdapterError(f"adapter tensor {name!r} is not a LoRA A/B weight of a decoder-layer projection "
                               "(embedding or lm_head adapters are not supported)")
        layer, module, which = int(match.group(1)), match.group(2), match.group(3)
        if module not in HF_MODULES:
            raise AdapterError(f"adapter targets {module!r}; supported: {', '.join(HF_MODULES)}")
        found.setdefault(HF_MODULES[module], {}).setdefault(layer, {})[which] = value
    return found


def stack_lora(cfg: ModelConfig, found: dict[str, dict[int, dict[str, np.ndarray]]], dtype=jnp.float32) -> dict:
    """The stacked LoRA pytree, every shape checked against the model."""
    try:
        check_targets(cfg, tuple(found))  # a mixture of experts: attention adapters only
    except ValueError as err:
        raise AdapterError(str(err)) from None
    shapes = projection_shapes(cfg)
    layers = {}
    for proj, by_layer in found.items():
        n_in, n_out = shapes[proj]
        rank = next(iter(by_layer.values()))["A"].shape[0] if by_layer else 0
        a = np.zeros((cfg.num_layers, n_in, rank), np.float32)
        b = np.zeros((cfg.num_layers, rank, n_out), np.float32)
        for i, pair in by_layer.items():
            if i >= cfg.num_layers or set(pair) != {"A", "B"}:
                raise AdapterError(f"adapter {proj} layer {i}: needs lora_A and lora_B within {cfg.num_layers} layers")
            if pair["A"].shape != (rank, n_in) or pair["B"].shape != (n_out, rank):
                raise AdapterError(f"adapter {proj} layer {i}: A {pair['A'].shape}, B {pair['B'].shape}; the model "
                                   f"expects A [{rank}, {n_in}] and B [{n_out}, {rank}]")
            a[i], b[i] = pair["A"].T, pair["B"].T
        layers[proj] = {"a": jnp.asarray(a, dtype), "b": jnp.asarray(b, dtype)}
    return {"layers": layers}


def load_adapter(folder: str | Path, cfg: ModelConfig, dtype=jnp.float32) -> tuple[dict, float]:
    """(lora pytree, lora_scale) of a PEFT LoRA folder."""
    from safetensors.numpy import load_file  # noqa: PLC0415

    folder = Path(folder)
    config_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise AdapterError(f"{folder}: a LoRA adapter folder needs adapter_config.json and adapter_model.safetensors")
    config = json.loads(config_path.read_text())
    if config.get("use_dora"):
        raise AdapterError(f"{folder}: DoRA adapters are not supported; merge the adapter into the model instead")
    tensors = {k: v.astype(np.float32) for k, v in load_file(str(weights_path)).items()}
    return stack_lora(cfg, parse_adapter_tensors(tensors), dtype), lora_scale_of(config)
