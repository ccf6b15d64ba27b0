"""An episode: one sampled interaction with its tokens, who produced each of them, and its rewards.

A single-turn completion is an episode with a prompt segment and one policy
segment. Multi-turn tool use adds tool/environment segments between policy
turns, and reasoning mode adds forced segments (a closing tag the sampler
appended): the model reads every token, but only the tokens the policy sampled
carry a loss (`loss_mask`). `rft_jax.rollout.batch.pack_groups` turns groups of
episodes into the arrays a train step reads (layout in docs/DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from rft_jax.data.example import Example


class Source(enum.IntEnum):
    """Who produced a segment's tokens."""

    PROMPT = 0  # the chat-templated input (and later user turns)
    POLICY = 1  # sampled by the policy: the only tokens with a loss
    TOOL = 2  # a tool or environment's reply, rendered by the chat template
    FORCED = 3  # appended by the sampler, e.g. a think budget's closing tag


@dataclasses.dataclass(frozen=True)
class Segment:
    source: Source
    token_ids: np.ndarray  # int32 [n]
    logprobs: np.ndarray | None = None  # float32 [n]: behaviour log-probs, for POLICY segments

    def __post_init__(self):
        if self.source == Source.POLICY and (self.logprobs is None or len(self.logprobs) != len(self.token_ids)):
            raise ValueError("a policy segment needs one behaviour log-prob per token")

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclasses.dataclass
class Episode:
    """One rollout of one example. The first segment is the prompt; everything after it is the completion."""

    example: Example
    segments: list[Segment]
    policy_version: int  # the RL step (updates done) whose parameters sampled the policy tokens
    finish_reason: str  # "stop" (EOS, a stop string, a final answer), "length" (the token budget ran out)
    # or "turns" (a multi-turn episode still calling tools at its turn cap)
    text: str = ""  # what the reward reads
    reward: float = 0.0  # the final (episode) reward
    turn_rewards: list[float] = dataclasses.field(default_factory=list)  # per policy turn, when an env gives them
    components: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str | None = None  # the reward failed on this episode (reward is then 0)
    thinking: str | None = None  # reasoning mode: the text before the closing tag (None: reasoning off)
    think_tokens: int = 0  # reasoning mode: completion tokens up to the end of the thinking
    well_formed: bool = True  # reasoning mode: the thinking was closed, so there is an answer
    turns: int = 1  # policy turns (multi-turn episodes; a single-turn completion is one)
    tool_calls: int = 0  # well-formed tool calls the policy made
    tool_errors: int = 0  # calls that failed: malformed, unknown tool, bad arguments, exception or timeout
    env_seconds: float = 0.0  # time the environment took over the episode
    multi_turn: bool = False  # built by the multi-turn rollout (its metrics then count it)

    def __post_init__(self):
        if not self.segments or self.segments[0].source != Source.PROMPT:
            raise ValueError("an episode starts with its prompt segment")

    @classmethod
    def single_turn(cls, example: Example, prompt_ids, token_ids, logprobs, *, policy_version: int,
                    finish_reason: str, text: str = "", forced=None) -> Episode:
        """`forced`: per token, True where the sampler wrote it (budget forcing); those runs become FORCED
        segments between the policy's."""
        prompt = Segment(Source.PROMPT, np.asarray(prompt_ids, np.int32))
        ids, lps = np.asarray(token_ids, np.int32), np.asarray(logprobs, np.float32)
        flags = np.zeros(len(ids), bool) if forced is None or len(forced) == 0 else np.asarray(forced, bool)
        segments = [prompt]
        for start, end in _runs(flags):
            if flags[start]:
                segments.append(Segment(Source.FORCED, ids[start:end]))
            else:
                segments.append(Segment(Source.POLICY, ids[start:end], lps[start:end]))
        if len(segments) == 1:
            segments.append(Segment(Source.POLICY, ids, lps))
        return cls(example, segments, policy_version, finish_reason, text)

    @property
    def prompt_ids(self) -> np.ndarray:
        return self.segments[0].token_ids

    @property
    def completion(self) -> list[Segment]:
        return self.segments[1:]

    @property
    def completion_ids(self) -> np.ndarray:
        return _concat([s.token_ids for s in self.completion], np.int32)

    @property
    def loss_mask(self) -> np.ndarray:
        """True on the completion tokens the policy sampled."""
        return _concat([np.full(len(s), s.source == Source.POLICY) for s in self.completion], bool)

    @property
    def behaviour_logprobs(self) -> np.ndarray:
        """The sampling policy's log-prob of each completion token (0 where the policy did not sample it)."""
        return _concat([s.logprobs if s.source == Source.POLICY else np.zeros(len(s), np.float32)
                        for s in self.completion], np.float32)

    @property
    def num_policy_tokens(self) -> int:
        return sum(len(s) for s in self.completion if s.source == Source.POLICY)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def budget_hit(self) -> bool:
        """The think budget ran out and the sampler closed the thinking."""
        return any(s.source == Source.FORCED for s in self.completion)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of equal values."""
    if len(flags) == 0:
        return []
    cuts = np.flatnonzero(flags[1:] != flags[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(flags)]
    return list(zip(bounds[:-1], bounds[1:]))


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
