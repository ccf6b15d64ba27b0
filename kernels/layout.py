"""Array layouts that XLA's CPU backend needs to run bf16 matmuls natively.

Shared by the kernels and by rft_jax.model.precision (which re-exports it);
kernels/ is a leaf, so it lives here rather than in the model.
"""

from __future__ import annotations

import jax


def rows_last(x_NxD: jax.Array) -> jax.Array:
    """x.T as a row-major [D, N] array, so a product contracting over N runs as a bf16 matmul.

    XLA gives a transpose a column-major layout (a free bitcast), and its CPU
    backend multiplies bf16 only with row-major operands: a weight gradient
    x.T @ dy was converted to float32 and ran at half speed (18 ms against 9
    for [2016, 576] x [2016, 1536]). Splitting the rows in pairs first makes
    the transpose a real copy (0.3 ms). Elsewhere this is the plain transpose.
    A bf16 product whose result is transposed needs it too: the result then
    gets the column-major layout and this jaxlib's CPU backend fails with
    "Unsupported element type for DotThunk" (tests/test_mixed_precision.py,
    jitted, catches it).
    """
    n, d = x_NxD.shape
    if jax.default_backend() != "cpu" or n % 2:
        return x_NxD.T
    return x_NxD.reshape(n // 2, 2, d).transpose(2, 0, 1).reshape(d, n)
