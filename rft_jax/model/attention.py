"""The one attention function of every path: the training forward, the prefill, the sampler's decode step
and the server's slot decode.

Each path keeps its keys and values in the layout its matmuls read fastest (a
prompt shared by G branches, a branch cache written in place, a server's slot
cache), so the keys arrive in *parts*, each with its own einsum strings. One
softmax runs over all parts as partial softmaxes with a shared max and summed
denominators: concatenating the parts' scores copied the largest arrays of a
layer several times in each pass. The family switches that change attention
(a query scale other than 1/sqrt(head_dim), sliding-window layers) live here
and in `visible`, so a new family changes one function, not four.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rft_jax.model.config import ModelConfig
from rft_jax.model.precision import mixed_einsum

MASKED = -1e30  # a finite fill, so fully masked rows stay NaN-free


class KeyPart(NamedTuple):
    """Keys and values of one part, the mask of what each query may see, and the two einsums.

    scores: "<q>,<k>-><rows><key>" (the key axis last); values: "<rows><key>,<v>-><out>".
    visible: bool, broadcastable to the scores.
    """

    k: jax.Array
    v: jax.Array
    visible: jax.Array
    scores: str
    values: str


def query_scale(cfg: ModelConfig) -> float:
    """1/sqrt(head_dim), or Gemma's 1/sqrt(query_pre_attn_scalar)."""
    return (cfg.query_pre_attn_scalar or cfg.head_dim) ** -0.5


def _relayout(x: jax.Array, src: str, dst: str) -> jax.Array:
    return x if src == dst else jnp.transpose(x, [src.index(c) for c in dst])


def _matmul_dtype(part: KeyPart, dtype):
    """A part stored in float32 while computing in bf16 (a CPU's decode cache, see `storage_dtype`) is
    multiplied in float32, its other operand rounded to `dtype` first: casting the whole cache to bf16
    on every step cost more than the matmul. The products are the same (both sides hold bf16 values)."""
    return jnp.dtype(jnp.float32) if part.k.dtype == jnp.float32 else jnp.dtype(dtype)


def _rounded(x: jax.Array, part: KeyPart, dtype) -> jax.Array:
    return x.astype(dtype) if _matmul_dtype(part, dtype) != jnp.dtype(dtype) else x


def attend(q: jax.Array, parts: list[KeyPart], out: str, dtype) -> jax.Array:
    """Softmax attention of scaled queries `q` over the keys of all parts; the output in layout `out`.

    Matmuls take `dtype` inputs with float32 results (`mixed_einsum`); the
    weights are rounded to `dtype` before the values matmul, as the keys and
    values were when they were stored. The max only shifts the exponent, so no
    gradient flows through it.
    """
    rows = out[:-1]
    scored = []
    for part in parts:
        s = mixed_einsum(part.scores, _rounded(q, part, dtype), part.k, _matmul_dtype(part, dtype))
        s = s + jnp.where(part.visible, 0.0, MASKED)
        part_rows = part.scores.split("->")[1][:-1]
        scored.append((s, part_rows))
    m = None
    for s, part_rows in scored:
        m_part = _relayout(s.max(-1), part_rows, rows)
        m = m_part if m is None else jnp.maximum(m, m_part)
    m = jax.lax.stop_gradient(m)
    o = denominator = None
    for (s, part_rows), part in zip(scored, parts):
        e = jnp.exp(s - _relayout(m, rows, part_rows)[..., None])
        o_part = mixed_einsum(part.values, _rounded(e, part, dtype), part.v, _matmul_dtype(part, dtype))
        o_part = _relayout(o_part, part.values.split("->")[1], out)
        d_part = _relayout(e.sum(-1), part_rows, rows)
        o = o_part if o is None else o + o_part
        denominator = d_part if denominator is None else denominator + d_part
    return o / denominator[..., None]


def layer_windows(cfg: ModelConfig) -> tuple[int, ...]:
    """Each layer's sliding window in tokens (0: the layer sees every earlier token)."""
    kinds = cfg.layer_types or (("sliding_attention" if cfg.sliding_window else "full_attention"),) * cfg.num_layers
    return tuple(int(cfg.sliding_window or 0) if kind == "sliding_attention" else 0 for kind in kinds)


def has_windows(cfg: ModelConfig) -> bool:
    return any(layer_windows(cfg))


def visible(q_pos: jax.Array, k_pos: jax.Array, window) -> jax.Array:
    """Keys within the layer's window of each query (`window` 0: all of them; a traced int in a layer scan).

    Causality is the caller's mask; this only drops keys `window` or more positions back, as Hugging Face's
    sliding-window mask does.
    """
    return (window <= 0) | (q_pos - k_pos < window)
