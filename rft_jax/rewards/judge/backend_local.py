"""A judge run in-process: any model rft_jax loads, batched through the KV-cached sampler.

The model is loaded on first use and kept. Conversations are sampled in
batches of `batch_size` prompts; `n` samples per prompt share the prompt's
prefill (the sampler's group dimension). Greedy judging (temperature 0) asks
once and repeats the reply, since every sample would be the same.
"""

from __future__ import annotations

import threading

from rft_jax.data.example import flatten_messages


class LocalBackend:
    """Holds the loaded judge model; `complete` is the backend interface shared with OpenAIBackend."""

    def __init__(self, model: str, *, temperature: float = 0.0, max_tokens: int = 256, batch_size: int = 16,
                 seed: int = 0, loaded: tuple | None = None):
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.batch_size, self.seed = batch_size, seed
        self.lock = threading.Lock()
        self.loaded = loaded  # (cfg, params, tokenizer); tests pass a tiny model here
        self.calls = 0

    def identity(self) -> dict:
        return {"backend": "local", "model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": self.seed}

    def _load(self):
        with self.lock:
            if self.loaded is None:
                from rft_jax.model import load_model  # noqa: PLC0415
                from rft_jax.model.tokenizer import load_tokenizer  # noqa: PLC0415

                cfg, params = load_model(self.model)
                self.loaded = (cfg, params, load_tokenizer(self.model))
            return self.loaded

    def complete(self, conversations: list[list[dict]], n: int) -> list[list[str] | Exception]:
        import jax  # noqa: PLC0415  (lazy: `rft-jax reward` must start without JAX)

        from rft_jax.sampling import SamplingParams, decode_rollout, generate_ids  # noqa: PLC0415

        cfg, params, tok = self._load()
        greedy = self.temperature == 0.0
        out: list[list[str] | Exception] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start:start + self.batch_size]
            self.calls += 1
            key = jax.random.fold_in(jax.random.PRNGKey(self.seed), self.calls)
            try:
                prompts = [tok.apply_chat_template(flatten_messages(m)) for m in chunk]
                rollout, _, _ = generate_ids(params, cfg, prompts, key, sampling=SamplingParams(self.temperature),
                                             num_samples=1 if greedy else n, max_new_tokens=self.max_tokens,
                                             eos_ids=tok.eos_ids, pad_id=tok.pad_id)
                for row in decode_rollout(tok, rollout):
                    texts = [c.text for c in row]
                    out.append(texts * n if greedy else texts)
            except Exception as err:  # e.g. a prompt longer than the model's context: fail this chunk only
                out += [err] * len(chunk)
        return out
