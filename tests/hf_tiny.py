"""Tiny random transformers checkpoints (Llama, Qwen2, Qwen3, Mistral, Gemma 3, Qwen3-MoE, Mixtral) written with
save_pretrained."""

from __future__ import annotations

from pathlib import Path

COMMON = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5)


GEMMA3_LAYERS = ("sliding_attention", "full_attention", "sliding_attention")
MOE_EXPERTS = 4  # qwen3_moe and mixtral: E, with top 2


def _tiny_config(kind: str, tie: bool, extra: dict, sliding_window: int | None):
    """The transformers config of a tiny `kind`; windows small enough that a short test sequence crosses them."""
    import transformers

    if kind == "llama":
        return transformers.LlamaConfig(**COMMON, tie_word_embeddings=tie, rope_theta=10000.0, **extra)
    if kind == "qwen2":
        return transformers.Qwen2Config(**COMMON, tie_word_embeddings=tie, rope_theta=1e6, **extra)
    if kind == "qwen3":
        return transformers.Qwen3Config(**COMMON, head_dim=24, tie_word_embeddings=tie, rope_theta=1e6, **extra)
    if kind == "mistral":
        return transformers.MistralConfig(**COMMON, tie_word_embeddings=tie, rope_theta=1e6,
                                          sliding_window=sliding_window, **extra)
    if kind == "gemma3":  # both layer kinds, each RoPE base, a query scale other than head_dim's
        shapes = {**COMMON, "num_hidden_layers": len(GEMMA3_LAYERS), "rms_norm_eps": 1e-6}
        return transformers.Gemma3TextConfig(
            **shapes, head_dim=16, query_pre_attn_scalar=24, sliding_window=sliding_window or 4096,
            layer_types=list(GEMMA3_LAYERS), tie_word_embeddings=tie, rope_theta=1e6, rope_local_base_freq=1e4,
            hidden_activation="gelu_pytorch_tanh", **extra)
    if kind == "qwen3_moe":  # transformers' default norm_topk_prob=False; Mixtral covers the renormalised case
        return transformers.Qwen3MoeConfig(**COMMON, head_dim=24, tie_word_embeddings=tie, rope_theta=1e6,
                                           num_experts=MOE_EXPERTS, num_experts_per_tok=2, moe_intermediate_size=40,
                                           **extra)
    if kind == "mixtral":
        return transformers.MixtralConfig(**{**COMMON, "intermediate_size": 48}, tie_word_embeddings=tie,
                                          rope_theta=1e6, num_local_experts=MOE_EXPERTS, num_experts_per_tok=2,
                                          sliding_window=sliding_window, **extra)
    raise ValueError(kind)


def make_tiny(kind: str, folder: Path, *, tie: bool = False, rope_scaling: dict | None = None, seed: int = 0,
              sliding_window: int | None = None):
    """Saves a random tiny model of `kind` (llama | qwen2 | qwen3 | mistral | gemma3 | qwen3_moe | mixtral) and
    returns the torch model. `sliding_window`: Mistral's window (None: none) or Gemma 3's (None: its default, 4096)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    extra = {"rope_scaling": rope_scaling} if rope_scaling else {}
    cfg = _tiny_config(kind, tie, extra, sliding_window)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    norm_center = 0.0 if kind == "gemma3" else 1.0  # Gemma's norms scale by 1 + w
    with torch.no_grad():  # random norms and biases, so a wrong mapping cannot hide behind ones/zeros
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.copy_(norm_center + 0.2 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
            if name.endswith("mlp.gate.weight"):  # a router: decisive routing, no near-ties between experts
                p.copy_(0.5 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(folder)
    return model


# Llama 3's own chat template (Meta-Llama-3-8B-Instruct), and the special tokens it uses, in Llama 3's order:
# `<|end_of_text|>` sorts before `<|eot_id|>`, as 128001 before 128009.
LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def make_char_tokenizer(folder: Path, specials: tuple[str, ...], *, bos: str | None, eos: str,
                        chat_template: str | None = None, generation_eos: tuple[str, ...] = ()) -> Path:
    """A byte-level tokenizer of single printable-ASCII characters (ids 0-95) with `specials` after them,
    saved as a Hugging Face folder; `generation_eos` go to generation_config.json, as Llama 3 lists its
    `<|end_of_text|>` and `<|eot_id|>` there."""
    import json

    import transformers
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    chars = ["\u0120", "\u010a"] + [chr(c) for c in range(ord("!"), ord("~") + 1)]  # byte-level space, newline
    rust = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rust.decoder = decoders.ByteLevel()
    rust.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=rust, bos_token=bos, eos_token=eos,
                                              chat_template=chat_template)
    hf.save_pretrained(str(folder))
    if generation_eos:
        ids = [hf.convert_tokens_to_ids(t) for t in generation_eos]
        (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": ids}))
    return folder


def make_llama3_tokenizer(folder: Path) -> Path:
    """Llama 3 Instruct's layout in miniature: eos `<|end_of_text|>`, both ends in generation_config.json."""
    return make_char_tokenizer(folder, LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|end_of_text|>",
                               chat_template=LLAMA3_TEMPLATE, generation_eos=("<|end_of_text|>", "<|eot_id|>"))
