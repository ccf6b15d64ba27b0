"""The rollout engine: a batch of examples in, groups of scored episodes out.

The one path that training, the signal check and the benchmarks run. Sampling
goes through `rft_jax.sampling.generate_ids` on the run's mesh (a one-device
mesh is the unsharded case); on several processes each one scores its share of
the prompts and the rewards are gathered, so every process ends with the same
`Rollouts`.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rft_jax.data.example import Example, flatten_messages
from rft_jax.data.reasoning import ReasoningPlan, render_prompt, split_reasoning, think_token_count
from rft_jax.model.config import ModelConfig
from rft_jax.parallel.distributed import gather_objects, process_part
from rft_jax.rollout.episode import Episode, Source
from rft_jax.rollout.multiturn import AgentConfig, generate_agent_episodes, shape_turn_rewards
from rft_jax.sampling import BudgetForcing, SamplingParams, decode_rollout, generate_ids


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
    """What a rollout needs besides the policy and the examples."""

    sampling: SamplingParams
    num_samples: int  # G
    max_new_tokens: int
    stops: tuple[str, ...] = ()
    dtype: str = "float32"  # the sampler's matmul dtype
    reasoning: ReasoningPlan | None = None  # reasoning mode (and a native template's thinking switch)
    agent: AgentConfig | None = None  # multi-turn episodes with tools (rft_jax/rollout/multiturn.py)

    @property
    def multi_turn(self) -> bool:
        return self.agent is not None and self.agent.enabled


@dataclasses.dataclass
class Rollouts:
    """B groups of G scored episodes, with host-side views the metrics and logs read."""

    groups: list[list[Episode]]
    timing: dict[str, float]

    def _grid(self, value, dtype) -> np.ndarray:
        return np.array([[value(e) for e in group] for group in self.groups], dtype)

    @property
    def rewards_BxG(self) -> np.ndarray:
        return self._grid(lambda e: e.reward, np.float32)

    @property
    def lengths_BxG(self) -> np.ndarray:
        """Policy tokens of each episode."""
        return self._grid(lambda e: e.num_policy_tokens, np.int32)

    @property
    def truncated_BxG(self) -> np.ndarray:
        return self._grid(lambda e: e.truncated, bool)

    @property
    def errors_BxG(self) -> np.ndarray:
        return self._grid(lambda e: e.error is not None, bool)

    @property
    def prompt_lengths_B(self) -> np.ndarray:
        return np.array([len(group[0].prompt_ids) for group in self.groups], np.int32)

    @property
    def components(self) -> dict[str, np.ndarray]:
        names = sorted({k for group in self.groups for e in group for k in e.components})
        return {k: self._grid(lambda e, k=k: e.components.get(k, np.nan), np.float32) for k in names}


def prompt_ids(tokenizer, examples: list[Example], reasoning: ReasoningPlan | None = None) -> list[list[int]]:
    """Each example's prompt through the chat template: the one rendering that training, evaluation and the
    warm start share, so a prompt is the same tokens in all three. Under a reasoning plan the template gets
    its thinking switch (native) or the instruction and an opened tag (instruction format)."""
    return [render_prompt(tokenizer, flatten_messages(ex.prompt_messages), ex.tools, reasoning) for ex in examples]


def budget_forcing(plan: ReasoningPlan | None) -> BudgetForcing | None:
    """The sampler's think-budget settings of a plan (None: reasoning off)."""
    if plan is None or not plan.enabled:
        return None
    return BudgetForcing(plan.think_budget, plan.answer_budget, plan.forced_ids, plan.closings)


def reasoned_episode(episode: Episode, plan: ReasoningPlan | None) -> Episode:
    """Splits the episode's text into thinking and answer; the reward reads the answer unless the config
    opts into the whole text. Reasoning off: unchanged."""
    if plan is None or not plan.enabled:
        return episode
    cfg = plan.config
    full = episode.text
    parts = split_reasoning(full, cfg.open_tag, cfg.close_tag)
    episode.thinking, episode.well_formed = parts.thinking, parts.closed
    forced = [s.source != Source.POLICY for s in episode.completion for _ in range(len(s))]
    episode.think_tokens = think_token_count(episode.completion_ids, forced, plan.closings)
    episode.text = full if cfg.reward_reads == "all" else parts.answer
    return episode


def generate_episodes(params: dict, cfg: ModelConfig, tokenizer, examples: list[Example], key: jax.Array,
                      settings: RolloutSettings, *, lora: dict | None = None, lora_scale: float = 1.0,
                      mesh: Mesh | None = None, policy_version: int = 0,
                      ids: list[list[int]] | None = None) -> list[list[Episode]]:
    """G episodes per example: single-turn, sampled in one call of the jitted sampler, or multi-turn with
    tools when `settings.agent` names an environment (the prompts are then rendered with its tools, and
    `ids` is not used)."""
    if settings.multi_turn:
        if jax.process_count() > 1:
            raise NotImplementedError("multi-turn rollouts run in one process for now (their environments run on "
                                      "the host that samples): start the run without jax.distributed")
        return generate_agent_episodes(params, cfg, tokenizer, examples, key, sampling=settings.sampling,
                                       num_samples=settings.num_samples, agent=settings.agent, lora=lora,
                                       lora_scale=lora_scale, dtype=jnp.dtype(settings.dtype),
                                       policy_version=policy_version)
    plan = settings.reasoning
    ids = prompt_ids(tokenizer, examples, plan) if ids is None else ids
    rollout, _, _ = generate_ids(params, cfg, ids, key, sampling=settings.sampling, num_samples=settings.num_samples,
                                 max_new_tokens=settings.max_new_tokens, eos_ids=tokenizer.eos_ids,
                                 pad_id=tokenizer.pad_id, lora=lora, lora_scale=lora_scale,
                                 dtype=jnp.dtype(settings.dtype), mesh=mesh, forcing=budget_forcing(plan))
    completions = decode_rollout(tokenizer, rollout, settings.stops)
    return [[reasoned_episode(Episode.single_turn(ex, prompt, c.token_ids, c.logprobs, policy_version=policy_version,
                                                  finish_reason=c.finish_reason, text=c.text, forced=c.forced), plan)
             for c in row]
            for ex, prompt, row in zip(examples, ids, completions)]


def score_episodes(scorer, groups: list[list[Episode]]) -> None:
    """Fills each episode's reward, components and error; each process scores its share of the groups."""
    mine = my_episodes(groups)
    apply_scores(groups, scorer.score_batch([e.example for e in mine], [e.text for e in mine]) if mine else [])


def my_episodes(groups: list[list[Episode]]) -> list[Episode]:
    """The episodes this process scores: its part of the groups (all of them in one process). Parts may be
    uneven (the signal check samples however many validation prompts there are)."""
    return [e for group in groups[process_part(len(groups))] for e in group]


def apply_scores(groups: list[list[Episode]], results: list) -> None:
    """Fills rewards, components and errors from the `RewardResult`s of `my_episodes(groups)`, gathered
    from every process (the asynchronous loop's reward pool hands its results in here too)."""
    every = gather_objects(results)  # in process order, which is group order
    episodes = [e for group in groups for e in group]
    if len(every) != len(episodes):
        raise ValueError(f"{len(every)} reward results for {len(episodes)} episodes")
    for e, r in zip(episodes, every):
        # Rewards are float32 from here on, as the train step reads them; a NaN component means "not reported".
        e.reward = float(np.float32(r.score))
        e.components = {k: float(np.float32(v)) for k, v in r.components.items() if np.isfinite(v)}
        e.error = r.error


def malformed_penalty(episode: Episode, plan: ReasoningPlan | None) -> float:
    """What reasoning.malformed_penalty takes from this episode's reward: the penalty when it never closed its
    thinking, else 0 (and 0 with reasoning off)."""
    if plan is None or not plan.enabled or episode.well_formed:
        return 0.0
    return plan.config.malformed_penalty


def penalise_malformed(groups: list[list[Episode]], plan: ReasoningPlan | None) -> None:
    """Subtracts reasoning.malformed_penalty from episodes that never closed their thinking."""
    if plan is None or not plan.enabled or not plan.config.malformed_penalty:
        return
    for e in (e for group in groups for e in group):
        penalty = malformed_penalty(e, plan)
        e.reward -= penalty
        e.components["reasoning_malformed"] = -penalty


def collect(params: dict, cfg: ModelConfig, tokenizer, scorer, examples: list[Example], key: jax.Array,
            settings: RolloutSettings, *, lora: dict | None = None, lora_scale: float = 1.0,
            mesh: Mesh | None = None, policy_version: int = 0,
            ids: list[list[int]] | None = None) -> Rollouts:
    """Sample G episodes per example with the current policy and score them."""
    t0 = time.perf_counter()
    groups = generate_episodes(params, cfg, tokenizer, examples, key, settings, lora=lora, lora_scale=lora_scale,
                               mesh=mesh, policy_version=policy_version, ids=ids)
    t1 = time.perf_counter()
    score_episodes(scorer, groups)
    finish_scoring(groups, settings)
    return Rollouts(groups, {"generate": t1 - t0, "reward": time.perf_counter() - t1})


def finish_scoring(groups: list[list[Episode]], settings: RolloutSettings) -> None:
    """What follows the reward: reasoning's malformed penalty and multi-turn's per-turn rewards."""
    penalise_malformed(groups, settings.reasoning)
    if settings.multi_turn:
        shape_turn_rewards(groups, settings.agent)
