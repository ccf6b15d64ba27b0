"""A scripted tiny model for server and judge tests: random-free, it writes a chosen text then stops.

Attention and MLP outputs are zeroed, so the residual stream is the token's
embedding and the next token depends on the current token only. Each token of
the script gets its own embedding axis, and the unembedding maps that axis to
the following token: a Markov chain from the chat template's last prompt token
through the script to <|im_end|>. The server, sampler and tokenizer are real;
only the weights are chosen, so protocol tests can assert exact text.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.model import DEFAULT_MODEL, init_params
from rft_jax.model.config import ModelConfig


def smollm2_tokenizer():
    from rft_jax.model.tokenizer import load_tokenizer

    return load_tokenizer(DEFAULT_MODEL)


def scripted_model(tokenizer, text: str) -> tuple[ModelConfig, dict]:
    """(cfg, params) of a model that answers any chat prompt with exactly `text` (distinct tokens only)."""
    start = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])[-1]
    chain = [start, *tokenizer.encode(text), tokenizer.eos_ids[-1]]
    assert len(set(chain[:-1])) == len(chain) - 1, f"script {text!r} repeats a token"
    d = 64
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=d, intermediate_size=64, num_layers=1,
                      num_heads=4, num_kv_heads=2, head_dim=16, tie_embeddings=False, max_position_embeddings=2048)
    params = init_params(cfg, jax.random.PRNGKey(0))
    layers = dict(params["layers"])
    layers["o"] = {"w": jnp.zeros_like(layers["o"]["w"])}
    layers["down"] = {"w": jnp.zeros_like(layers["down"]["w"])}
    embed = np.asarray(params["embed"]).copy()
    unembed = np.zeros((d, cfg.vocab_size), np.float32)
    for axis, (token, nxt) in enumerate(zip(chain[:-1], chain[1:])):
        embed[token] = 0.0
        embed[token, axis] = 10.0
        unembed[axis, nxt] = 5.0
    return cfg, {**params, "layers": layers, "embed": jnp.asarray(embed), "unembed": jnp.asarray(unembed)}


def test_scripted_model_writes_its_script():
    from rft_jax.sampling import SamplingParams, decode_rollout, generate_ids

    tok = smollm2_tokenizer()
    cfg, params = scripted_model(tok, "Score: 7")
    prompt = tok.apply_chat_template([{"role": "user", "content": "Rate this."}])
    rollout, _, _ = generate_ids(params, cfg, [prompt], jax.random.PRNGKey(0), sampling=SamplingParams(1.0),
                                 num_samples=2, max_new_tokens=8, eos_ids=tok.eos_ids, pad_id=tok.pad_id)
    texts = [c.text for c in decode_rollout(tok, rollout)[0]]
    assert texts == ["Score: 7", "Score: 7"]
