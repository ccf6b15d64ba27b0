"""Gemma 3 and Mistral against transformers on tiny random checkpoints, through every path that attends.

Each case has sliding windows shorter than its sequences, so a path that drops
or misplaces the window fails: the training forward (`sequence_forward`), the
group forward (`branch_forward`), the sampler's decode step (one turn, with a
shared prefix, and multi-turn), and the server's slot decode. Gemma 3's case has
both layer kinds, and its norms go through the +1 shift of Hugging Face files
both ways (read, and written by an export) and llama.cpp's stored 1 + w (GGUF).
The real Gemma 3 270M GGUF is checked in test_gemma3_gguf.py (slow).
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.checkpoint.export import export_run
from rft_jax.model import branch_forward, logits, sequence_forward
from rft_jax.model.config import ModelConfigError, config_from_hf, config_to_hf
from rft_jax.model.lora import LoraConfig, init_lora
from rft_jax.model.registry import ModelSpec
from rft_jax.model.tokenizer import tokenizer_from_hf_folder
from rft_jax.model.weights_hf import load_hf_params
from rft_jax.sampling import SamplingParams, sample
from rft_jax.sampling.generate import sampler_prompts
from rft_jax.sampling.turns import NONE, POLICY, TOOL, begin_turns, run_turn
from rft_jax.serving.slot_forward import decode_slots, empty_cache, prefill_slots
from rft_jax.sft.config import SFTConfig
from tests.hf_tiny import make_llama3_tokenizer, make_tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WINDOW = 5
CASES = {  # name: (kind, sliding window, tied embeddings)
    "gemma3": ("gemma3", WINDOW, True),
    "mistral-window": ("mistral", WINDOW, False),
    "mistral-none": ("mistral", None, False),
}
TOL = 1e-4  # float32 on both sides


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    """(name, torch model, our config, our params) of one tiny checkpoint, read back by load_hf_params."""
    kind, window, tie = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    model = make_tiny(kind, folder, sliding_window=window, tie=tie)
    cfg, params = load_hf_params(folder)
    return request.param, model, cfg, params


def _left_padded(vocab: int, lengths: list[int], seed: int = 0):
    rng = np.random.default_rng(seed)
    t = max(lengths)
    tokens, mask = np.zeros((len(lengths), t), np.int32), np.zeros((len(lengths), t), bool)
    for i, n in enumerate(lengths):
        tokens[i, t - n:], mask[i, t - n:] = rng.integers(3, vocab, n), True
    return tokens, mask


@functools.partial(jax.jit, static_argnames=("cfg", "lora_scale"))
def _forward_logits(params, cfg, tokens, mask, lora=None, lora_scale=1.0):
    return logits(params, cfg, sequence_forward(params, cfg, tokens, mask, lora=lora, lora_scale=lora_scale)[0])


def _ours(params, cfg, tokens, mask, lora=None, lora_scale=1.0) -> np.ndarray:
    return np.asarray(_forward_logits(params, cfg, jnp.asarray(tokens), jnp.asarray(mask), lora, lora_scale))


REF_WIDTH = 48  # every single-row reference forward is left-padded to this width: one compile per model


def _row_logits(params, cfg, seq) -> np.ndarray:
    """[len(seq), V] logits of one unpadded sequence, from a forward left-padded to REF_WIDTH."""
    n = len(seq)
    tokens, mask = np.zeros((1, REF_WIDTH), np.int32), np.zeros((1, REF_WIDTH), bool)
    tokens[0, REF_WIDTH - n:], mask[0, REF_WIDTH - n:] = seq, True
    return _ours(params, cfg, tokens, mask)[0, REF_WIDTH - n:]


def _theirs(model, tokens, mask) -> np.ndarray:
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask.astype(int)),
                    position_ids=torch.tensor(positions))
    return out.logits.float().numpy()


def test_config_maps_both_ways(case):
    name, model, cfg, _ = case
    assert cfg.architecture == CASES[name][0] and cfg.sliding_window == CASES[name][1]
    assert config_from_hf(config_to_hf(cfg)) == cfg
    if cfg.architecture == "gemma3":
        assert cfg.layer_types == tuple(model.config.layer_types) and cfg.query_pre_attn_scalar == 24
        assert (cfg.rope_theta, cfg.rope_local_theta) == (1e6, 1e4)


def test_logits_match_transformers_left_padded(case):
    name, model, cfg, params = case
    tokens, mask = _left_padded(cfg.vocab_size, [20, 13, 4])
    expected, ours = _theirs(model, tokens, mask), _ours(params, cfg, tokens, mask)
    diff = np.abs(ours - expected)[mask].max()
    assert diff <= TOL, f"{name}: max abs logit difference {diff:.2e}"
    # each family switch changes these logits, so the match above is not by luck
    switches = [dict(sliding_window=None)] if cfg.sliding_window else []
    if cfg.architecture == "gemma3":
        switches += [dict(rope_local_theta=None), dict(query_pre_attn_scalar=None), dict(embed_scale=False)]
    for change in switches:
        off = _ours(params, dataclasses.replace(cfg, **change), tokens, mask)
        assert np.abs(off - expected)[mask].max() > 100 * TOL, f"{name}: {change} left the logits unchanged"


@functools.partial(jax.jit, static_argnames="cfg")
def _branch_logits(params, cfg, prompt, pmask, cont):
    _, prefix_kv = sequence_forward(params, cfg, prompt, pmask)
    return logits(params, cfg, branch_forward(params, cfg, cont, prefix_kv, pmask)[0])


def test_branch_forward_matches_full_sequences(case):
    """G continuations, run against the prompt's keys/values, equal prompt + continuation run whole."""
    name, _, cfg, params = case
    prompt, pmask = _left_padded(cfg.vocab_size, [9, 4], seed=1)
    g, c = 3, 8
    cont = np.random.default_rng(2).integers(3, cfg.vocab_size, (2, g, c)).astype(np.int32)
    ours = np.asarray(_branch_logits(params, cfg, jnp.asarray(prompt), jnp.asarray(pmask), jnp.asarray(cont)))
    for b in range(2):
        for j in range(g):
            ref = _row_logits(params, cfg, np.concatenate([prompt[b][pmask[b]], cont[b, j]]))[-c:]
            np.testing.assert_allclose(ours[b, j], ref, atol=TOL, err_msg=name)


@pytest.mark.parametrize("shared", [False, True])
def test_sampler_logprobs_equal_full_forward(case, shared):
    """Every log-prob the KV-cached sampler records equals a fresh forward over the whole sequence; with
    `shared`, a 16-token start is prefilled once for the batch (the default when prompts share a system turn)."""
    name, _, cfg, params = case
    prompt, pmask = _left_padded(cfg.vocab_size, [9, 4], seed=3)
    head = np.random.default_rng(4).integers(3, cfg.vocab_size, 16).astype(np.int32)
    c = 10
    out = sample(params, cfg, jnp.asarray(prompt), jnp.asarray(pmask), jax.random.key(5),
                 params_sampling=SamplingParams(1.0), num_samples=2, max_new_tokens=c, eos_ids=(), pad_id=0,
                 shared_1xS=jnp.asarray(head[None]) if shared else None)
    for b in range(2):
        real = prompt[b][pmask[b]]
        full = np.concatenate([head, real]) if shared else real
        for j in range(2):
            completion = np.asarray(out.tokens_BxGxC[b, j])
            row = _row_logits(params, cfg, np.concatenate([full, completion]))
            logp = np.asarray(jax.nn.log_softmax(row, -1))[len(full) - 1:-1]
            np.testing.assert_allclose(np.asarray(out.logprobs_BxGxC[b, j]), logp[np.arange(c), completion],
                                       atol=1e-5, err_msg=name)


def test_multi_turn_decoding_matches_the_forward(case):
    """Multi-turn decoding (rows fed tool replies, idling while others decode, so cache slots and positions
    part ways): every sampled token's log-prob equals a full forward over the conversation so far."""
    name, _, cfg, params = case
    prompts = [[2, 40, 41, 42], [2, 50, 51]]
    p = sampler_prompts(prompts, 0, 2)
    sampling, g = SamplingParams(1.0), 2
    state = begin_turns(params, cfg, p.tokens_BxP, p.mask_BxP, jax.random.key(1), params_sampling=sampling,
                        num_samples=g, slots=40, pad_id=0)
    rng = np.random.default_rng(0)
    live = np.ones((2, g), bool)
    feed, feed_len = np.zeros((2, g, 4), np.int32), np.zeros((2, g), np.int32)
    for _ in range(3):
        state, ended = run_turn(params, cfg, state, jnp.asarray(feed), jnp.asarray(feed_len), jnp.asarray(live),
                                params_sampling=sampling, eos_ids=tuple(range(80, 96)), pad_id=0, budget=24)
        live &= np.asarray(ended)
        feed_len = rng.integers(1, 5, (2, g)).astype(np.int32)
        feed = rng.integers(3, 80, (2, g, 4)).astype(np.int32)
    source, tokens, logprobs = (np.asarray(x) for x in (state.source_BxGxS, state.tokens_BxGxS, state.logprobs_BxGxS))
    assert (source == TOOL).any()
    checked = 0
    for b, prompt in enumerate(prompts):
        for j in range(g):
            own = source[b, j] != NONE
            policy = source[b, j][own] == POLICY
            conversation = np.concatenate([prompt, tokens[b, j][own]])
            logp = np.asarray(jax.nn.log_softmax(_row_logits(params, cfg, conversation), -1))[len(prompt) - 1:-1]
            expected = logp[np.arange(own.sum()), tokens[b, j][own]][policy]
            np.testing.assert_allclose(logprobs[b, j][own][policy], expected, atol=1e-5, err_msg=name)
            checked += policy.sum()
    assert checked > 2 * WINDOW * g


def _greedy_reference(params, cfg, prompt: list[int], n: int) -> list[int]:
    """n greedy tokens, each the argmax of a full forward over everything before it."""
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(_row_logits(params, cfg, seq)[-1].argmax()))
    return seq[len(prompt):]


def test_server_slot_decode_matches_the_forward(case):
    """The server's prefill into slots and its per-slot decode step write and read the windowed cache as the
    forward attends: greedy tokens equal the full forward's argmax, step by step, for slots at different
    positions."""
    name, _, cfg, params = case
    prompts = [list(range(3, 12)), [40, 41, 42]]
    steps, context = 10, 32
    tokens = np.zeros((2, 9), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, :len(p)] = p
    lengths = np.asarray([len(p) for p in prompts], np.int32)
    seeds, zeros, ones = jnp.zeros((2, 2), jnp.uint32), jnp.zeros(2), jnp.ones(2)
    cache = empty_cache(cfg, 2, context, jnp.float32)
    cache, current = prefill_slots(params, cfg, cache, jnp.asarray(tokens), jnp.asarray(lengths),
                                   jnp.arange(2), seeds, zeros, ones)
    got = [[int(t)] for t in current]
    for step in range(steps - 1):
        cache, current = decode_slots(params, cfg, cache, current, jnp.asarray(lengths + step), seeds, zeros, ones,
                                      window=context)
        for i, t in enumerate(current):
            got[i].append(int(t))
    for p, tokens_out in zip(prompts, got):
        assert tokens_out == _greedy_reference(params, cfg, p, steps), name


LORA = LoraConfig(rank=4, alpha=8.0)


def test_gemma3_lora_export_reloads_in_transformers_and_rft_jax(tmp_path):
    """A LoRA run's merged export: transformers' Gemma3ForCausalLM computes our logits from it (the norms
    written as w - 1), and load_hf_params reads back the same model (the norms read as w + 1)."""
    make_tiny("gemma3", tmp_path / "base", sliding_window=WINDOW, tie=True)
    cfg, base = load_hf_params(tmp_path / "base")
    lora = init_lora(cfg, LORA, jax.random.key(0))
    lora = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), lora)  # B != 0
    tokenizer = tokenizer_from_hf_folder(make_llama3_tokenizer(tmp_path / "tokenizer"))
    run_cfg = SFTConfig(data="unused", model=ModelSpec(name=str(tmp_path / "base")), mode="lora", lora=LORA)
    export_run(run_cfg, cfg, base, lora, tokenizer, tmp_path / "export")
    folder = tmp_path / "export" / "model"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "gemma3_text"

    tokens, mask = _left_padded(cfg.vocab_size, [16, 11])
    ours = _ours(base, cfg, tokens, mask, lora, LORA.scale)
    assert np.abs(ours - _ours(base, cfg, tokens, mask))[mask].max() > 100 * TOL  # the adapter matters
    model, info = transformers.AutoModelForCausalLM.from_pretrained(str(folder), output_loading_info=True)
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert np.abs(_theirs(model.eval(), tokens, mask) - ours)[mask].max() <= TOL
    read_cfg, read_back = load_hf_params(folder)
    assert read_cfg == cfg
    assert np.abs(_ours(read_back, cfg, tokens, mask) - ours)[mask].max() <= TOL


def _write_gemma3_gguf(path, folder, cfg) -> None:
    """The HF checkpoint in `folder` as llama.cpp's converter writes a Gemma 3 GGUF: its tensor names, every
    norm scale stored as 1 + w, q/k rows as they are; float32 tensors."""
    import gguf
    from safetensors.numpy import load_file

    from rft_jax.model.families.gemma3 import GGUF_LAYER, HF_LAYER

    hf = load_file(str(folder / "model.safetensors"))
    w = gguf.GGUFWriter(str(path), "gemma3")
    for add, value in [(w.add_block_count, cfg.num_layers), (w.add_embedding_length, cfg.hidden_size),
                       (w.add_feed_forward_length, cfg.intermediate_size), (w.add_head_count, cfg.num_heads),
                       (w.add_head_count_kv, cfg.num_kv_heads), (w.add_key_length, cfg.head_dim),
                       (w.add_value_length, cfg.head_dim), (w.add_context_length, cfg.max_position_embeddings),
                       (w.add_layer_norm_rms_eps, cfg.rms_norm_eps), (w.add_rope_freq_base, cfg.rope_theta),
                       (w.add_sliding_window, cfg.sliding_window)]:
        add(value)
    w.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])

    def put(name, x):
        w.add_tensor(name, (x + 1.0 if name.endswith("norm.weight") else x).astype(np.float32))

    put("token_embd.weight", hf["model.embed_tokens.weight"])
    put("output_norm.weight", hf["model.norm.weight"])
    for i in range(cfg.num_layers):
        for ours, theirs in HF_LAYER.items():
            put(f"blk.{i}.{GGUF_LAYER[ours]}.weight", hf[f"model.layers.{i}.{theirs}.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gemma3_gguf_reads_as_llama_cpp_writes_it(tmp_path):
    """Tensors and norms as llama.cpp stores them give the HF checkpoint's parameters; the config follows
    llama.cpp's fixed Gemma 3 rules (every 6th layer global, local RoPE base 1e4, query scale 1/sqrt(head_dim))."""
    from rft_jax.model.families.gemma3 import pattern_layer_types
    from rft_jax.model.weights_gguf import load_gguf_params

    make_tiny("gemma3", tmp_path, sliding_window=WINDOW, tie=True)
    hf_cfg, hf_params = load_hf_params(tmp_path)
    _write_gemma3_gguf(tmp_path / "tiny.gguf", tmp_path, hf_cfg)
    cfg, params = load_gguf_params(tmp_path / "tiny.gguf")
    assert cfg == dataclasses.replace(hf_cfg, query_pre_attn_scalar=float(hf_cfg.head_dim),
                                      layer_types=pattern_layer_types(hf_cfg.num_layers),
                                      rms_norm_eps=float(np.float32(hf_cfg.rms_norm_eps)))  # GGUF keeps a float32
    for ours, theirs in zip(jax.tree.leaves(params), jax.tree.leaves(hf_params)):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=0, atol=1e-6)


@pytest.mark.parametrize("change,message", [
    ({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": {}},
     "Gemma3ForConditionalGeneration"),
    ({"final_logit_softcapping": 30.0}, "softcapping"),
    ({"attn_logit_softcapping": 50.0}, "softcapping"),
    ({"use_bidirectional_attention": True}, "causal"),
])
def test_gemma3_configs_we_cannot_run_are_refused(change, message):
    hf = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": 96, "hidden_size": 64,
          "intermediate_size": 112, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    assert config_from_hf(hf).layer_types == ("sliding_attention",) * 2  # every 6th layer is global
    with pytest.raises(ModelConfigError, match=message):
        config_from_hf({**hf, **change})
