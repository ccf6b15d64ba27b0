"""The mixture-of-experts families (Qwen3-MoE, Mixtral) against transformers on tiny random checkpoints: logits,
the branch forward, the sampler's decode step, export, GGUF, the load-balancing loss, LoRA, and experts sharded
on a mesh of fake CPU devices."""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rft_jax.grpo import GRPOLossConfig
from rft_jax.model import ModelConfig, ModelConfigError, branch_forward, init_params, logits, sequence_forward
from rft_jax.model.config import config_from_gguf, config_from_hf, config_to_hf
from rft_jax.model.logprobs import completion_logprobs
from rft_jax.model.lora import LoraConfig, init_lora
from rft_jax.model.moe import Routing, load_balancing_loss, router_stats
from rft_jax.model.weights_hf import load_hf_params, save_hf_params
from rft_jax.parallel import MeshConfig, make_mesh, param_shardings, place
from rft_jax.sampling import SamplingParams, sample
from rft_jax.serving.slot_forward import decode_slots, empty_cache, prefill_slots
from rft_jax.train.step import RolloutBatch, StepSettings, batch_gradients
from tests.hf_tiny import make_tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

KINDS = ["qwen3_moe", "mixtral"]
ATTENTION_LORA = LoraConfig(rank=4, alpha=8.0, targets=("q", "k", "v", "o"))


_TINY: dict[str, tuple] = {}


def _tiny(kind: str, tmp_path_factory) -> tuple:
    """(torch model, config, params, folder) of a tiny random checkpoint of `kind`, made once."""
    if kind not in _TINY:
        folder = tmp_path_factory.mktemp(kind)
        model = make_tiny(kind, folder)
        cfg, params = load_hf_params(folder)
        assert cfg.architecture == kind and cfg.num_experts == 4 and cfg.experts_per_token == 2
        _TINY[kind] = (model, cfg, params, folder)
    return _TINY[kind]


@pytest.fixture(params=KINDS)
def tiny(request, tmp_path_factory):
    return _tiny(request.param, tmp_path_factory)


@pytest.fixture
def qwen3_moe(tmp_path_factory):
    return _tiny("qwen3_moe", tmp_path_factory)


@pytest.fixture
def mixtral(tmp_path_factory):
    return _tiny("mixtral", tmp_path_factory)


def _left_padded(vocab: int, lengths: list[int], seed: int = 0):
    rng = np.random.default_rng(seed)
    t = max(lengths)
    tokens, mask = np.zeros((len(lengths), t), np.int64), np.zeros((len(lengths), t), np.int64)
    for i, n in enumerate(lengths):
        tokens[i, t - n:], mask[i, t - n:] = rng.integers(3, vocab, n), 1
    return tokens, mask


def _hf(model, tokens, mask, **kw):
    """transformers' forward with our positions (left padding shifts a sequence; its first token is 0)."""
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions), **kw)


@functools.partial(jax.jit, static_argnames="cfg")
def _forward(params, cfg, tokens, mask, lora):
    hidden, _ = sequence_forward(params, cfg, tokens, mask, lora=lora, lora_scale=ATTENTION_LORA.scale)
    return logits(params, cfg, hidden)


def _ours(params, cfg, tokens, mask, lora=None):
    return np.asarray(_forward(params, cfg, jnp.asarray(tokens), jnp.asarray(mask), lora))


def test_logits_match_transformers_left_padded(tiny):
    model, cfg, params, _ = tiny
    tokens, mask = _left_padded(cfg.vocab_size, [30, 17, 5])
    diff = np.abs(_ours(params, cfg, tokens, mask) - _hf(model, tokens, mask).logits.numpy())[mask.astype(bool)]
    assert diff.max() <= 1e-4, f"max abs logit difference {diff.max():.2e}"


def test_branch_forward_matches_full_sequences(tiny):
    _, cfg, params, _ = tiny
    prompt, pmask = _left_padded(cfg.vocab_size, [9, 4], seed=1)
    cont = np.random.default_rng(2).integers(3, cfg.vocab_size, (2, 3, 5))

    @jax.jit
    def branches(params, prompt, pmask, cont):
        _, prefix_kv = sequence_forward(params, cfg, prompt, pmask)
        return logits(params, cfg, branch_forward(params, cfg, cont, prefix_kv, pmask)[0])

    ours = np.asarray(branches(params, jnp.asarray(prompt), jnp.asarray(pmask), jnp.asarray(cont)))
    full = np.concatenate([np.repeat(prompt[:, None], 3, 1), cont], -1).reshape(6, -1)
    fmask = np.concatenate([np.repeat(pmask[:, None], 3, 1), np.ones_like(cont)], -1).reshape(6, -1)
    ref = _ours(params, cfg, full, fmask)[:, -5:].reshape(ours.shape)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def _random_adapter(cfg, seed: int = 1) -> dict:
    """Attention adapters with B nonzero (a fresh B = 0 would hide a dropped adapter)."""
    lora = init_lora(cfg, ATTENTION_LORA, jax.random.key(seed))
    return jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(seed + 1), a.shape), lora)


def test_sampler_decode_step_matches_the_forward_with_attention_lora(qwen3_moe):
    """Each sampled token's log-prob (the decode step: the forward's own MoE MLP on the decode rows, and the
    fused attention adapters) equals a full forward over prompt + completion. One family (the sampler
    compiles for long); Qwen3-MoE's routing with Mixtral's renormalised weights, its own q/k norms."""
    _, cfg, params, _ = qwen3_moe
    cfg = dataclasses.replace(cfg, norm_topk_prob=True)
    lora = _random_adapter(cfg)
    prompt, pmask = _left_padded(cfg.vocab_size, [8, 5], seed=3)
    c = 6
    out = sample(params, cfg, jnp.asarray(prompt, jnp.int32), jnp.asarray(pmask, bool), jax.random.key(4),
                 params_sampling=SamplingParams(1.0), num_samples=2, max_new_tokens=c, eos_ids=(), pad_id=0,
                 lora=lora, lora_scale=ATTENTION_LORA.scale)
    completions = np.asarray(out.tokens_BxGxC)
    full = np.concatenate([np.repeat(prompt[:, None], 2, 1), completions], -1).reshape(4, -1)
    fmask = np.concatenate([np.repeat(pmask[:, None], 2, 1), np.ones_like(completions)], -1).reshape(4, -1)
    logp = jax.nn.log_softmax(_ours(params, cfg, full, fmask, lora), -1)[:, -c - 1:-1]
    expected = np.take_along_axis(np.asarray(logp), completions.reshape(4, c, 1), -1).reshape(2, 2, c)
    np.testing.assert_allclose(np.asarray(out.logprobs_BxGxC), expected, atol=1e-5)


def test_server_slot_decode_matches_the_forward(qwen3_moe):
    """The server's slot prefill and per-slot decode step (the forward's MoE MLP on its rows): greedy tokens
    equal the full forward's argmax, step by step, for two slots at different positions."""
    _, cfg, params, _ = qwen3_moe
    prompts, steps, width = [list(range(3, 12)), [40, 41, 42]], 5, 16
    tokens = np.zeros((2, 9), np.int32)
    for i, prompt in enumerate(prompts):
        tokens[i, :len(prompt)] = prompt
    lengths = np.asarray([len(p) for p in prompts], np.int32)
    seeds, zeros, ones = jnp.zeros((2, 2), jnp.uint32), jnp.zeros(2), jnp.ones(2)  # temperature 0: greedy
    cache, current = prefill_slots(params, cfg, empty_cache(cfg, 2, width, jnp.float32), jnp.asarray(tokens),
                                   jnp.asarray(lengths), jnp.arange(2), seeds, zeros, ones)
    got = [[int(t)] for t in current]
    for step in range(steps - 1):
        cache, current = decode_slots(params, cfg, cache, current, jnp.asarray(lengths + step), seeds, zeros, ones,
                                      window=width)
        for i, t in enumerate(current):
            got[i].append(int(t))
    for prompt, out in zip(prompts, got):
        seq = list(prompt)
        for _ in range(steps):  # the reference: a forward left-padded to `width`, its last position's argmax
            row, mask = np.zeros((1, width), np.int64), np.zeros((1, width), np.int64)
            row[0, width - len(seq):], mask[0, width - len(seq):] = seq, 1
            seq.append(int(_ours(params, cfg, row, mask)[0, -1].argmax()))
        assert out == seq[len(prompt):]


def test_export_loads_in_transformers_with_equal_logits(tiny, tmp_path):
    _, cfg, params, _ = tiny
    params = jax.tree.map(lambda a: a + 0.01, params)  # not the checkpoint transformers wrote
    save_hf_params(tmp_path, cfg, params)
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(cfg)))
    model, info = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tokens, mask = _left_padded(cfg.vocab_size, [12, 7], seed=5)
    diff = np.abs(_ours(params, cfg, tokens, mask) - _hf(model.eval(), tokens, mask).logits.numpy())
    assert diff[mask.astype(bool)].max() <= 1e-4


def test_config_maps_both_ways_and_refuses_what_it_cannot_build(tiny):
    _, cfg, _, folder = tiny
    hf = json.loads((folder / "config.json").read_text())
    assert config_from_hf(config_to_hf(cfg)) == cfg
    weighted = dataclasses.replace(cfg, router_aux_loss_coef=0.02, sliding_window=8)
    assert config_from_hf(config_to_hf(weighted)) == weighted
    # transformers adds the load-balancing loss only with output_router_logits: so do we
    assert config_from_hf({**hf, "router_aux_loss_coef": 0.5}).router_aux_loss_coef == 0.0
    assert config_from_hf({**hf, "router_aux_loss_coef": 0.5, "output_router_logits": True}).router_aux_loss_coef == 0.5
    if cfg.architecture == "qwen3_moe":
        for bad in ({"mlp_only_layers": [1]}, {"decoder_sparse_step": 2}, {"shared_expert_intermediate_size": 8},
                    {"num_experts": 0}):
            with pytest.raises(ModelConfigError):
                config_from_hf({**hf, **bad})
    with pytest.raises(ValueError, match="lora.targets q k v o"):
        init_lora(cfg, LoraConfig(rank=2), jax.random.key(0))  # the default targets name gate/up/down
    dense = ModelConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                        num_kv_heads=2, head_dim=8)
    with pytest.raises(ValueError, match="no experts"):  # traced only: the error comes before any compile
        jax.eval_shape(lambda: sequence_forward(init_params(dense, jax.random.key(0)), dense, jnp.ones((1, 3), jnp.int32),
                                                jnp.ones((1, 3), bool), router_mask=jnp.ones((1, 3), bool)))


def test_a_mixtral_gguf_is_refused_by_the_llama_family():
    meta = {"general.architecture": "llama", "llama.expert_count": 8, "llama.block_count": 2}
    with pytest.raises(ModelConfigError, match="mixture of experts"):
        config_from_gguf(meta, has_output_weight=True)


def test_qwen3moe_gguf_loads_the_same_params(qwen3_moe, tmp_path):
    """llama.cpp's layout: stacked experts `ffn_{gate,up,down}_exps` [E, out, in], router `ffn_gate_inp`."""
    import gguf
    from safetensors.numpy import load_file

    from rft_jax.model.weights_gguf import load_gguf_params

    _, cfg, params, folder = qwen3_moe
    hf = load_file(str(folder / "model.safetensors"))
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen3moe")
    for key, value in [("block_count", cfg.num_layers), ("context_length", cfg.max_position_embeddings),
                       ("embedding_length", cfg.hidden_size), ("feed_forward_length", cfg.intermediate_size),
                       ("attention.head_count", cfg.num_heads), ("attention.head_count_kv", cfg.num_kv_heads),
                       ("attention.key_length", cfg.head_dim), ("expert_count", cfg.num_experts),
                       ("expert_used_count", cfg.experts_per_token),
                       ("expert_feed_forward_length", cfg.moe_intermediate_size), ("vocab_size", cfg.vocab_size)]:
        writer.add_uint32(f"qwen3moe.{key}", value)
    writer.add_float32("qwen3moe.rope.freq_base", cfg.rope_theta)
    writer.add_float32("qwen3moe.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    attention = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
                 "attn_k_norm": "self_attn.k_norm", "attn_norm": "input_layernorm",
                 "ffn_norm": "post_attention_layernorm", "ffn_gate_inp": "mlp.gate"}
    for i in range(cfg.num_layers):
        names.update({f"blk.{i}.{ours}.weight": f"model.layers.{i}.{theirs}.weight" for ours, theirs in attention.items()})
    for name, theirs in names.items():
        writer.add_tensor(name, hf[theirs])
    for i in range(cfg.num_layers):
        for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            stacked = np.stack([hf[f"model.layers.{i}.mlp.experts.{e}.{theirs}.weight"] for e in range(cfg.num_experts)])
            writer.add_tensor(f"blk.{i}.ffn_{ours}_exps.weight", stacked)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    gguf_cfg, gguf_params = load_gguf_params(path)
    # without expert_weights_norm: renormalised, as llama.cpp's qwen3moe does; the eps went through float32
    assert gguf_cfg.norm_topk_prob and gguf_cfg.rms_norm_eps == pytest.approx(cfg.rms_norm_eps)
    assert dataclasses.replace(gguf_cfg, norm_topk_prob=cfg.norm_topk_prob, rms_norm_eps=cfg.rms_norm_eps) == cfg
    jax.tree.map(np.testing.assert_array_equal, gguf_params, params)


def _routing(logits_NxE, k: int) -> Routing:
    probs = jax.nn.softmax(logits_NxE, -1)
    weights, experts = jax.lax.top_k(probs, k)
    return Routing(probs, experts, weights)


def test_load_balancing_loss_equals_transformers():
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

    rng = np.random.default_rng(0)
    layers, e, k = 3, 6, 2
    mask = np.ones((2, 7), np.int64)
    mask[0, :3] = 0  # left padding, excluded
    gate_logits = [rng.standard_normal((14, e)).astype(np.float32) for _ in range(layers)]
    expected = load_balancing_loss_func(tuple(map(torch.tensor, gate_logits)), e, k, torch.tensor(mask))
    stats = [router_stats(_routing(jnp.asarray(g), k), jnp.asarray(mask)) for g in gate_logits]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *stats)
    np.testing.assert_allclose(float(load_balancing_loss(stacked)), float(expected), rtol=1e-6)


def test_forward_router_loss_equals_transformers_aux_loss(tiny):
    """The training forward's loss (prompt once per group, then the branches) equals transformers' aux_loss of
    the B*G sequences prompt + completion[:-1], padding on both sides excluded."""
    model, cfg, params, _ = tiny
    prompt, pmask = _left_padded(cfg.vocab_size, [7, 4], seed=6)
    b, g, c = 2, 3, 5
    completion = np.random.default_rng(7).integers(3, cfg.vocab_size, (b, g, c))
    cmask = np.arange(c)[None, None] < np.array([[5, 3, 4], [2, 5, 1]])[..., None]  # right padding
    loss = jax.jit(lambda p, m, x, xm: completion_logprobs(params, cfg, p, m, x, completion_mask_BxGxC=xm,
                                                           router_loss=True)[2])
    ours = loss(jnp.asarray(prompt), jnp.asarray(pmask), jnp.asarray(completion), jnp.asarray(cmask))
    seqs = np.concatenate([np.repeat(prompt[:, None], g, 1), completion[..., :-1]], -1).reshape(b * g, -1)
    masks = np.concatenate([np.repeat(pmask[:, None], g, 1), cmask[..., :-1]], -1).reshape(b * g, -1)
    theirs = _hf(model, seqs, masks.astype(np.int64), output_router_logits=True).aux_loss
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-5)


def test_train_step_adds_the_weighted_load_balancing_loss(mixtral):
    """With router_aux_loss_coef > 0 the step's loss gains coef x the aux loss (logged), and the router's
    gradient changes; full fine-tuning, so the router is trained. One family: the step is family-independent."""
    _, cfg, params, _ = mixtral
    rng = np.random.default_rng(8)
    b, g, c = 2, 2, 4
    prompt, pmask = _left_padded(cfg.vocab_size, [5, 3], seed=9)
    cmask = jnp.asarray(np.arange(c)[None, None] < np.array([[4, 2], [3, 4]])[..., None])
    batch = RolloutBatch(jnp.asarray(prompt, jnp.int32), jnp.asarray(pmask, bool),
                         jnp.asarray(rng.integers(3, cfg.vocab_size, (b, g, c)), jnp.int32), cmask,
                         jnp.zeros((b, g, c)), jnp.asarray(rng.standard_normal((b, g)), jnp.float32),
                         jnp.zeros((b, g), bool))
    coef = 0.5
    out = {}
    for weight in (0.0, coef):
        s = StepSettings(dataclasses.replace(cfg, router_aux_loss_coef=weight), GRPOLossConfig(), lora_scale=None,
                         temperature=1.0, dtype="float32")
        out[weight] = jax.jit(lambda p, s=s: batch_gradients(p, None, None, batch, s))(params)
    (grads_off, metrics_off), (grads_on, metrics_on) = out[0.0], out[coef]
    assert "actor/router_aux_loss" not in metrics_off
    aux = float(metrics_on["actor/router_aux_loss"])
    assert aux > cfg.experts_per_token * 0.9  # k when balanced, more when not (a tiny random router: about k)
    np.testing.assert_allclose(float(metrics_on["actor/loss"]) - float(metrics_off["actor/loss"]), coef * aux,
                               rtol=1e-4)
    router_delta = np.abs(np.asarray(grads_on["layers"]["router"]["w"] - grads_off["layers"]["router"]["w"]))
    assert router_delta.max() > 1e-4


SHARDED = ModelConfig(architecture="qwen3_moe", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True, tie_embeddings=False, num_experts=4,
                      experts_per_token=2, moe_intermediate_size=16)


def test_experts_are_sharded_on_the_expert_axis_and_the_forward_is_unchanged():
    """RULES' `expert` entry splits E over `tensor` (as the dense MLP's F); D keeps fsdp."""
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    params = init_params(SHARDED, jax.random.key(0), std=0.3)
    placed = place(params, param_shardings(params, mesh))
    layers = placed["layers"]
    assert layers["experts"]["gate"]["w"].sharding.spec == P(None, "tensor", "fsdp", None)
    assert layers["experts"]["up"]["w"].sharding.spec == P(None, "tensor", "fsdp", None)
    assert layers["experts"]["down"]["w"].sharding.spec == P(None, "tensor", None, "fsdp")
    assert layers["router"]["w"].sharding.spec == P(None, "fsdp", "tensor")
    tokens, mask = _left_padded(SHARDED.vocab_size, [9, 6, 9, 2], seed=10)

    @jax.jit
    def forward(p):
        return logits(p, SHARDED, sequence_forward(p, SHARDED, jnp.asarray(tokens), jnp.asarray(mask))[0])

    np.testing.assert_allclose(np.asarray(forward(placed)), np.asarray(forward(params)), atol=1e-5)


def test_the_run_config_turns_the_load_balancing_loss_on_and_refuses_it_on_a_dense_model(mixtral):
    """`--model.router_aux_loss_coef` overrides the checkpoint's weight; on a dense model it is an error."""
    from rft_jax.model.registry import ModelSpec, apply_spec  # noqa: PLC0415

    _, cfg, _, _ = mixtral
    assert apply_spec(cfg, ModelSpec(name="x")) == cfg
    assert apply_spec(cfg, ModelSpec(name="x", router_aux_loss_coef=0.02)).router_aux_loss_coef == 0.02
    dense = dataclasses.replace(cfg, architecture="llama", num_experts=0, experts_per_token=0, moe_intermediate_size=0)
    with pytest.raises(ValueError, match="no router"):
        apply_spec(dense, ModelSpec(name="x", router_aux_loss_coef=0.02))
    with pytest.raises(ValueError, match=">= 0"):
        apply_spec(cfg, ModelSpec(name="x", router_aux_loss_coef=-1.0))
