"""Agent episodes: up to N policy turns with tool results between them, decoded on one KV cache.

Each prompt's G samples run in their own environment (a fresh one per
episode, `rft_jax.environments.make_environment`). After every policy turn
the host parses the turn's tool calls in the template's format
(`rft_jax.data.tool_calls`), the environment answers them, and the answer
goes back to the model as the tool-role tokens its chat template writes
(`tool_turn_text`): decoding resumes on the same cache
(`rft_jax.sampling.turns`). An episode ends with a turn that calls no tool
(its final answer, which the reward reads), at the turn cap, or when its
token budget (policy and tool tokens together) runs out. Only the policy's
tokens carry a loss: the episode's TOOL segments are context.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.data.example import Example, flatten_messages
from rft_jax.data.reasoning import render_prompt
from rft_jax.data.tool_calls import ParsedTurn, parse_tool_calls, tool_format
from rft_jax.data.tool_prompt import tool_turn_text
from rft_jax.environments import make_environment
from rft_jax.model.config import ModelConfig
from rft_jax.rollout.agent_config import AgentConfig
from rft_jax.rollout.episode import Episode, Segment, Source
from rft_jax.sampling.generate import NEW_TOKEN_BUCKETS, batch_bucket, bucket, sampler_prompts
from rft_jax.sampling.processors import SamplingParams
from rft_jax.sampling.turns import POLICY, begin_turns, run_turn


@dataclasses.dataclass
class _Row:
    """One episode being built."""

    example: Example
    env: object
    segments: list[Segment]
    live: bool = True
    turns: int = 0
    finish_reason: str = "length"
    answer: str = ""
    tool_calls: int = 0
    tool_errors: int = 0
    env_seconds: float = 0.0
    turn_rewards: list[float] = dataclasses.field(default_factory=list)


def episode_tools(example: Example, env) -> list | None:
    """The tools the prompt shows: the example's own, else the environment's."""
    return example.tools if example.tools else (getattr(env, "tools", None) or None)


def agent_prompt_ids(tokenizer, example: Example, env) -> list[int]:
    """The prompt through the one renderer (tools never dropped), after the environment's opening messages."""
    opening = env.reset(example)
    messages = flatten_messages(example.prompt_messages) + list(opening or [])
    return render_prompt(tokenizer, messages, episode_tools(example, env), None)


def _turn_tokens(state, b: int, g: int, start: int, end: int):
    """Row (b, g)'s own slots in [start, end): tokens, log-probs and sources of what it wrote."""
    src = state["source"][b, g, start:end]
    keep = src != 0
    return state["tokens"][b, g, start:end][keep], state["logprobs"][b, g, start:end][keep], src[keep]


def _segments(tokens, logprobs, sources) -> list[Segment]:
    out = []
    cuts = [0, *(np.flatnonzero(sources[1:] != sources[:-1]) + 1).tolist(), len(sources)]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if hi <= lo:
            continue
        if sources[lo] == POLICY:
            out.append(Segment(Source.POLICY, tokens[lo:hi].astype(np.int32), logprobs[lo:hi].astype(np.float32)))
        else:
            out.append(Segment(Source.TOOL, tokens[lo:hi].astype(np.int32)))
    return out


def _end_turn(row: _Row, parsed: ParsedTurn, turn: int, agent: AgentConfig, tokenizer, tools, length: int,
              budget: int) -> list[int]:
    """Decides what follows a finished policy turn; returns the tool tokens to feed (none: the episode ends)."""
    row.turns = turn + 1
    row.answer = parsed.content
    if not parsed.calls and not parsed.errors:
        row.live, row.finish_reason = False, "stop"
        return []
    row.tool_calls += len(parsed.calls)
    if row.turns >= agent.max_turns:  # counted, not run: nothing would read the results
        row.tool_errors += len(parsed.errors)
        row.live, row.finish_reason = False, "turns"
        return []
    result = row.env.step(parsed)
    row.tool_errors += result.errors
    row.env_seconds += result.seconds
    row.turn_rewards.append(float(result.reward))
    if result.done:
        row.live, row.finish_reason = False, "stop"
        return []
    feed = tokenizer.encode(tool_turn_text(tokenizer, result.messages, tools))
    if length + len(feed) >= budget:  # no room left to read the result and answer
        row.live, row.finish_reason = False, "length"
        return []
    return feed


def generate_agent_episodes(params: dict, cfg: ModelConfig, tokenizer, examples: list[Example], key: jax.Array, *,
                            sampling: SamplingParams, num_samples: int, agent: AgentConfig,
                            lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32,
                            policy_version: int = 0) -> list[list[Episode]]:
    """G multi-turn episodes per example; each episode's `text` is its final answer (what the reward reads)."""
    b_real, g = len(examples), num_samples
    fmt = tool_format(tokenizer) if agent.tool_format == "auto" else agent.tool_format
    rows = [[_Row(ex, make_environment(agent.environment, ex), []) for _ in range(g)] for ex in examples]
    try:
        return _run_episodes(params, cfg, tokenizer, rows, key, sampling=sampling, agent=agent, fmt=fmt, lora=lora,
                             lora_scale=lora_scale, dtype=dtype, policy_version=policy_version, b_real=b_real)
    finally:
        for row in (r for group in rows for r in group):
            try:
                row.env.close()
            except Exception:  # noqa: BLE001 (closing is best effort; the episodes are already built)
                pass


def _run_episodes(params, cfg, tokenizer, rows, key, *, sampling, agent, fmt, lora, lora_scale, dtype,
                  policy_version, b_real):
    g = len(rows[0])
    prompts = []
    for group in rows:
        ids = [agent_prompt_ids(tokenizer, r.example, r.env) for r in group]
        if any(i != ids[0] for i in ids):
            raise ValueError(f"example {group[0].example.id}: the environment's reset gave different opening "
                             "messages to the samples of one prompt; they must share the prompt")
        prompts.append(ids[0])
        for r in group:
            r.segments.append(Segment(Source.PROMPT, np.asarray(ids[0], np.int32)))
    n_rows = batch_bucket(b_real)
    budget = agent.max_episode_tokens
    # Slots are shared in lock step, so a turn costs the slots of its longest row: room for every turn.
    slots = bucket(budget * min(agent.max_turns, 4), NEW_TOKEN_BUCKETS)
    p = sampler_prompts(prompts, tokenizer.pad_id, n_rows)
    eos_ids = tuple(tokenizer.eos_ids)
    state = begin_turns(params, cfg, p.tokens_BxP, p.mask_BxP, key, params_sampling=sampling, num_samples=g,
                        slots=slots, pad_id=tokenizer.pad_id, lora=lora, lora_scale=lora_scale, dtype=dtype,
                        shared_1xS=p.shared_1xS, prefill_rows=p.prefill_rows)
    tools = [[episode_tools(r.example, r.env) for r in group] for group in rows]
    feeds = [[[] for _ in range(g)] for _ in range(n_rows)]
    for turn in range(agent.max_turns):
        live = np.zeros((n_rows, g), bool)
        live[:b_real] = [[r.live for r in group] for group in rows]
        if not live.any():
            break
        if int(state.step) >= slots:  # the shared slots ran out: the rows still going end here
            for r in (r for group in rows for r in group if r.live):
                r.live, r.finish_reason = False, "length"
            break
        width = bucket(max(1, max(len(f) for row in feeds for f in row)), NEW_TOKEN_BUCKETS)
        feed = np.full((n_rows, g, width), tokenizer.pad_id, np.int32)
        feed_len = np.zeros((n_rows, g), np.int32)
        for b, row in enumerate(feeds):
            for j, f in enumerate(row):
                feed[b, j, :len(f)], feed_len[b, j] = f, len(f)
        start = int(state.step)
        state, ended = run_turn(params, cfg, state, jnp.asarray(feed), jnp.asarray(feed_len), jnp.asarray(live),
                                params_sampling=sampling, eos_ids=eos_ids, pad_id=tokenizer.pad_id, budget=budget,
                                lora=lora, lora_scale=lora_scale, dtype=dtype)
        host = {"tokens": np.asarray(state.tokens_BxGxS), "logprobs": np.asarray(state.logprobs_BxGxS),
                "source": np.asarray(state.source_BxGxS)}
        ended, lengths, end = np.asarray(ended), np.asarray(state.length_BxG), int(state.step)
        feeds = [[[] for _ in range(g)] for _ in range(n_rows)]
        for b, group in enumerate(rows):
            for j, row in enumerate(group):
                if not live[b, j]:
                    continue
                tokens, logprobs, sources = _turn_tokens(host, b, j, start, end)
                row.segments += _segments(tokens, logprobs, sources)
                parsed = parse_tool_calls(_policy_text(tokenizer, tokens, sources), fmt)
                if not ended[b, j]:  # out of budget (or slots) mid-turn
                    row.live, row.finish_reason, row.turns, row.answer = False, "length", turn + 1, parsed.content
                    continue
                feeds[b][j] = _end_turn(row, parsed, turn, agent, tokenizer, tools[b][j], int(lengths[b, j]), budget)
    return [[_episode(r, policy_version) for r in group] for group in rows]


def _policy_text(tokenizer, tokens: np.ndarray, sources: np.ndarray) -> str:
    """The text of this turn's policy tokens (the end-of-turn token dropped by decoding)."""
    return tokenizer.decode([int(t) for t in tokens[sources == POLICY]])


def _episode(row: _Row, policy_version: int) -> Episode:
    segments = row.segments if len(row.segments) > 1 else row.segments + [
        Segment(Source.POLICY, np.zeros(0, np.int32), np.zeros(0, np.float32))]
    e = Episode(row.example, segments, policy_version, row.finish_reason, row.answer)
    e.turns, e.tool_calls, e.tool_errors = row.turns, row.tool_calls, row.tool_errors
    e.env_seconds, e.turn_rewards, e.multi_turn = row.env_seconds, row.turn_rewards, True
    return e


def shape_turn_rewards(groups: list[list[Episode]], agent: AgentConfig) -> None:
    """Adds `turn_reward_weight` x the sum of an episode's per-turn environment rewards to its reward."""
    if not agent.turn_reward_weight:
        return
    for e in (e for group in groups for e in group):
        shaping = agent.turn_reward_weight * float(sum(e.turn_rewards))
        e.reward += shaping
        e.components["turn_shaping"] = shaping

