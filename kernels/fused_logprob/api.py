"""Entry point: per-token log-prob of the target and entropy, from hiddens.

    from kernels.fused_logprob.api import token_logprobs_and_entropy
    logprob_N, entropy_N = token_logprobs_and_entropy(h_NxD, w_DxV, ids_N)

`implementation` picks a function from `IMPLEMENTATIONS`; `None` means the
default for the backend: xla_chunked everywhere for now. The Pallas kernels
have only run in the interpreter (pallas_gpu has never been compiled by Triton,
pallas_tpu never run on a TPU), so they run only when asked for, until
benchmarks/device_suite.sh has validated them on the device. `resolve_name` maps a user-facing choice
(reference | xla_chunked | pallas) to an implementation name. An
implementation that was asked for by name and cannot run raises; nothing ever
falls back to another implementation silently. `interpret=True` runs the Pallas
kernels in the Pallas interpreter (CPU; slow, for tests and debugging; for
pallas_tpu, the TPU-semantics interpreter).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from kernels.fused_logprob import pallas_gpu, pallas_tpu, reference, xla_chunked
from kernels.fused_logprob.block_sizes import BlockSizes
from kernels.fused_logprob.on_mesh import split_over_mesh


def _reference(hidden, unembed, targets, *, temperature, blocks):
    del blocks  # the oracle has no blocks
    return reference.token_logprobs_and_entropy(hidden, unembed, targets,
                                                temperature=temperature)


# name -> (function, backends it runs on; None = any backend).
IMPLEMENTATIONS: dict[str, tuple[Callable, tuple[str, ...] | None]] = {
    "reference": (_reference, None),
    "xla_chunked": (xla_chunked.token_logprobs_and_entropy, None),
    "pallas_gpu": (pallas_gpu.token_logprobs_and_entropy, ("gpu",)),
    "pallas_tpu": (pallas_tpu.token_logprobs_and_entropy, ("tpu",)),
}

# User-facing choices (e.g. a model config's logprob_impl) besides the implementation names.
CHOICES = ("reference", "xla_chunked", "pallas", "pallas_gpu", "pallas_tpu")


def _best_for(backend: str) -> str:
    # Not a Pallas kernel on GPU or TPU yet: they have only run in the interpreter (see the module docstring).
    del backend
    return "xla_chunked"


def best_implementation() -> str:
    """The implementation used when none is named."""
    return _best_for(jax.default_backend())


def resolve_name(choice: str | None, backend: str) -> str:
    """The implementation name for a user-facing choice on `backend` ("cpu", "gpu", "tpu").

    None is the best implementation for the backend; "pallas" is the backend's Pallas kernel
    and raises where there is none. The explicit "pallas_gpu" / "pallas_tpu" pass through
    unchanged: the backend check happens when the kernel is called (where `interpret=True`
    may still run it on CPU).
    """
    if choice is None:
        return _best_for(backend)
    if choice not in CHOICES:
        raise ValueError(f"unknown fused_logprob choice {choice!r}; choose one of {CHOICES}")
    if choice != "pallas":
        return choice
    pallas = {"gpu": "pallas_gpu", "tpu": "pallas_tpu"}
    if backend not in pallas:
        raise RuntimeError(f"fused_logprob 'pallas' has no kernel for the {backend!r} backend "
                           f"(only {sorted(pallas)}); choose 'xla_chunked' or 'reference'.")
    return pallas[backend]


def _resolve(implementation: str | None, interpret: bool) -> Callable:
    name = best_implementation() if implementation is None else implementation
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown fused_logprob implementation {name!r}; "
                         f"available: {sorted(IMPLEMENTATIONS)}")
    fn, backends = IMPLEMENTATIONS[name]
    if interpret:
        if not name.startswith("pallas"):
            raise ValueError(f"interpret=True only applies to Pallas implementations,"
                             f" not {name!r}")
        return functools.partial(fn, interpret=True)
    backend = jax.default_backend()
    if backends is not None and backend not in backends:
        raise RuntimeError(f"fused_logprob implementation {name!r} needs a "
                           f"{'/'.join(backends)} backend but JAX's default backend "
                           f"is {backend!r}; choose 'xla_chunked', or pass "
                           "interpret=True to emulate the kernel.")
    return fn


def _check_shapes(hidden, unembed, targets, temperature):
    if unembed.ndim != 2 or hidden.shape[-1] != unembed.shape[0]:
        raise ValueError(f"hidden [..., D] and unembed [D, V] disagree: "
                         f"{hidden.shape} vs {unembed.shape}")
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(f"targets {targets.shape} must be hidden's leading "
                         f"shape {hidden.shape[:-1]}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def token_logprobs_and_entropy(hidden_NxD: jax.Array, unembed_DxV: jax.Array,
                               targets_N: jax.Array, *,
                               temperature: float = 1.0,
                               implementation: str | None = None,
                               blocks: BlockSizes | None = None,
                               interpret: bool = False,
                               mesh: Mesh | None = None
                               ) -> tuple[jax.Array, jax.Array]:
    """log softmax(h @ W / T)[target] and the entropy of softmax(h @ W / T).

    Args:
      hidden_NxD: final hidden states [N, D] (or [..., D]); float32 or bf16.
      unembed_DxV: unembedding [D, V]; for tied embeddings pass embed_VxD.T.
      targets_N: int target ids [N] (or [...]). Ids outside [0, V) give a
        meaningless log-prob and no target gradient: mask such tokens.
      temperature: the logits are divided by it before the softmax.
      implementation: a key of IMPLEMENTATIONS, or None for the best available.
      blocks: tile sizes; None for the implementation's default.
      interpret: run a Pallas implementation in the interpreter (CPU, slow).
      mesh: the device mesh the inputs live on. A Pallas kernel then runs under
        shard_map with the tokens split over every device (on_mesh.py), as XLA
        cannot partition it; the other implementations are left to the compiler.

    Returns:
      (logprob, entropy), float32 with targets' shape. Both are differentiable
      with respect to hidden and unembed (custom VJP that recomputes logits
      blocks); a token whose cotangents are zero, e.g. one multiplied by a zero
      mask, contributes exactly zero gradient.
    """
    _check_shapes(hidden_NxD, unembed_DxV, targets_N, temperature)
    fn = _resolve(implementation, interpret)
    name = best_implementation() if implementation is None else implementation
    if mesh is not None and mesh.size > 1 and name.startswith("pallas"):
        fn = split_over_mesh(fn, mesh)
    lead = targets_N.shape
    hidden_NxD = hidden_NxD.reshape(-1, hidden_NxD.shape[-1])
    logprob_N, entropy_N = fn(hidden_NxD, unembed_DxV,
                              targets_N.reshape(-1).astype(jnp.int32),
                              temperature=temperature, blocks=blocks)
    return logprob_N.reshape(lead), entropy_N.reshape(lead)
