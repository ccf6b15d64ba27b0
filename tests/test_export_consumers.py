"""The export read by its real consumers: transformers loads export/model and peft applies export/adapter.

Each family's exported folder must give transformers' own forward the logits
rft_jax computes, in float32 to 1e-4 and in bfloat16 to bfloat16's rounding.
A family joins by one line in FAMILIES: its config.json as transformers spells it.
"""

from __future__ import annotations

import functools
import json
import warnings

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import peft  # requirements-test.txt: a missing consumer fails here rather than skipping the round trips
import pytest
import torch
import transformers

from rft_jax.checkpoint.export import export_model, export_run
from rft_jax.model import init_params, logits, sequence_forward
from rft_jax.model.config import config_from_hf
from rft_jax.model.families import family_of
from rft_jax.model.lora import LoraConfig, init_lora, load_peft_adapter, merge_lora
from rft_jax.model.registry import ModelSpec
from rft_jax.model.tokenizer import tokenizer_from_hf_folder
from rft_jax.model.weights_hf import load_hf_params
from rft_jax.sft.config import SFTConfig
from tests.hf_tiny import COMMON, make_llama3_tokenizer

SHAPES = {**COMMON, "vocab_size": 128}
FAMILIES = {
    "llama": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rope_theta": 10000.0},
    "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "rope_theta": 1e6,
              "tie_word_embeddings": True},
    "qwen3": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "rope_theta": 1e6, "head_dim": 24},
    "mistral": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": 8},
    "gemma3": {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "sliding_window": 8,
               "layer_types": ["sliding_attention", "full_attention"], "query_pre_attn_scalar": 24,
               "rope_local_base_freq": 1e4, "rope_theta": 1e6, "hidden_activation": "gelu_pytorch_tanh",
               "tie_word_embeddings": True},
}
F32_TOL = 1e-4  # float32 on both sides: rounding differences only
LORA = LoraConfig(rank=4, alpha=8.0)  # every projection; scale alpha / r = 2, as peft's lora_alpha / r


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tokenizer_from_hf_folder(make_llama3_tokenizer(tmp_path_factory.mktemp("tokenizer")))


def _random_like(tree, seed: int, std: float) -> dict:
    """numpy N(0, std) of the pytree's shapes, N(1, 0.2) for norms (the shapes from jax.eval_shape: a random
    init in jax would compile for seconds)."""
    rng = np.random.default_rng(seed)

    def draw(path, x):
        one = "norm" in jax.tree_util.keystr(path)
        return (1.0 if one else 0.0) + (0.2 if one else std) * rng.standard_normal(x.shape, np.float32)

    return jax.tree_util.tree_map_with_path(draw, tree)


def _model(family: str, seed: int = 0):
    """A config read by the family's own config.json mapping, and random parameters: weights, norms and
    biases all away from their init values, so a misnamed or transposed tensor cannot pass."""
    cfg = config_from_hf({**SHAPES, **FAMILIES[family]})
    return cfg, _random_like(jax.eval_shape(lambda: init_params(cfg, jax.random.key(seed))), seed, 0.1)


def _adapter(cfg, seed: int = 1) -> dict:
    """LoRA factors with B nonzero (a fresh adapter's B = 0 would leave the model unchanged)."""
    return _random_like(jax.eval_shape(lambda: init_lora(cfg, LORA, jax.random.key(seed))), seed, 0.05)


def _tokens(vocab: int) -> np.ndarray:
    return np.random.default_rng(7).integers(0, vocab, (2, 24))


@functools.partial(jax.jit, static_argnames="cfg")
def _forward(params, cfg, tokens, lora):
    hidden, _ = sequence_forward(params, cfg, tokens, jnp.ones(tokens.shape, bool), lora=lora,
                                 lora_scale=LORA.scale)
    return logits(params, cfg, hidden)


def _ours(cfg, params, tokens, lora=None) -> np.ndarray:
    return np.asarray(_forward(params, cfg, jnp.asarray(tokens), lora))


def _theirs(model, tokens) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens)).logits.float().numpy()


def _load(folder, **kw):
    """transformers' model from an export folder, failing on any tensor it did not find or did not use."""
    model, info = transformers.AutoModelForCausalLM.from_pretrained(str(folder), output_loading_info=True, **kw)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def _max_diff(a, b) -> float:
    return float(np.abs(a - b).max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_full_export_loads_in_transformers(tmp_path, tokenizer, family):
    cfg, params = _model(family)
    export_run(SFTConfig(data="unused", mode="full"), cfg, params, params, tokenizer, tmp_path / "export")
    tokens = _tokens(cfg.vocab_size)
    diff = _max_diff(_theirs(_load(tmp_path / "export" / "model"), tokens), _ours(cfg, params, tokens))
    assert diff <= F32_TOL, f"{family}: transformers' logits differ from ours by {diff:.2e}"


def _peft_on_base(adapter_folder, **kw):
    """peft's model: the base its adapter_config.json names, the adapter applied; no adapter key unloaded."""
    meta = json.loads((adapter_folder / "adapter_config.json").read_text())
    base = _load(meta["base_model_name_or_path"], **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = peft.PeftModel.from_pretrained(base, str(adapter_folder)).eval()
    about_keys = [str(w.message) for w in caught if "keys" in str(w.message)]
    assert not about_keys, about_keys
    in_file = peft.utils.load_peft_weights(str(adapter_folder))
    in_model = peft.utils.get_peft_model_state_dict(model)
    assert set(in_file) == set(in_model), sorted(set(in_file) ^ set(in_model))
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lora_export_loads_in_transformers_and_peft(tmp_path, tokenizer, family):
    cfg, base = _model(family)
    base_folder = export_model(tmp_path / "base", cfg, base, tokenizer)  # the HF folder the run trained from
    lora = _adapter(cfg)
    run_cfg = SFTConfig(data="unused", model=ModelSpec(name=str(base_folder)), mode="lora", lora=LORA)
    export_run(run_cfg, cfg, base, lora, tokenizer, tmp_path / "export")
    tokens = _tokens(cfg.vocab_size)
    ours = _ours(cfg, base, tokens, lora)
    assert _max_diff(ours, _ours(cfg, base, tokens)) > 100 * F32_TOL  # the adapter changes the logits

    merged = _max_diff(_theirs(_load(tmp_path / "export" / "model"), tokens), ours)
    assert merged <= F32_TOL, f"{family}: the merged model's logits differ from ours by {merged:.2e}"

    adapter = tmp_path / "export" / "adapter"
    model = _peft_on_base(adapter)
    lora_cfg = model.peft_config["default"]
    assert (lora_cfg.r, lora_cfg.lora_alpha) == (LORA.rank, LORA.alpha)
    assert set(lora_cfg.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"}
    applied = _max_diff(_theirs(model, tokens), ours)
    assert applied <= F32_TOL, f"{family}: peft's logits differ from ours by {applied:.2e}"


def _bf16(tree, shift: float = 0.0):
    """The float32 values a bfloat16 file holds: each rounded once; norm scales as the file spells them
    (Gemma's files hold w - 1, so that is what is rounded)."""
    def rounded(path, x):
        s = np.float32(shift if "norm" in jax.tree_util.keystr(path) else 0.0)
        return (np.asarray(x, np.float32) - s).astype(ml_dtypes.bfloat16).astype(np.float32) + s
    return jax.tree_util.tree_map_with_path(rounded, tree)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bfloat16_export(tmp_path, tokenizer, family):
    """Half the bytes; transformers loads it as bfloat16 (dtype="auto") and matches our logits to bfloat16's
    precision; read back (by transformers in float32, by rft_jax, by peft), it holds exactly the rounded values."""
    cfg, base = _model(family)
    base_folder = export_model(tmp_path / "base", cfg, base, tokenizer)
    lora = _adapter(cfg)
    run_cfg = SFTConfig(data="unused", model=ModelSpec(name=str(base_folder)), mode="lora", lora=LORA,
                        export_dtype="bfloat16")
    export_run(run_cfg, cfg, base, lora, tokenizer, tmp_path / "export")
    folder, adapter = tmp_path / "export" / "model", tmp_path / "export" / "adapter"
    hf_config = json.loads((folder / "config.json").read_text())
    assert hf_config["dtype"] == hf_config["torch_dtype"] == "bfloat16"
    size = (folder / "model.safetensors").stat().st_size
    assert size < 0.55 * (base_folder / "model.safetensors").stat().st_size

    tokens = _tokens(cfg.vocab_size)
    ours = _ours(cfg, base, tokens, lora)
    model = _load(folder, dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    # bfloat16 keeps 8 significant bits: weights and activations rounded to <= 0.4% each add up to ~1.5% of
    # the largest logit here; the adapter alone moves them by ~35%
    scale = float(np.abs(ours).max())
    assert _max_diff(_theirs(model, tokens), ours) <= 0.03 * scale

    rounded = _bf16(merge_lora(base, lora, LORA.scale), family_of(cfg).hf_norm_shift)
    exact = _ours(cfg, rounded, tokens)
    assert _max_diff(_theirs(_load(folder, dtype=torch.float32), tokens), exact) <= F32_TOL
    _, read_back = load_hf_params(folder)
    assert _max_diff(_ours(cfg, read_back, tokens), exact) <= F32_TOL

    read_lora, read_cfg = load_peft_adapter(adapter, cfg)
    assert (read_cfg.rank, read_cfg.alpha, set(read_cfg.targets)) == (LORA.rank, LORA.alpha, set(LORA.targets))
    for ours_ab, theirs_ab in zip(jax.tree.leaves(_bf16(lora)), jax.tree.leaves(read_lora)):
        assert theirs_ab.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(theirs_ab), np.asarray(ours_ab))
    applied = _theirs(_peft_on_base(adapter), tokens)  # a float32 base: the adapter's rounding alone
    assert _max_diff(applied, _ours(cfg, base, tokens, _bf16(lora))) <= F32_TOL
