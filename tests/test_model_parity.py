"""Our forward against transformers (torch CPU) on tiny random checkpoints."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.model import branch_forward, logits, sequence_forward
from rft_jax.model.weights_hf import load_hf_params
from tests.hf_tiny import make_tiny

torch = pytest.importorskip("torch")

CASES = [
    ("llama", False, None),
    ("llama", True, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 32}),
    ("llama", False, {"rope_type": "linear", "factor": 2.0}),
    ("qwen2", False, None),
    ("qwen2", True, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}),
    ("qwen3", False, None),
    ("qwen3", True, None),
]


def _left_padded_batch(vocab: int, lengths: list[int], seed: int = 0):
    rng = np.random.default_rng(seed)
    t = max(lengths)
    tokens = np.zeros((len(lengths), t), np.int64)
    mask = np.zeros((len(lengths), t), np.int64)
    for i, n in enumerate(lengths):
        tokens[i, t - n:] = rng.integers(3, vocab, n)
        mask[i, t - n:] = 1
    return tokens, mask


def _hf_logits(model, tokens, mask):
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                    position_ids=torch.tensor(positions))
    return out.logits.float().numpy()


@pytest.mark.parametrize("kind,tie,rope_scaling", CASES)
def test_logits_match_transformers_left_padded(tmp_path, kind, tie, rope_scaling):
    model = make_tiny(kind, tmp_path, tie=tie, rope_scaling=rope_scaling)
    cfg, params = load_hf_params(tmp_path)
    assert cfg.architecture == kind and cfg.tie_embeddings == tie
    tokens, mask = _left_padded_batch(cfg.vocab_size, [40, 23, 7])
    expected = _hf_logits(model, tokens, mask)
    hidden, _ = sequence_forward(params, cfg, jnp.asarray(tokens), jnp.asarray(mask))
    ours = np.asarray(logits(params, cfg, hidden))
    valid = mask.astype(bool)
    diff = np.abs(ours - expected)[valid].max()
    assert diff <= 1e-4, f"max abs logit difference {diff:.2e}"


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_branch_forward_matches_full_sequences(tmp_path, kind):
    """G continuations run against a shared prompt equal running prompt+continuation whole."""
    make_tiny(kind, tmp_path)
    cfg, params = load_hf_params(tmp_path)
    prompt, pmask = _left_padded_batch(cfg.vocab_size, [12, 5], seed=1)
    rng = np.random.default_rng(2)
    g, c = 3, 6
    cont = rng.integers(3, cfg.vocab_size, (2, g, c))
    _, prefix_kv = sequence_forward(params, cfg, jnp.asarray(prompt), jnp.asarray(pmask))
    h, _ = branch_forward(params, cfg, jnp.asarray(cont), prefix_kv, jnp.asarray(pmask))
    ours = np.asarray(logits(params, cfg, h))
    for b in range(2):
        for j in range(g):
            full = np.concatenate([prompt[b], cont[b, j]])[None]
            fmask = np.concatenate([pmask[b], np.ones(c, np.int64)])[None]
            hf, _ = sequence_forward(params, cfg, jnp.asarray(full), jnp.asarray(fmask))
            ref = np.asarray(logits(params, cfg, hf))[0, -c:]
            np.testing.assert_allclose(ours[b, j], ref, atol=1e-4)
