"""The default model from its GGUF against transformers loading the same file."""

from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.model import logits, sequence_forward
from rft_jax.sampling import SamplingParams, generate_ids

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CHAT = [
    {"role": "system", "content": "You are a careful math tutor."},
    {"role": "user", "content": "Sara has 3 boxes of 12 pencils. She gives away 7. How many are left?"},
    {"role": "assistant", "content": "3 * 12 = 36, and 36 - 7 = 29.\nANSWER: 29"},
    {"role": "user", "content": "Now double it, and explain briefly."},
]


@pytest.fixture(scope="module")
def hf_gguf(smollm2_gguf_path):
    folder, name = str(smollm2_gguf_path.parent), smollm2_gguf_path.name
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    return tok, model


def _strings(n: int = 300) -> list[str]:
    rng = random.Random(0)
    pieces = ["Hello, world!", "  leading spaces", "trailing   ", "tabs\tand\nnewlines\r\n", "12345678901234",
              "3.14159 + 2.71828 = 5.85987", "naïve café déjà vu", "日本語のテキスト", "emoji 🚀🔥 mixed",
              "def f(x):\n    return x ** 2  # square", "{\"json\": [1, 2, {\"k\": null}]}", "$1,234.56 (USD)",
              "<|im_start|>user\nhi<|im_end|>", "Ελληνικά και русский", "    \n\n\n    ", "a" * 50, "x=y+z;", "#### 42"]
    out = list(pieces)
    while len(out) < n:
        out.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))))
        out.append("".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 30))))
    return out[:n]


def test_tokenizer_ids_match_transformers(smollm2, hf_gguf):
    _, _, ours = smollm2
    theirs, _ = hf_gguf
    for text in _strings():
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False), repr(text)
        assert ours.decode(ours.encode(text), skip_special_tokens=False) == theirs.decode(
            theirs.encode(text, add_special_tokens=False))


def test_chat_template_matches_transformers(smollm2, hf_gguf):
    _, _, ours = smollm2
    theirs, _ = hf_gguf
    for messages in (CHAT, CHAT[1:], CHAT[:2]):
        expected = theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
        assert ours.apply_chat_template(messages) == list(expected)
    assert ours.eos_ids == (2,) and ours.pad_id == 2


def test_logits_match_transformers_gguf(smollm2, hf_gguf):
    cfg, params, tok = smollm2
    _, model = hf_gguf
    ids = tok.apply_chat_template(CHAT)
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
    x = jnp.asarray([ids])
    hidden, _ = sequence_forward(params, cfg, x, jnp.ones_like(x))
    ours = np.asarray(logits(params, cfg, hidden))[0]
    diff = float(np.abs(ours - expected).max())
    print(f"SmolLM2 GGUF: max abs logit difference vs transformers = {diff:.3e} over {len(ids)} positions")
    assert (ours.argmax(-1) == expected.argmax(-1)).all()
    assert diff < 5e-3


def test_greedy_generation_matches_transformers(smollm2, hf_gguf):
    cfg, params, tok = smollm2
    _, model = hf_gguf
    questions = ["What is 17 * 3?", "Name three colors.", "Tom has 4 apples and eats one. How many are left?"]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}]) for q in questions]
    out, _, _ = generate_ids(params, cfg, prompts, jax.random.key(0), sampling=SamplingParams(temperature=0.0),
                             num_samples=1, max_new_tokens=24, eos_ids=tok.eos_ids, pad_id=tok.pad_id)
    for i, ids in enumerate(prompts):
        with torch.no_grad():
            ref = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                                 eos_token_id=list(tok.eos_ids), pad_token_id=tok.pad_id)[0, len(ids):].tolist()
        n = int(out.lengths_BxG[i, 0])
        assert out.tokens_BxGxC[i, 0, :n].tolist() == ref[:n], questions[i]
        assert n == len(ref)


def test_cached_decoding_equals_full_forward(smollm2):
    """Log-probs recorded by the KV-cached sampler equal a fresh forward over prompt + completion."""
    cfg, params, tok = smollm2
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}]) for q in ("Count to five.", "Hi!")]
    out, ptoks, pmask = generate_ids(params, cfg, prompts, jax.random.key(3), sampling=SamplingParams(temperature=1.0),
                                     num_samples=2, max_new_tokens=16, eos_ids=tok.eos_ids, pad_id=tok.pad_id)
    for b in range(2):
        for g in range(2):
            n = int(out.lengths_BxG[b, g])
            seq = np.concatenate([ptoks[b], out.tokens_BxGxC[b, g, :n]])[None]
            mask = np.concatenate([pmask[b], np.ones(n, bool)])[None]
            hidden, _ = sequence_forward(params, cfg, jnp.asarray(seq), jnp.asarray(mask))
            logp = jax.nn.log_softmax(logits(params, cfg, hidden)[0], -1)
            p = ptoks.shape[1]
            expected = np.asarray(logp[p - 1:p - 1 + n][np.arange(n), seq[0, p:]])
            np.testing.assert_allclose(out.logprobs_BxGxC[b, g, :n], expected, atol=2e-4)
