"""Multi-turn decoding: resuming on the KV cache (ours) vs prefilling the conversation again every turn.

    python benchmarks/multiturn.py [--prompts 8] [--samples 4] [--turns 4] [--turn-tokens 32] [--tool-tokens 16]
                                   [--repeats 2]

Both run SmolLM2-135M-Instruct on chat-templated arithmetic prompts, temperature 1.0,
G samples per prompt, N turns of exactly `turn_tokens` sampled tokens, each followed by
`tool_tokens` of tool reply (random ids, as a tool's text would be). Turns are sized by
the token budget rather than by an end-of-turn token, so both do the same work whatever
the random model writes.

- ours: `begin_turns` once, then `run_turn` per turn, the functions the multi-turn rollout
  (`rft_jax/rollout/multiturn.py`) calls: the tool tokens are fed into the same cache and
  decoding goes on.
- re-prefill (the peer's shape: an agent loop that calls `generate` on the whole
  conversation after every tool reply): `generate_ids`, the product's single-turn
  sampler, on prompt + all turns and replies so far, G = 1 per conversation, every turn.

Prints the seconds of each (median of `repeats`, after a compile run), tokens/s of
sampled tokens, and the ratio. The cost the peer pays grows with the conversation
(every turn prefills everything before it); ours reads each token once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rft_jax.data.tasks.arithmetic import generate_arithmetic  # noqa: E402
from rft_jax.hugepages import reexec_with_hugepages  # noqa: E402
from rft_jax.model import DEFAULT_MODEL, load_model  # noqa: E402
from rft_jax.model.registry import resolve_compute_dtype  # noqa: E402
from rft_jax.model.tokenizer import load_tokenizer  # noqa: E402
from rft_jax.sampling import SamplingParams  # noqa: E402
from rft_jax.sampling.generate import NEW_TOKEN_BUCKETS, batch_bucket, bucket, generate_ids, sampler_prompts  # noqa: E402
from rft_jax.sampling.turns import NONE, begin_turns, run_turn  # noqa: E402

NO_EOS = (-1,)


def resumed(params, cfg, prompts, a, key) -> np.ndarray:
    """Ours: one prefill, then per turn the tool reply fed and `turn_tokens` sampled on the same cache."""
    b, g = len(prompts), a.samples
    rows = batch_bucket(b)
    per_turn = a.turn_tokens + a.tool_tokens
    slots = bucket(a.turns * per_turn, NEW_TOKEN_BUCKETS)
    p = sampler_prompts(prompts, 0, rows)
    sampling = SamplingParams(1.0)
    state = begin_turns(params, cfg, p.tokens_BxP, p.mask_BxP, key, params_sampling=sampling, num_samples=g,
                        slots=slots, pad_id=0, dtype=a.dtype, shared_1xS=p.shared_1xS, prefill_rows=p.prefill_rows)
    rng = np.random.default_rng(0)
    live = jnp.ones((rows, g), bool)
    for turn in range(a.turns):
        n_feed = 0 if turn == 0 else a.tool_tokens
        feed = jnp.asarray(rng.integers(100, 30000, (rows, g, max(n_feed, 1))), jnp.int32)
        budget = turn * per_turn + a.turn_tokens  # this turn ends after exactly turn_tokens sampled tokens
        state, _ = run_turn(params, cfg, state, feed, jnp.full((rows, g), n_feed, jnp.int32), live,
                            params_sampling=sampling, eos_ids=NO_EOS, pad_id=0, budget=budget, dtype=a.dtype)
    source = np.asarray(state.source_BxGxS)
    return (source != NONE).sum(-1)[:b]


def reprefilled(params, cfg, prompts, a, key) -> np.ndarray:
    """The peer's shape: every turn, the whole conversation so far through the single-turn sampler."""
    rng = np.random.default_rng(0)
    convs = [list(p) for p in prompts for _ in range(a.samples)]
    for turn in range(a.turns):
        if turn:
            convs = [c + rng.integers(100, 30000, a.tool_tokens).tolist() for c in convs]
        out, _, _ = generate_ids(params, cfg, convs, jax.random.fold_in(key, turn), sampling=SamplingParams(1.0),
                                 num_samples=1, max_new_tokens=a.turn_tokens, eos_ids=NO_EOS, pad_id=0,
                                 dtype=a.dtype)
        convs = [c + out.tokens_BxGxC[i, 0].tolist() for i, c in enumerate(convs)]
    return np.array([len(c) for c in convs]).reshape(len(prompts), a.samples) - np.array(
        [len(p) for p in prompts])[:, None]


def timed(fn, repeats) -> tuple[float, float, np.ndarray]:
    t = time.perf_counter()
    out = fn(0)
    compile_s = time.perf_counter() - t
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        fn(r + 1)
        times.append(time.perf_counter() - t)
    return statistics.median(times), compile_s, out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--turn-tokens", type=int, default=32)
    parser.add_argument("--tool-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    a = parser.parse_args(argv)
    reexec_with_hugepages()
    a.dtype = jnp.dtype(resolve_compute_dtype("auto"))
    cfg, params = load_model(DEFAULT_MODEL)
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    examples = generate_arithmetic(a.prompts, seed=123, levels=("one_step", "two_step"))
    prompts = [tokenizer.apply_chat_template(ex.prompt_messages) for ex in examples]
    ours_s, ours_compile, ours_len = timed(lambda k: resumed(params, cfg, prompts, a, jax.random.key(k)), a.repeats)
    peer_s, peer_compile, peer_len = timed(lambda k: reprefilled(params, cfg, prompts, a, jax.random.key(k)),
                                           a.repeats)
    sampled = a.prompts * a.samples * a.turns * a.turn_tokens
    expected = a.turns * a.turn_tokens + (a.turns - 1) * a.tool_tokens
    assert (ours_len == expected).all() and (peer_len == expected).all(), (ours_len, peer_len, expected)
    print(f"multi-turn decode, {jax.devices()[0].platform}, {a.dtype}: {a.prompts} prompts x G={a.samples}, "
          f"{a.turns} turns of {a.turn_tokens} sampled + {a.tool_tokens} tool tokens")
    print(f"  resume on the cache (ours)  {ours_s:7.2f} s  {sampled / ours_s:8.1f} sampled tok/s  "
          f"(compile {ours_compile:.0f} s)")
    print(f"  re-prefill every turn       {peer_s:7.2f} s  {sampled / peer_s:8.1f} sampled tok/s  "
          f"(compile {peer_compile:.0f} s)")
    print(f"  ratio: ours is {peer_s / ours_s:.2f}x the re-prefill loop's speed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
