"""Lean weight loading (issue 22, item 4): safetensors without torch, shards, layer-by-layer placement, GGUF types.

Tiny models only, written here: a bf16 safetensors Llama (single file and sharded) and a GGUF Llama
whose tensors use K, IQ and legacy quantisations. Each test says the behaviour it pins.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from rft_jax.model import placement
from rft_jax.model.config import ModelConfig, config_to_hf
from rft_jax.model.params import WeightsError, assemble_params, init_params, layer_shapes
from rft_jax.model.registry import load_model
from rft_jax.model.safetensors_reader import read_header, read_rows, read_tensor
from rft_jax.model.weights_hf import load_hf_params, save_hf_params

BF16 = ml_dtypes.bfloat16
CFG = ModelConfig(architecture="llama", vocab_size=96, hidden_size=64, intermediate_size=112, num_layers=3,
                  num_heads=4, num_kv_heads=2, head_dim=16, tie_embeddings=False)
REFERENCE = Path(__file__).parent / "data" / "gguf_dequant_reference.npz"


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The format by hand (8-byte header length, JSON header, bytes), so no library's writer is trusted."""
    codes = {np.dtype(np.float32): "F32", np.dtype(BF16): "BF16", np.dtype(np.float16): "F16", np.dtype(np.int32): "I32"}
    header, offset = {}, 0
    for name, x in tensors.items():
        header[name] = {"dtype": codes[x.dtype], "shape": list(x.shape), "data_offsets": [offset, offset + x.nbytes]}
        offset += x.nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for x in tensors.values():
            f.write(np.ascontiguousarray(x).tobytes())


def tree_equal(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        x.dtype == y.dtype and np.array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def hf_bf16(tmp_path_factory):
    """(folder, params rounded to bf16): a bf16 model.safetensors written by the product's exporter."""
    folder = tmp_path_factory.mktemp("hf_bf16")
    params = init_params(CFG, jax.random.key(0), std=0.5)
    params["final_norm"] = params["final_norm"] * 1.5  # norms that are not all ones
    save_hf_params(folder, CFG, params, dtype="bfloat16")
    (folder / "config.json").write_text(json.dumps(config_to_hf(CFG)))
    return folder, jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), params)


@pytest.fixture(scope="module")
def hf_sharded(hf_bf16, tmp_path_factory):
    """The same checkpoint as 3 shards and an index.json, written by hand."""
    folder = tmp_path_factory.mktemp("hf_sharded")
    tensors = {name: read_tensor(info) for name, info in read_header(hf_bf16[0] / "model.safetensors").items()}
    names = sorted(tensors)
    weight_map = {}
    for k in range(3):
        shard = f"model-{k + 1:05d}-of-00003.safetensors"
        part = names[k::3]
        write_safetensors(folder / shard, {n: tensors[n] for n in part})
        weight_map.update(dict.fromkeys(part, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text((hf_bf16[0] / "config.json").read_text())
    return folder


def test_bf16_safetensors_load_without_torch(hf_bf16, monkeypatch):
    """bf16 files load on the numpy path: with `import torch` failing, values equal the bf16 params exactly."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError):
        import torch  # noqa: F401
    folder, expected = hf_bf16
    _, as_bf16 = load_model(str(folder), dtype=jnp.bfloat16)  # the CLIs' entry point, unchanged
    assert tree_equal(as_bf16, expected)
    _, as_f32 = load_hf_params(folder, dtype=jnp.float32)
    assert tree_equal(as_f32, jax.tree.map(lambda x: x.astype(jnp.float32), expected))


def test_sharded_checkpoint_equals_single_file(hf_bf16, hf_sharded):
    _, single = load_hf_params(hf_bf16[0], dtype=jnp.bfloat16)
    _, sharded = load_hf_params(hf_sharded, dtype=jnp.bfloat16)
    assert tree_equal(sharded, single)


def test_missing_shard_names_it(hf_sharded, tmp_path):
    for f in hf_sharded.iterdir():
        if not f.name.startswith("model-00002"):
            (tmp_path / f.name).write_bytes(f.read_bytes())
    with pytest.raises(FileNotFoundError, match="model-00002-of-00003.safetensors"):
        load_hf_params(tmp_path)


def test_damaged_safetensors_errors_name_file_and_fix(hf_bf16, tmp_path):
    data = (hf_bf16[0] / "model.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-100])
    with pytest.raises(WeightsError, match=r"cut\.safetensors: truncated: tensor .* re-download"):
        read_header(cut)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((20).to_bytes(8, "little") + b"{not json at all}   " + b"\0" * 8)
    with pytest.raises(WeightsError, match=r"bad\.safetensors: header is not JSON"):
        read_header(bad)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\1\2")
    with pytest.raises(WeightsError, match="truncated"):
        read_header(tiny)
    fp8 = tmp_path / "fp8.safetensors"
    header = json.dumps({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}).encode()
    fp8.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(WeightsError, match=r"tensor 'w' has dtype F8_E4M3.*convert the checkpoint"):
        read_header(fp8)


def test_reader_rows_and_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((7, 5), np.float32).astype(BF16), "b": rng.standard_normal((3, 2, 4), np.float32),
               "c": np.arange(6, dtype=np.int32), "d": np.float16(2.5) * np.ones((2, 3), np.float16)}
    path = tmp_path / "x.safetensors"
    write_safetensors(path, tensors)
    infos = read_header(path)
    for name, x in tensors.items():
        got = read_tensor(infos[name])
        assert got.dtype == x.dtype and np.array_equal(got, x)
    assert np.array_equal(read_rows(infos["a"], 2, 5), tensors["a"][2:5])
    assert np.array_equal(read_rows(infos["b"], 1, 3), tensors["b"][1:3])


def _random_layers(cfg, rng):
    return [{name: rng.standard_normal(shape, np.float32) for name, shape in layer_shapes(cfg).items()}
            for _ in range(cfg.num_layers)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_by_layer_placement_equals_stack_then_cast(dtype, monkeypatch):
    """The streamed placement gives what stacking everything on the host and casting gave (the old way),
    also when the embeddings go in several row blocks, transposed for the unembedding."""
    monkeypatch.setattr(placement, "BLOCK_BYTES", 1024)  # 4 rows of 64 floats per block: 24 blocks
    rng = np.random.default_rng(1)
    layers = _random_layers(CFG, rng)
    embed, out = rng.standard_normal((2, CFG.vocab_size, CFG.hidden_size), np.float32)
    top = {"embed": placement.RowBlocks(embed.shape, lambda a, b: embed[a:b]),
           "final_norm": rng.standard_normal(CFG.hidden_size, np.float32),
           "unembed": placement.RowBlocks(out.shape, lambda a, b: out[a:b], transposed=True)}
    params = assemble_params(CFG, top, iter(layers), dtype)  # a generator, as read_layers gives
    expected_layers = {name: jnp.asarray(np.stack([lay[name] for lay in layers]), dtype) for name in layer_shapes(CFG)}
    assert params["embed"].dtype == dtype and np.array_equal(params["embed"], jnp.asarray(embed, dtype))
    assert np.array_equal(params["unembed"], jnp.asarray(out.T, dtype))
    assert np.array_equal(params["final_norm"], jnp.asarray(top["final_norm"], dtype))
    assert np.array_equal(params["layers"]["q"]["w"], expected_layers["q.w"])
    assert np.array_equal(params["layers"]["attn_norm"], expected_layers["attn_norm"])
    assert np.array_equal(params["layers"]["down"]["w"], expected_layers["down.w"])
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(dtype)}


def test_placement_errors_name_the_tensor():
    rng = np.random.default_rng(2)
    top = {"embed": np.zeros((CFG.vocab_size, CFG.hidden_size), np.float32), "final_norm": np.zeros(CFG.hidden_size),
           "unembed": np.zeros((CFG.hidden_size, CFG.vocab_size), np.float32)}
    layers = _random_layers(CFG, rng)
    layers[1]["up.w"] = np.zeros((3, 3), np.float32)
    with pytest.raises(WeightsError, match=r"tensor layers\.1\.up\.w has shape \(3, 3\), config expects \(64, 112\)"):
        assemble_params(CFG, top, iter(layers), source="ckpt")
    with pytest.raises(WeightsError, match="ckpt: found 2 layers, config says 3"):
        assemble_params(CFG, top, iter(_random_layers(CFG, rng)[:2]), source="ckpt")
    with pytest.raises(WeightsError, match="ckpt: found 2 layers, config says 3"):
        assemble_params(CFG, top, _random_layers(CFG, rng)[:2], source="ckpt")  # a list is checked up front
    with pytest.raises(WeightsError, match="found more than 3 layers"):
        assemble_params(CFG, top, iter(_random_layers(CFG, rng) * 2), source="ckpt")


# ---- GGUF: quantisation types against ggml's definitions, and a file whose tensors use them ----

GOLDEN = sorted(k[: -len("_bytes")] for k in np.load(REFERENCE).files if k.endswith("_bytes"))
ROUND_TRIP_TOL = {"Q4_0": 0.13, "Q4_1": 0.07, "Q5_0": 0.07, "Q5_1": 0.035, "Q8_0": 0.005, "BF16": 0.004, "MXFP4": 0.25}
GGUF_CFG = ModelConfig(architecture="llama", vocab_size=64, hidden_size=256, intermediate_size=256, num_layers=4,
                       num_heads=4, num_kv_heads=2, head_dim=64, tie_embeddings=False, max_position_embeddings=128,
                       rms_norm_eps=float(np.float32(1e-5)))  # GGUF stores it as float32


def test_every_supported_type_has_a_reference_check():
    from rft_jax.model.weights_gguf import SUPPORTED_QUANT_TYPES

    floats_and_mxfp4 = {"F32", "F16", "BF16", "MXFP4"}  # numpy views, and the ml_dtypes test below
    assert set(SUPPORTED_QUANT_TYPES) - floats_and_mxfp4 == set(GOLDEN)


@pytest.mark.parametrize("name", GOLDEN)
def test_dequantize_matches_ggml_reference(name):
    """Blocks dequantize bit for bit to what ggml's C `dequantize_row_*` gave (tests/data/make_gguf_dequant_reference.py)."""
    from gguf import GGMLQuantizationType, quants

    ref = np.load(REFERENCE)
    got = quants.dequantize(ref[f"{name}_bytes"], GGMLQuantizationType[name])
    assert np.array_equal(got.reshape(ref[f"{name}_values"].shape), ref[f"{name}_values"])


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_TOL) + ["TQ1_0", "TQ2_0"])
def test_quantize_round_trip(name):
    """Types the gguf package can also write: values come back within a step of the format (a fraction of each
    block's max: 4 bits give 1/8 where the clamp of the signed types bites, 1/16 elsewhere)."""
    from gguf import GGMLQuantizationType, quants

    qtype, rng = GGMLQuantizationType[name], np.random.default_rng(3)
    if name.startswith("TQ"):  # ternary formats hold {-1, 0, 1} times a scale exactly
        x = 0.5 * rng.integers(-1, 2, (4, 256)).astype(np.float32)
        assert np.array_equal(quants.dequantize(quants.quantize(x, qtype), qtype), x)
        return
    x = rng.standard_normal((4, 256), np.float32)
    y = quants.dequantize(quants.quantize(x, qtype), qtype)
    block = quants._type_traits[qtype].block_size if name != "BF16" else 1
    absmax = np.abs(x).reshape(4, -1, block).max(-1, keepdims=True)
    assert (np.abs(y - x).reshape(4, -1, block) <= ROUND_TRIP_TOL[name] * absmax + 1e-6).all()


def test_mxfp4_matches_ocp_definition():
    """MXFP4 (no ggml reference in the checked-in file): value = E8M0 scale x E2M1 code, by ml_dtypes' types."""
    from gguf import GGMLQuantizationType, quants

    rng = np.random.default_rng(4)
    blocks = rng.integers(0, 256, (8, 17), dtype=np.uint8)
    blocks[:, 0] = rng.integers(100, 150, 8)  # shared exponents around 2^0
    scale = blocks[:, :1].view(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    codes = np.concatenate([blocks[:, 1:] & 0x0F, blocks[:, 1:] >> 4], axis=1)  # low nibbles first, as ggml
    expected = scale * codes.view(ml_dtypes.float4_e2m1fn).astype(np.float32)
    assert np.array_equal(quants.dequantize(blocks, GGMLQuantizationType.MXFP4), expected)


def _quantized(name: str, x_shape: tuple[int, int], rng) -> tuple[np.ndarray, np.ndarray]:
    """(bytes or floats to store, the float32 values they stand for) for one tensor of type `name`."""
    from gguf import GGMLQuantizationType, quants

    qtype = GGMLQuantizationType[name]
    if name in ("F32", "F16"):
        x = rng.standard_normal(x_shape, np.float32).astype(name.lower().replace("f", "float"))
        return x, x.astype(np.float32)
    if name in GOLDEN:  # rows of the reference blocks, picked at random
        ref = np.load(REFERENCE)[f"{name}_bytes"]
        n_blocks = x_shape[0] * x_shape[1] // quants._type_traits[qtype].block_size
        raw = ref[rng.integers(0, len(ref), n_blocks)].reshape(x_shape[0], -1)
    else:
        raw = quants.quantize(rng.standard_normal(x_shape, np.float32), qtype)
    return raw, quants.dequantize(raw, qtype)


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    """(path, {tensor name: float32 values}) of a 4-layer Llama GGUF whose 30 weight tensors cycle through every
    supported type."""
    import gguf

    from rft_jax.model.weights_gguf import SUPPORTED_QUANT_TYPES

    cfg, rng = GGUF_CFG, np.random.default_rng(5)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_layers)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(cfg.vocab_size)
    w.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])
    types = iter(SUPPORTED_QUANT_TYPES * 2)
    out_in = {"attn_q": (256, 256), "attn_k": (128, 256), "attn_v": (128, 256), "attn_output": (256, 256),
              "ffn_gate": (256, 256), "ffn_up": (256, 256), "ffn_down": (256, 256)}  # GGUF [out, in], as HF
    weights = {"token_embd.weight": (cfg.vocab_size, 256), "output.weight": (cfg.vocab_size, 256)}
    weights |= {f"blk.{i}.{p}.weight": shape for i in range(cfg.num_layers) for p, shape in out_in.items()}
    values = {}
    for name, shape in weights.items():
        qtype = next(types)
        stored, values[name] = _quantized(qtype, shape, rng)
        w.add_tensor(name, stored, raw_dtype=None if qtype in ("F32", "F16") else gguf.GGMLQuantizationType[qtype])
    for name in ["output_norm.weight"] + [f"blk.{i}.{n}.weight" for i in range(cfg.num_layers) for n in ("attn_norm", "ffn_norm")]:
        values[name] = rng.standard_normal(cfg.hidden_size, np.float32)
        w.add_tensor(name, values[name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert len(weights) > len(SUPPORTED_QUANT_TYPES)
    return path, values


def test_gguf_loads_every_type_block_by_block(gguf_file, monkeypatch):
    from rft_jax.model.weights_gguf import _unpermute_qk, load_gguf_params, read_gguf_config

    monkeypatch.setattr(placement, "BLOCK_BYTES", 4096)  # the embeddings in 16 blocks of 4 rows
    path, values = gguf_file
    assert read_gguf_config(path) == GGUF_CFG
    cfg, params = load_gguf_params(path, dtype=jnp.float32)
    assert np.array_equal(params["embed"], values["token_embd.weight"])
    assert np.array_equal(params["unembed"], values["output.weight"].T)
    assert np.array_equal(params["final_norm"], values["output_norm.weight"])
    ours = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output", "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}
    heads = {"q": cfg.num_heads, "k": cfg.num_kv_heads}
    for i in range(cfg.num_layers):
        for key, theirs in ours.items():
            w = values[f"blk.{i}.{theirs}.weight"]
            w = _unpermute_qk(w, heads[key]) if key in heads else w
            assert np.array_equal(params["layers"][key]["w"][i], w.T), (i, key)
        assert np.array_equal(params["layers"]["mlp_norm"][i], values[f"blk.{i}.ffn_norm.weight"])
    _, as_bf16 = load_gguf_params(path, dtype=jnp.bfloat16)
    assert tree_equal(as_bf16, jax.tree.map(lambda x: x.astype(jnp.bfloat16), params))


def test_gguf_header_matches_the_gguf_package(gguf_file):
    import gguf

    from rft_jax.model.weights_gguf import read_gguf_metadata

    path, _ = gguf_file
    theirs = {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items() if not k.startswith("GGUF.")}
    assert read_gguf_metadata(path) == theirs


def test_gguf_unsupported_type_and_truncation_are_actionable(gguf_file, tmp_path):
    import gguf

    from rft_jax.model.weights_gguf import load_gguf_params

    path, _ = gguf_file
    w = gguf.GGUFWriter(str(tmp_path / "nvfp4.gguf"), "llama")
    w.add_tensor("blk.0.attn_q.weight", np.zeros((4, 36), np.uint8), raw_dtype=gguf.GGMLQuantizationType.NVFP4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(WeightsError, match=r"'blk\.0\.attn_q\.weight' uses quantization NVFP4.*llama-quantize"):
        load_gguf_params(tmp_path / "nvfp4.gguf", cfg=GGUF_CFG)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(WeightsError, match=r"cut\.gguf: truncated: tensor .* re-download"):
        load_gguf_params(cut)
