"""`rft-jax baseline` and `evaluate` on a tiny random model with a toy reward."""

from __future__ import annotations

import jax

from rft_jax.data import Example
from rft_jax.evaluation.baseline import baseline
from rft_jax.evaluation.evaluate import evaluate
from rft_jax.model import ModelConfig, init_params
from rft_jax.rewards import build_reward


class _Tok:
    eos_ids, pad_id = (1,), 0

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True):
        return [3 + (ord(ch) % 60) for ch in messages[-1]["content"]][:12]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + (i % 26)) for i in ids)


CFG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8)


def _examples(n):
    return [Example(id=f"e{i}", messages=[{"role": "user", "content": f"question {i}"}], reference_answer="a",
                    tools=None, metadata={"level": "easy" if i % 2 else "hard"}) for i in range(n)]


def test_evaluate_reports_metrics_and_breakdowns():
    params = init_params(CFG, jax.random.key(0), std=0.3)
    scorer = build_reward({"name": "string_check", "operation": "like"})
    result = evaluate(params, CFG, _Tok(), _examples(6), {"reward": scorer}, key=jax.random.key(1),
                      max_new_tokens=8, breakdown_fields=("level",))
    assert set(result.by_field["level"]) == {"easy", "hard"}
    assert 0.0 <= result.metrics["reward/mean"] <= 1.0
    assert result.metrics["response_length/mean"] <= 8
    assert len(result.samples) == 6 and all(s["id"].startswith("e") for s in result.samples)


def test_baseline_gives_summary_and_verdict():
    params = init_params(CFG, jax.random.key(0), std=0.3)
    scorer = build_reward({"name": "string_check", "operation": "like"})
    summary, verdict, *_ = baseline(params, CFG, _Tok(), _examples(4), scorer, samples=4, max_new_tokens=8,
                                   temperature=1.0, success_threshold=1.0, dtype="float32", key=jax.random.key(2))
    metrics = summary.to_metrics()
    assert summary.group_size == 4 and summary.num_prompts == 4
    assert any(k.startswith("pass@") for k in metrics)
    assert verdict.label in {"ready", "too_easy", "sft_first", "raise_response_length", "fix_reward"}
    assert verdict.next_step
