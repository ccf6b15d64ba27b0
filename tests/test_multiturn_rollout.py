"""Multi-turn episodes: resuming on the KV cache, tool tokens masked from the loss, and the episode loop.

A tiny random model plays the policy. Its turns end on a set of frequent
"end-of-turn" ids, and a scripted parser and environment decide which turns
call tools, so the loop's bookkeeping is tested on shapes a random model makes
(rows of a group diverge, turns of every length, budgets running out).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.data.example import Example
from rft_jax.data.tool_calls import ParsedTurn, ToolCall
from rft_jax.environments import EnvironmentConfig
from rft_jax.environments.base import StepResult
from rft_jax.model import ModelConfig, init_params
from rft_jax.model.logprobs import completion_logprobs
from rft_jax.rollout import multiturn
from rft_jax.rollout.batch import pack_groups
from rft_jax.rollout.episode import Episode, Segment, Source
from rft_jax.rollout.metrics import agent_metrics
from rft_jax.sampling import SamplingParams
from rft_jax.sampling.generate import left_pad, sampler_prompts
from rft_jax.sampling.turns import NONE, POLICY, TOOL, begin_turns, run_turn

TINY = ModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8, max_position_embeddings=512)
PARAMS = init_params(TINY, jax.random.key(0), std=0.3)
END_OF_TURN = tuple(range(100, 140))  # ~13% of a random model's tokens: turns of every length


def _full_forward_logprobs(prompts, completions):
    """Log-probs of each completion token from one forward over the whole conversation (no cache)."""
    width = max(len(c) for row in completions for c in row)
    comp = np.zeros((len(prompts), len(completions[0]), width), np.int32)
    for b, row in enumerate(completions):
        for g, c in enumerate(row):
            comp[b, g, :len(c)] = c
    prompt, mask = left_pad(prompts, max(len(p) for p in prompts), 0, len(prompts))
    logp, _ = completion_logprobs(PARAMS, TINY, jnp.asarray(prompt), jnp.asarray(mask), jnp.asarray(comp))
    return np.asarray(logp)


def test_resuming_on_the_cache_gives_the_log_probs_of_a_fresh_prefill_of_the_conversation():
    prompts = [[2, 40, 41, 42], [2, 50, 51]]
    p = sampler_prompts(prompts, 0, 2)
    sampling = SamplingParams(1.0)
    state = begin_turns(PARAMS, TINY, p.tokens_BxP, p.mask_BxP, jax.random.key(1), params_sampling=sampling,
                        num_samples=3, slots=128, pad_id=0)
    rng = np.random.default_rng(0)
    live = np.ones((2, 3), bool)
    feed, feed_len = np.zeros((2, 3, 8), np.int32), np.zeros((2, 3), np.int32)
    for _ in range(4):
        state, ended = run_turn(PARAMS, TINY, state, jnp.asarray(feed), jnp.asarray(feed_len), jnp.asarray(live),
                                params_sampling=sampling, eos_ids=END_OF_TURN, pad_id=0, budget=60)
        live &= np.asarray(ended)
        feed_len = rng.integers(1, 9, (2, 3)).astype(np.int32)  # tool replies of different lengths per row
        feed = rng.integers(3, 99, (2, 3, 8)).astype(np.int32)
    source, tokens, logprobs = (np.asarray(x) for x in (state.source_BxGxS, state.tokens_BxGxS, state.logprobs_BxGxS))
    assert (source == TOOL).any() and (source == NONE).any()  # rows fed tools and idled while others decoded
    completions = [[tokens[b, g][source[b, g] != NONE] for g in range(3)] for b in range(2)]
    full = _full_forward_logprobs(prompts, completions)
    checked = 0
    for b in range(2):
        for g in range(3):
            own = source[b, g] != NONE
            policy = source[b, g][own] == POLICY
            np.testing.assert_allclose(full[b, g, :own.sum()][policy], logprobs[b, g][own][policy], atol=1e-5)
            assert (logprobs[b, g][own][~policy] == 0).all()
            checked += policy.sum()
    assert checked > 50


def test_rows_stop_at_their_token_budget_and_nothing_is_written_after_it():
    p = sampler_prompts([[2, 40, 41]], 0, 1)
    state = begin_turns(PARAMS, TINY, p.tokens_BxP, p.mask_BxP, jax.random.key(2), params_sampling=SamplingParams(1.0),
                        num_samples=4, slots=64, pad_id=0)
    state, ended = run_turn(PARAMS, TINY, state, jnp.zeros((1, 4, 1), jnp.int32), jnp.zeros((1, 4), jnp.int32),
                            jnp.ones((1, 4), bool), params_sampling=SamplingParams(1.0), eos_ids=(-1,), pad_id=0,
                            budget=7)
    np.testing.assert_array_equal(state.length_BxG, 7)
    assert not np.asarray(ended).any()
    assert ((np.asarray(state.source_BxGxS) != NONE).sum(-1) == 7).all()


# --- the episode loop, with a scripted parser and environment -------------------------------------------------


class _Tokenizer:
    eos_ids = END_OF_TURN
    pad_id = 0

    def encode(self, text: str) -> list[int]:
        return [3 + (ord(ch) % 90) for ch in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join(str(int(i)) for i in ids if not (skip_special_tokens and int(i) in END_OF_TURN))


class _Env:
    """Answers every call with a reply whose length depends on the call, and counts what it saw."""

    tools = [{"type": "function", "function": {"name": "echo", "parameters": {"type": "object"}}}]

    def __init__(self):
        self.steps = 0

    def reset(self, example):
        return []

    def step(self, turn: ParsedTurn) -> StepResult:
        self.steps += 1
        messages = [{"role": "tool", "tool_call_id": c.id, "name": c.name, "content": "r" * (1 + c.arguments["n"])}
                    for c in turn.calls]
        messages += [{"role": "tool", "content": f"Error: {e}"} for e in turn.errors]
        return StepResult(messages, reward=0.5, errors=len(turn.errors), seconds=0.01)

    def close(self):
        pass


def _scripted(monkeypatch, calls_in_turn):
    """Turn text -> a parse decided by a hash of the text: a call, a malformed call, or a final answer."""

    def parse(text, fmt="hermes"):
        h = sum(int(t) for t in text.split()) if text else 0
        kind = calls_in_turn(h)
        if kind == "call":
            return ParsedTurn("", (ToolCall("echo", {"n": h % 11}, "call_0"),), ())
        if kind == "malformed":
            return ParsedTurn("", (), ("the call is not JSON",))
        return ParsedTurn(f"answer {h}", (), ())

    monkeypatch.setattr(multiturn, "parse_tool_calls", parse)
    monkeypatch.setattr(multiturn, "tool_format", lambda tok: "hermes")
    monkeypatch.setattr(multiturn, "tool_turn_text", lambda tok, msgs, tools=None: "|".join(m["content"] for m in msgs))
    monkeypatch.setattr(multiturn, "render_prompt", lambda tok, msgs, tools, plan: [2, 40 + len(msgs[-1]["content"]), 7])
    monkeypatch.setattr(multiturn, "make_environment", lambda cfg, ex: _Env())


def _agent_episodes(monkeypatch, *, max_turns=4, budget=96, seed=0, kinds=lambda h: ("call", "malformed", "final")[h % 3]):
    _scripted(monkeypatch, kinds)
    examples = [Example(f"e{i}", [{"role": "user", "content": "q" * (i + 1)}]) for i in range(3)]
    agent = multiturn.AgentConfig(EnvironmentConfig(name="calculator"), max_turns=max_turns, max_episode_tokens=budget,
                                  turn_reward_weight=0.1)
    return multiturn.generate_agent_episodes(PARAMS, TINY, _Tokenizer(), examples, jax.random.key(seed),
                                             sampling=SamplingParams(1.0), num_samples=4, agent=agent)


@pytest.mark.parametrize("seed", range(3))
def test_every_loss_token_is_policy_sampled_and_every_tool_token_is_masked_on_random_episodes(monkeypatch, seed):
    groups = _agent_episodes(monkeypatch, seed=seed, max_turns=1 + seed % 4, budget=(48, 96, 160)[seed % 3])
    for group in groups:
        for e in group:
            sources = np.concatenate([np.full(len(s), s.source) for s in e.completion])
            assert len(sources) == len(e.completion_ids) == len(e.loss_mask)
            np.testing.assert_array_equal(e.loss_mask, sources == Source.POLICY)
            assert not e.loss_mask[sources == Source.TOOL].any()
            assert (e.behaviour_logprobs[sources == Source.TOOL] == 0).all()
            assert (e.behaviour_logprobs[e.loss_mask] < 0).all()
            assert len(e.completion_ids) <= (48, 96, 160)[seed % 3]
            assert e.turns <= 1 + seed % 4 and e.finish_reason in ("stop", "turns", "length")
    batch = pack_groups(groups, np.zeros((3, 4), np.float32), pad_id=0, max_completion_tokens=256)
    loss, real = np.asarray(batch.loss_mask_BxGxC), np.asarray(batch.completion_mask_BxGxC)
    assert (loss <= real).all()
    for i, group in enumerate(groups):
        for j, e in enumerate(group):
            np.testing.assert_array_equal(loss[i, j, :len(e.loss_mask)], e.loss_mask)


def test_episode_log_probs_equal_a_full_forward_over_prompt_turns_and_tool_results(monkeypatch):
    groups = _agent_episodes(monkeypatch, seed=11, max_turns=4, budget=128)
    prompts = [g[0].prompt_ids.tolist() for g in groups]
    full = _full_forward_logprobs(prompts, [[e.completion_ids for e in g] for g in groups])
    tool_tokens = 0
    for b, group in enumerate(groups):
        for g, e in enumerate(group):
            n = len(e.completion_ids)
            np.testing.assert_allclose(full[b, g, :n][e.loss_mask], e.behaviour_logprobs[e.loss_mask], atol=1e-5)
            tool_tokens += int((~e.loss_mask).sum())
    assert tool_tokens > 0


def test_the_samples_of_a_group_diverge_and_the_episode_ends_are_counted(monkeypatch):
    groups = _agent_episodes(monkeypatch, seed=3, max_turns=3, budget=160)
    for group in groups:
        shapes = {tuple(s.source for s in e.completion) for e in group}
        assert len(shapes) > 1 or len({len(e.completion_ids) for e in group}) > 1
    episodes = [e for g in groups for e in g]
    m = agent_metrics(episodes)
    assert m["agent/turns/mean"] == pytest.approx(np.mean([e.turns for e in episodes]))
    assert m["agent/finished_rate"] == pytest.approx(np.mean([e.finish_reason == "stop" for e in episodes]))
    assert m["agent/tool_errors/mean"] > 0 and m["agent/tool_calls/mean"] > 0
    # A final answer is what the reward reads; an episode that called tools had its tool turn fed back.
    for e in episodes:
        if e.finish_reason == "stop":
            assert e.text.startswith("answer ")
        assert e.tool_calls + e.tool_errors <= e.turns
        # each environment step's reply was fed back, unless the budget had no room left for it
        fed = sum(s.source == Source.TOOL for s in e.completion)
        assert fed == len(e.turn_rewards) or (e.finish_reason == "length" and fed == len(e.turn_rewards) - 1)


def test_a_final_answer_on_the_first_turn_ends_the_episode_without_the_environment(monkeypatch):
    groups = _agent_episodes(monkeypatch, kinds=lambda h: "final")
    for e in (e for g in groups for e in g):
        if e.finish_reason == "stop":
            assert e.turns == 1 and e.tool_calls == 0 and not e.turn_rewards
            assert [s.source for s in e.completion] == [Source.POLICY]


def test_the_turn_cap_ends_an_episode_that_keeps_calling_tools(monkeypatch):
    groups = _agent_episodes(monkeypatch, kinds=lambda h: "call", max_turns=2, budget=400)
    finished = [e for g in groups for e in g if e.finish_reason != "length"]
    assert finished and all(e.finish_reason == "turns" and e.turns == 2 for e in finished)
    assert all(sum(s.source == Source.TOOL for s in e.completion) == 1 for e in finished)
    # the call in the capped turn counts, though it is not run (before the fix a cap of 1 counted no calls)
    assert all(e.tool_calls == 2 for e in finished)


def test_turn_shaping_adds_the_weighted_environment_rewards(monkeypatch):
    groups = _agent_episodes(monkeypatch, seed=5)
    for e in (e for g in groups for e in g):
        e.reward = 1.0
    multiturn.shape_turn_rewards(groups, dataclasses.replace(multiturn.AgentConfig(), turn_reward_weight=0.1))
    for e in (e for g in groups for e in g):
        assert e.reward == pytest.approx(1.0 + 0.1 * sum(e.turn_rewards))


def test_a_segment_list_of_any_shape_masks_exactly_its_policy_tokens():
    rng = np.random.default_rng(0)
    ex = Example("e", [{"role": "user", "content": "q"}])
    for _ in range(200):
        segments = [Segment(Source.PROMPT, rng.integers(0, 9, rng.integers(1, 5)))]
        for _ in range(rng.integers(1, 8)):
            n = int(rng.integers(0, 6))
            kind = Source(rng.choice([Source.POLICY, Source.TOOL, Source.FORCED]))
            lp = -rng.random(n).astype(np.float32) - 0.01 if kind == Source.POLICY else None
            segments.append(Segment(kind, rng.integers(0, 9, n), lp))
        e = Episode(ex, segments, 0, "stop")
        expected = np.concatenate([np.full(len(s), s.source == Source.POLICY) for s in segments[1:]])
        np.testing.assert_array_equal(e.loss_mask, expected)
        assert e.num_policy_tokens == expected.sum()
        assert (e.behaviour_logprobs[~expected] == 0).all() and (e.behaviour_logprobs[expected] < 0).all()
