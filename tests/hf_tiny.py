"""Tiny random transformers checkpoints (Llama, Qwen2, Qwen3) written with save_pretrained."""

from __future__ import annotations

from pathlib import Path

COMMON = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5)


def make_tiny(kind: str, folder: Path, *, tie: bool = False, rope_scaling: dict | None = None, seed: int = 0):
    """Saves a random tiny model of `kind` (llama | qwen2 | qwen3) and returns the torch model."""
    import torch
    import transformers

    torch.manual_seed(seed)
    extra = {"rope_scaling": rope_scaling} if rope_scaling else {}
    if kind == "llama":
        cfg = transformers.LlamaConfig(**COMMON, tie_word_embeddings=tie, rope_theta=10000.0, **extra)
        model = transformers.LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        cfg = transformers.Qwen2Config(**COMMON, tie_word_embeddings=tie, rope_theta=1e6, **extra)
        model = transformers.Qwen2ForCausalLM(cfg)
    elif kind == "qwen3":
        cfg = transformers.Qwen3Config(**COMMON, head_dim=24, tie_word_embeddings=tie, rope_theta=1e6, **extra)
        model = transformers.Qwen3ForCausalLM(cfg)
    else:
        raise ValueError(kind)
    with torch.no_grad():  # random norms and biases, so a wrong mapping cannot hide behind ones/zeros
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(folder)
    return model
