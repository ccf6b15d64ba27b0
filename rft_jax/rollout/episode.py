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
    policy_version: int  # the optimizer step whose parameters sampled the policy tokens
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (the token budget ran out)
    text: str = ""  # what the reward reads
    reward: float = 0.0  # the final (episode) reward
    turn_rewards: list[float] = dataclasses.field(default_factory=list)  # per policy turn, when an env gives them
    components: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str | None = None  # the reward failed on this episode (reward is then 0)

    def __post_init__(self):
        if not self.segments or self.segments[0].source != Source.PROMPT:
            raise ValueError("an episode starts with its prompt segment")

    @classmethod
    def single_turn(cls, example: Example, prompt_ids, token_ids, logprobs, *, policy_version: int,
                    finish_reason: str, text: str = "") -> Episode:
        prompt = Segment(Source.PROMPT, np.asarray(prompt_ids, np.int32))
        policy = Segment(Source.POLICY, np.asarray(token_ids, np.int32), np.asarray(logprobs, np.float32))
        return cls(example, [prompt, policy], policy_version, finish_reason, text)

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


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
