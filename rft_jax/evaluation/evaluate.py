"""Evaluate a policy on a dataset with one or more scorers: metrics, per-field breakdowns, samples.

The result's JSON (schema in docs/monitoring.md) is what `rft-jax report` reads;
runs evaluate their base model, validation and final policy with it, and
`rft-jax eval` (rft_jax/cli/eval.py) evaluates a model, adapter or checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.data.example import message_text
from rft_jax.data.reasoning import ReasoningPlan, split_reasoning
from rft_jax.parallel.distributed import gather_objects, process_part
from rft_jax.rollout.engine import budget_forcing, malformed_penalty, prompt_ids, reasoned_episode
from rft_jax.rollout.episode import Episode
from rft_jax.rollout.metrics import agent_metrics, reasoning_metrics
from rft_jax.rollout.multiturn import AgentConfig, generate_agent_episodes
from rft_jax.sampling import Completion, SamplingParams, decode_rollout, generate_ids


@dataclasses.dataclass
class EvalResult:
    metrics: dict[str, float]
    samples: list[dict]  # id, prompt, completion, reward, components
    by_field: dict[str, dict[str, dict[str, float]]]  # field -> value -> metric -> mean
    per_example: list[dict] = dataclasses.field(default_factory=list, repr=False)
    """Per example: `scores` {scorer: [G]}, `lengths` [G], `truncated` [G], `errors` [G], `format_ok` [G]."""

    def to_json(self, name: str, **extra) -> dict:
        return {"name": name, **extra, "metrics": self.metrics, "by_field": self.by_field, "samples": self.samples}


def score_in_parts(scorers: dict, examples: list, texts: list[str], group: int = 1) -> dict[str, list]:
    """Every scorer's `RewardResult` for every text, on every process. Each process scores its part of the
    texts and the parts are gathered (as training's rollouts do), so a judge or a sandbox runs once per text
    over the cluster rather than once per process. Texts come in groups of `group` (an example's samples),
    and a group is never split: a pairwise judge compares the samples of one example."""
    groups = process_part(len(texts) // group)
    part = slice(groups.start * group, groups.stop * group)
    mine = {name: s.score_batch(examples[part], texts[part]) if texts[part] else [] for name, s in scorers.items()}
    parts = gather_objects([mine])
    return {name: [r for p in parts for r in p[name]] for name in scorers}


def _batches(items, size):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def evaluate(params: dict, cfg, tokenizer, examples, scorers: dict, *, key: jax.Array, max_new_tokens: int,
             lora=None, lora_scale: float = 1.0, dtype=jnp.float32, temperature: float = 0.0,
             num_samples: int = 1, batch_size: int = 64, breakdown_fields: tuple[str, ...] = ("level", "difficulty"),
             progress=None, mesh=None, reasoning: ReasoningPlan | None = None,
             agent: AgentConfig | None = None) -> EvalResult:
    """Scores (greedy by default) completions of every example with every scorer.

    `scorers` maps a name to a scorer; the first one is the main reward. Metrics:
    `<name>/mean` for each scorer, `pass@1` (main score >= 1 on the first sample),
    `response_length/mean`, `response_length/clip_ratio`. `mesh`: where to
    sample (default: the mesh the parameters live on). `reasoning`: render,
    sample and score as reasoning mode does (the scorers read the answer), and
    add the `reasoning/*` metrics; each sample then carries its `thinking`. `agent`: multi-turn episodes with
    tools (`max_new_tokens` is then the agent's episode budget): the scorers read each episode's final answer,
    the `agent/*` metrics are added, and each sample carries its whole `transcript`.
    """
    if not examples:  # every metric would be a mean of nothing (NaN); callers skip an empty split
        raise ValueError("nothing to evaluate: no examples")
    sampling = SamplingParams(temperature=temperature)
    per_example: list[dict] = []
    samples: list[dict] = []
    episodes: list[Episode] = []
    for i, chunk in enumerate(_batches(list(examples), batch_size)):
        if agent is not None and agent.enabled:
            chunk_episodes = generate_agent_episodes(params, cfg, tokenizer, chunk, jax.random.fold_in(key, i),
                                                     sampling=sampling, num_samples=num_samples, agent=agent,
                                                     lora=lora, lora_scale=lora_scale, dtype=dtype)
            completions = [[Completion(e.text, e.completion_ids.tolist(), [], e.finish_reason) for e in row]
                           for row in chunk_episodes]
        else:
            ids = prompt_ids(tokenizer, chunk, reasoning)
            rollout, _, _ = generate_ids(params, cfg, ids, jax.random.fold_in(key, i), sampling=sampling,
                                         num_samples=num_samples, max_new_tokens=max_new_tokens,
                                         eos_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id, lora=lora,
                                         lora_scale=lora_scale, dtype=dtype, mesh=mesh,
                                         forcing=budget_forcing(reasoning))
            completions = decode_rollout(tokenizer, rollout)
            chunk_episodes = [[reasoned_episode(Episode.single_turn(ex, prompt, c.token_ids, c.logprobs,
                                                                    policy_version=0, finish_reason=c.finish_reason,
                                                                    text=c.text, forced=c.forced), reasoning)
                               for c in row]
                              for ex, prompt, row in zip(chunk, ids, completions)]
        episodes.extend(e for row in chunk_episodes for e in row)
        flat_ex = [ex for ex in chunk for _ in range(num_samples)]
        flat_text = [e.text for row in chunk_episodes for e in row]
        scores = score_in_parts(scorers, flat_ex, flat_text, group=num_samples)
        main = next(iter(scores))
        for j, ex in enumerate(chunk):
            row = {name: [scores[name][j * num_samples + g].score for g in range(num_samples)] for name in scorers}
            # The main reward is the training reward: a malformed reasoning answer loses its penalty here too.
            row[main] = [v - malformed_penalty(e, reasoning) for v, e in zip(row[main], chunk_episodes[j])]
            lengths = [len(c.token_ids) for c in completions[j]]
            truncated = [c.finish_reason == "length" for c in completions[j]]
            results = [scores[main][j * num_samples + g] for g in range(num_samples)]
            per_example.append({"ex": ex, "scores": row, "lengths": lengths, "truncated": truncated,
                                "errors": [r.error is not None for r in results],
                                "format_ok": [_format_ok(r) for r in results]})
            first, episode = scores[main][j * num_samples], chunk_episodes[j][0]
            sample = {"id": ex.id, "prompt": message_text(ex.prompt_messages[-1]),
                      "completion": completions[j][0].text, "reward": row[main][0],
                      "components": dict(first.components), "error": first.error}
            if episode.thinking is not None:  # the answer shown, with its thinking beside it (not twice)
                sample.update(completion=split_reasoning(completions[j][0].text, reasoning.config.open_tag,
                                                         reasoning.config.close_tag).answer,
                              thinking=episode.thinking, well_formed=episode.well_formed,
                              think_tokens=episode.think_tokens)
            if episode.multi_turn:  # the whole conversation after the prompt, tool results included
                sample.update(transcript=tokenizer.decode(episode.completion_ids.tolist(), skip_special_tokens=False),
                              turns=episode.turns, tool_calls=episode.tool_calls, tool_errors=episode.tool_errors,
                              finish_reason=episode.finish_reason)
            samples.append(sample)
        if progress is not None:
            progress(len(per_example))
    main = next(iter(scorers))
    metrics = {f"{name}/mean": float(np.mean([s for e in per_example for s in e["scores"][name]]))
               for name in scorers}
    metrics["pass@1"] = float(np.mean([e["scores"][main][0] >= 1.0 for e in per_example]))
    if num_samples > 1:
        metrics[f"pass@{num_samples}"] = float(np.mean([max(e["scores"][main]) >= 1.0 for e in per_example]))
    metrics["response_length/mean"] = float(np.mean([n for e in per_example for n in e["lengths"]]))
    metrics["response_length/clip_ratio"] = float(np.mean([t for e in per_example for t in e["truncated"]]))
    metrics.update(reasoning_metrics(episodes))
    metrics.update(agent_metrics(episodes))
    by_field: dict[str, dict[str, dict[str, float]]] = {}
    for field in breakdown_fields:
        groups = defaultdict(list)
        for e in per_example:
            if field in e["ex"].metadata:
                groups[str(e["ex"].metadata[field])].append(e)
        if groups:
            by_field[field] = {value: {f"{name}/mean": float(np.mean([s for e in es for s in e["scores"][name]]))
                                       for name in scorers} | {"count": float(len(es))}
                               for value, es in sorted(groups.items())}
    return EvalResult(metrics, samples, by_field, per_example)


def _format_ok(result) -> float:
    """Whether the reward reported the answer format as followed (nan when it does not say)."""
    values = [v for k, v in result.metrics.items() if k.endswith("format_ok")]
    return float(max(values)) if values else float("nan")

