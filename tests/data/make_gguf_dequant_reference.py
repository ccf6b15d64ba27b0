"""Writes gguf_dequant_reference.npz: GGUF blocks and their values as ggml's own C code dequantizes them.

    python tests/data/make_gguf_dequant_reference.py /path/to/ggml  # a checkout of github.com/ggml-org/ggml

Why: the `gguf` package's numpy dequantizers are what rft_jax reads GGUF weights with, and most of
them (the K and IQ types) have no quantizer to round-trip through. ggml's reference C functions
(`dequantize_row_*` in src/ggml-quants.c) define the formats, so this script compiles them into a
throwaway shared library, feeds them seeded random blocks, keeps two blocks per type whose values
are all finite (random bytes can spell NaN/inf fp16 scales), and stores bytes and values.
tests/test_weights_loading.py then checks the package against these values with no C compiler.
The file in the repo was made from ggml 9a4acb374565f4146b8d6eb1cffdcd7d437d1ba2 (2025-02-12).
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("gguf_dequant_reference.npz")
TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ1_S", "IQ1_M",
         "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0")

# What ggml-quants.c needs from the rest of ggml: the fp16 table and a few helpers dequantization never calls.
STUBS = r"""
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"
float ggml_table_f32_f16[1 << 16];
__attribute__((constructor)) static void init(void) {
    for (int i = 0; i < 65536; i++) {
        int e = (i >> 10) & 31, m = i & 1023;
        float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
        ggml_table_f32_f16[i] = (i >> 15) ? -v : v;
    }
}
void ggml_abort(const char * file, int line, const char * fmt, ...) { fprintf(stderr, "%s:%d\n", file, line); abort(); }
size_t ggml_row_size(enum ggml_type type, int64_t ne) { return 0; }
const char * ggml_type_name(enum ggml_type type) { return "?"; }
size_t ggml_type_size(enum ggml_type type) { return 0; }
"""


def build(ggml: Path, folder: Path) -> ctypes.CDLL:
    (folder / "stubs.c").write_text(STUBS)
    lib = folder / "libquants.so"
    subprocess.run(["gcc", "-O1", "-fPIC", "-shared", "-std=gnu11", f"-I{ggml}/src", f"-I{ggml}/include",
                    f"-I{ggml}/src/ggml-cpu", str(ggml / "src/ggml-quants.c"), str(folder / "stubs.c"),
                    "-lm", "-o", str(lib)], check=True)
    return ctypes.CDLL(str(lib))


def reference_blocks(lib: ctypes.CDLL, name: str, rng: np.random.Generator, keep: int = 2):
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType  # noqa: PLC0415

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[name]]
    fn = getattr(lib, f"dequantize_row_{name.lower()[:-2] + '_K' if name.endswith('_K') else name.lower()}")
    raw = rng.integers(0, 256, (256, size), dtype=np.uint8)
    values = np.empty((256, block), np.float32)
    fn(raw.ctypes.data_as(ctypes.c_void_p), values.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(values.size))
    good = np.flatnonzero(np.isfinite(values).all(-1) & (np.abs(values).max(-1) > 0))[:keep]
    return raw[good], values[good]


def main() -> None:
    ggml = Path(sys.argv[1]).resolve()
    rng = np.random.default_rng(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(ggml, Path(tmp))
        for name in TYPES:
            out[f"{name}_bytes"], out[f"{name}_values"] = reference_blocks(lib, name, rng)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(TYPES)} types)")


if __name__ == "__main__":
    main()
