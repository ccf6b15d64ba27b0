"""The mixture-of-experts MLP (Qwen3-MoE, Mixtral): a router sends each token to k of E SwiGLU experts.

Routing follows transformers' `Qwen3MoeTopKRouter` / `MixtralTopKRouter` step
for step: logits = h @ W_router, softmax over the E experts in float32, top-k
of those probabilities, then (`cfg.norm_topk_prob`; Mixtral always) the k
weights renormalised to sum to 1. The weights stay float32 here (Qwen3-MoE
rounds them to the model dtype first; in float32 the two are the same).

Dispatch is dense: every token runs through every expert, and a [N, E] matrix
holding the k routing weights (zeros elsewhere) weighs the outputs. It costs
E/k times the routed FLOPs (2x for Mixtral's 8 experts, top 2; 16x for
Qwen3-30B-A3B's 128, top 8) and [E, N, F] activations. In exchange it is three
einsums, the same on every backend, and exact: an expert a token did not pick
adds an exact zero and gets a zero gradient, as in transformers' loop over
experts. Its expert axis shards like the dense MLP's F axis (each device runs
its experts on every token, the down projection sums over experts), which is
what the rules table's `expert` entry does. A sort-and-group dispatch
(`jax.lax.ragged_dot`) does only the routed FLOPs where the backend has a
grouped matmul, but XLA's CPU backend lowers ragged_dot to a masked product of
all N*k rows with all E experts, k times this one; for large E on accelerators
it is the path to add.

LoRA adapts the attention projections of these models, not the router or the
experts (E adapters per projection are not built): `lora.check_targets`
refuses gate/up/down targets on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rft_jax.model.config import ModelConfig
from rft_jax.model.precision import mixed_einsum


class Routing(NamedTuple):
    """Where each of N tokens goes."""

    probs_NxE: jax.Array  # float32 softmax of the router logits (the load-balancing loss reads it)
    experts_NxK: jax.Array  # int32, the top-k experts, most probable first
    weights_NxK: jax.Array  # float32 weights of their outputs


def route(cfg: ModelConfig, h_NxD: jax.Array, router_DxE: jax.Array, dtype) -> Routing:
    """Softmax in float32, top-k, then renormalise (when cfg.norm_topk_prob): transformers' order."""
    logits_NxE = mixed_einsum("nd,de->ne", h_NxD, router_DxE, dtype)
    probs = jax.nn.softmax(logits_NxE.astype(jnp.float32), axis=-1)
    weights, experts = jax.lax.top_k(probs, cfg.experts_per_token)
    if cfg.norm_topk_prob:
        weights = weights / weights.sum(-1, keepdims=True)
    return Routing(probs, experts, weights)


def combine_weights(routing: Routing, num_experts: int) -> jax.Array:
    """[N, E] float32: each token's routing weight of every expert, zero for those it did not pick."""
    picked_NxKxE = jax.nn.one_hot(routing.experts_NxK, num_experts, dtype=jnp.float32)
    return jnp.einsum("nk,nke->ne", routing.weights_NxK, picked_NxKxE)


def moe_mlp(cfg: ModelConfig, p: dict, h_xD: jax.Array, dtype,
            act: Callable[[jax.Array], jax.Array]) -> tuple[jax.Array, Routing]:
    """The routed experts' weighted sum for normed activations h [..., D] (float32, shaped like h), and the
    routing of its N = prod(...) tokens.

    `p` holds one layer's "router" {"w": [D, E]} and "experts" {"gate"|"up": {"w": [E, D, F]}, "down":
    {"w": [E, F, D]}}; `act` is the gate activation. The routing weight multiplies each expert's hidden
    units before the down projection rather than its output after it (the same product, one rounding
    apart), so the sum over experts is part of that matmul and no [E, N, D] array exists.
    """
    h_NxD = h_xD.reshape(-1, h_xD.shape[-1])
    routing = route(cfg, h_NxD, p["router"]["w"], dtype)
    experts = p["experts"]
    gate_ExNxF = mixed_einsum("nd,edf->enf", h_NxD, experts["gate"]["w"], dtype)
    up_ExNxF = mixed_einsum("nd,edf->enf", h_NxD, experts["up"]["w"], dtype)
    weight_ExNx1 = combine_weights(routing, cfg.num_experts).T[:, :, None]
    y_NxD = mixed_einsum("enf,efd->nd", act(gate_ExNxF) * up_ExNxF * weight_ExNx1, experts["down"]["w"], dtype)
    return y_NxD.reshape(*h_xD.shape[:-1], y_NxD.shape[-1]), routing


class RouterStats(NamedTuple):
    """What the load-balancing loss needs of some tokens' routing: sums over the tokens counted.

    Per layer these are [E], [E] and a scalar; a layer scan stacks them to [L, E] and [L].
    """

    assigned_E: jax.Array  # top-k assignments to each expert (no gradient: they come from indices)
    prob_E: jax.Array  # router probability of each expert, summed
    tokens: jax.Array  # tokens counted


def router_stats(routing: Routing, mask_xN: jax.Array) -> RouterStats:
    """Sums over the tokens `mask_xN` marks (any shape of N elements, e.g. [B, T]); padding is 0."""
    m_N = mask_xN.reshape(-1).astype(jnp.float32)
    e = routing.probs_NxE.shape[-1]
    assigned = jnp.einsum("n,nke->e", m_N, jax.nn.one_hot(routing.experts_NxK, e, dtype=jnp.float32))
    return RouterStats(jax.lax.stop_gradient(assigned), jnp.einsum("n,ne->e", m_N, routing.probs_NxE), m_N.sum())


def total_stats(*parts: RouterStats, weights: tuple[float, ...] | None = None) -> RouterStats:
    """Several stats (each per layer [E] or stacked [L, E]) summed into one [E], [E], scalar; part i
    counted weights[i] times."""
    weights = weights or (1.0,) * len(parts)
    e = parts[0].assigned_E.shape[-1]
    assigned = sum(w * s.assigned_E.reshape(-1, e).sum(0) for s, w in zip(parts, weights))
    prob = sum(w * s.prob_E.reshape(-1, e).sum(0) for s, w in zip(parts, weights))
    return RouterStats(assigned, prob, sum(w * s.tokens.sum() for s, w in zip(parts, weights)))


def load_balancing_loss(stats: RouterStats) -> jax.Array:
    """Switch Transformer's auxiliary loss (Fedus et al. 2021, eqs. 4-6) as transformers'
    `load_balancing_loss_func` computes it over all layers at once: E * sum_e f_e * P_e, with f_e the
    top-k assignments to expert e per token and P_e its mean router probability, both over every
    layer's counted tokens. k when the experts are used evenly; it grows as routing concentrates.
    """
    s = total_stats(stats)
    tokens = jnp.maximum(s.tokens, 1.0)  # no counted token: 0, not NaN
    return s.assigned_E.shape[-1] * jnp.sum((s.assigned_E / tokens) * (s.prob_E / tokens))
