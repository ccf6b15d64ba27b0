"""Multi-turn runs wired through config, warm start and evaluation: the episode budget decides, demonstrations
are learnt in the context rollouts show, and `evaluate(agent=...)` scores final answers with agent metrics."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from test_multiturn_rollout import PARAMS, TINY, _scripted, _Tokenizer

from rft_jax.cli.train import build_config
from rft_jax.data.example import Example
from rft_jax.data.reasoning import ReasoningConfig
from rft_jax.environments import EnvironmentConfig, make_environment
from rft_jax.evaluation.evaluate import evaluate
from rft_jax.model.tokenizer import load_tokenizer
from rft_jax.rewards.result import RewardResult
from rft_jax.rollout.agent_config import AgentConfig
from rft_jax.rollout.multiturn import agent_prompt_ids
from rft_jax.sft.demos import conversation_pairs
from rft_jax.train.config import TrainConfig

CALC = AgentConfig(EnvironmentConfig(name="calculator"), max_turns=3, max_episode_tokens=160)


def test_the_episode_budget_decides_and_a_command_line_budget_overrides_a_defaults_agent():
    default = TrainConfig(agent=CALC)
    assert default.sampling.max_new_tokens == 160
    # Before the fix, the default's derived 160 made this raise "disagrees with agent.max_episode_tokens".
    cfg = build_config(default, ["--agent.max-episode-tokens", "256"])
    assert cfg.agent.max_episode_tokens == 256 and cfg.sampling.max_new_tokens == 256
    with pytest.raises(ValueError, match="max_turns"):
        TrainConfig(agent=AgentConfig(EnvironmentConfig(name="calculator"), max_turns=0))
    with pytest.raises(ValueError, match="reasoning"):
        TrainConfig(agent=CALC, reasoning=ReasoningConfig(mode="on"))


def test_a_demonstration_without_tools_is_learnt_in_the_prompt_a_rollout_shows():
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    question = [{"role": "user", "content": "What is 263 × 82?"}]
    call = {"id": "call_0", "type": "function",
            "function": {"name": "calculator", "arguments": json.dumps({"expression": "263 * 82"})}}
    demo = Example("d", question + [{"role": "assistant", "content": None, "tool_calls": [call]},
                                    {"role": "tool", "tool_call_id": "call_0", "content": "21566"},
                                    {"role": "assistant", "content": "21566"}])
    env = make_environment(CALC.environment, demo)
    first, second = conversation_pairs(tokenizer, demo, env.tools)
    # the first turn's context is exactly the rollout's prompt, tool description included
    assert first[0] == agent_prompt_ids(tokenizer, Example("q", question), env)
    assert '"name": "calculator"' in first[1] and "263 * 82" in first[1]
    assert tokenizer.decode(second[0], skip_special_tokens=False).endswith(
        "<|im_start|>tool\n21566<|im_end|>\n<|im_start|>assistant\n")
    assert second[1] == "21566"
    bare, _ = conversation_pairs(tokenizer, demo)  # without the environment's tools: no description
    assert "calculator" not in tokenizer.decode(bare[0])


class _LastWordScorer:
    def score_batch(self, examples, completions):
        return [RewardResult(float(c.endswith(str(ex.reference_answer))), {}) for ex, c in zip(examples, completions)]


def test_evaluate_with_an_agent_scores_final_answers_and_reports_agent_metrics(monkeypatch):
    _scripted(monkeypatch, lambda h: ("call", "final")[h % 2])
    examples = [Example(f"e{i}", [{"role": "user", "content": "q" * (i + 1)}], reference_answer=i) for i in range(3)]
    agent = AgentConfig(EnvironmentConfig(name="calculator"), max_turns=3, max_episode_tokens=96)
    result = evaluate(PARAMS, TINY, _Tokenizer(), examples, {"reward": _LastWordScorer()}, key=jax.random.key(0),
                      max_new_tokens=96, temperature=1.0, num_samples=2, agent=agent)
    for key in ("agent/turns/mean", "agent/tool_call_rate", "agent/finished_rate", "agent/tool_errors/mean"):
        assert key in result.metrics
    assert 1.0 <= result.metrics["agent/turns/mean"] <= 3.0
    for sample in result.samples:
        assert {"transcript", "turns", "tool_calls", "finish_reason"} <= set(sample)
        if sample["finish_reason"] == "stop":
            assert sample["completion"].startswith("answer ")
    assert np.isfinite(result.metrics["reward/mean"])
