"""Real SmolLM2 behind the server: greedy text over HTTP equals the batch sampler's (about 30 s on CPU)."""

from __future__ import annotations

import jax
import openai
import pytest

from rft_jax.sampling import SamplingParams, decode_rollout, generate_ids
from rft_jax.serving import BackgroundServer, Engine, EngineConfig, make_app


@pytest.mark.slow  # the same property is in the default suite on tiny models (test_serving_engine.py)
def test_smollm2_served_greedy_matches_sampler(smollm2):
    cfg, params, tok = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    engine = Engine(params, cfg, eos_ids=tok.eos_ids, config=EngineConfig(slots=2, max_context=128)).start()
    try:
        with BackgroundServer(make_app(engine, tok, "smollm2")) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
            out = client.chat.completions.create(model="smollm2", messages=messages, temperature=0, max_tokens=12)
    finally:
        engine.stop()
    rollout, _, _ = generate_ids(params, cfg, [tok.apply_chat_template(messages)], jax.random.PRNGKey(0),
                                 sampling=SamplingParams(0.0), num_samples=1, max_new_tokens=12,
                                 eos_ids=tok.eos_ids, pad_id=tok.pad_id)
    expected = decode_rollout(tok, rollout)[0][0]
    assert out.choices[0].message.content == expected.text
    assert "Paris" in expected.text
