"""Reasoning mode in the jitted sampler: the think budget, forced tokens, early closing, and the episodes built
from them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.data.example import Example
from rft_jax.data.reasoning import ReasoningConfig, ReasoningPlan
from rft_jax.model import ModelConfig, init_params
from rft_jax.model.logprobs import completion_logprobs
from rft_jax.rollout.batch import pack_groups
from rft_jax.rollout.engine import (
    RolloutSettings,
    budget_forcing,
    collect,
    penalise_malformed,
    reasoned_episode,
    score_episodes,
)
from rft_jax.rollout.episode import Episode, Source
from rft_jax.rollout.metrics import reasoning_metrics
from rft_jax.sampling import BudgetForcing, SamplingParams, decode_rollout, generate_ids

TINY = ModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8, max_position_embeddings=256)
PARAMS = init_params(TINY, jax.random.key(0), std=0.3)
PROMPTS = [[2, 40, 41, 42], [2, 50, 51]]
CLOSE, CUE = (290, 291), (292,)  # tokens the random model practically never samples
NO_EOS = (299,)
EXAMPLE = Example("ex", [{"role": "user", "content": "q"}])


def _sample(forcing, *, temperature=1.0, c=16, key=1, g=3):
    return generate_ids(PARAMS, TINY, PROMPTS, jax.random.key(key), sampling=SamplingParams(temperature),
                        num_samples=g, max_new_tokens=c, eos_ids=NO_EOS, pad_id=0, forcing=forcing)[0]


def test_the_closing_tag_is_forced_exactly_at_the_think_budget_and_carries_no_loss():
    rollout = _sample(BudgetForcing(think_budget=5, answer_budget=6, forced_ids=CLOSE + CUE, close_variants=(CLOSE,)))
    forced = np.asarray(rollout.forced_BxGxC)
    expected = np.zeros(16, bool)
    expected[5:8] = True
    for b in range(2):
        for g in range(3):
            np.testing.assert_array_equal(forced[b, g], expected)
            np.testing.assert_array_equal(rollout.tokens_BxGxC[b, g, 5:8], CLOSE + CUE)
            np.testing.assert_array_equal(rollout.logprobs_BxGxC[b, g, 5:8], 0.0)
            assert (rollout.logprobs_BxGxC[b, g, :5] < 0).all() and (rollout.logprobs_BxGxC[b, g, 8:11] < 0).all()
    # 5 thinking + an answer budget of 6 (3 forced, 3 sampled); then the length limit, not an EOS
    np.testing.assert_array_equal(rollout.lengths_BxG, 11)
    assert not rollout.stopped_BxG.any()
    completion = decode_rollout(_Tokenizer(), rollout)[0][0]
    assert completion.forced == expected[:11].tolist() and completion.finish_reason == "length"


def test_a_model_that_closes_its_thinking_early_goes_straight_to_its_answer():
    greedy = _sample(None, temperature=0.0, g=1)
    tokens = np.asarray(greedy.tokens_BxGxC)[0, 0]
    # the greedy model's 3rd token plays the closing tag (it must not appear before)
    close = (int(tokens[2]),)
    assert close[0] not in tokens[:2]
    rollout = _sample(BudgetForcing(think_budget=6, answer_budget=4, forced_ids=CLOSE, close_variants=(CLOSE, close)),
                      temperature=0.0, g=1)
    np.testing.assert_array_equal(rollout.tokens_BxGxC[0, 0, :7], tokens[:7])  # nothing forced: same tokens
    assert not np.asarray(rollout.forced_BxGxC)[0, 0].any()
    assert int(rollout.lengths_BxG[0, 0]) == 3 + 4  # 3 thinking tokens (the tag included), then 4 of answer


def test_policy_tokens_logprobs_equal_the_training_forward_over_the_forced_sequence():
    rollout, prompt, mask = generate_ids(PARAMS, TINY, PROMPTS, jax.random.key(3), sampling=SamplingParams(1.0),
                                         num_samples=2, max_new_tokens=16, eos_ids=NO_EOS, pad_id=0,
                                         forcing=BudgetForcing(4, 8, CLOSE + CUE, (CLOSE,)))
    logp, _ = completion_logprobs(PARAMS, TINY, jnp.asarray(prompt), jnp.asarray(mask),
                                  jnp.asarray(rollout.tokens_BxGxC))
    policy = np.asarray(rollout.mask_BxGxC) & ~np.asarray(rollout.forced_BxGxC)
    assert policy.sum() == 2 * 2 * (4 + 5)
    np.testing.assert_allclose(np.asarray(logp)[policy], np.asarray(rollout.logprobs_BxGxC)[policy], atol=2e-5)


class _Tokenizer:
    """Ids 3..258 are bytes; 290/291 are '</think>' and 292 is 'Answer:'."""

    eos_ids, pad_id = (1,), 0
    words = {290: "</thi", 291: "nk>", 292: "Answer:"}

    def apply_chat_template(self, messages, tools=None, **kwargs):
        return [2] + [3 + b for b in messages[-1]["content"].encode()[:20]]

    def encode(self, text):
        return {"</think>": list(CLOSE), "</think>Answer:": list(CLOSE + CUE), "<think>\n": [7, 8]}[text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.words.get(i, chr(i - 3) if 3 <= i < 259 else "") for i in ids)


class _AnswerLength:
    def score_batch(self, examples, texts):
        from rft_jax.rewards import RewardResult  # noqa: PLC0415
        return [RewardResult(float(len(t))) for t in texts]


def _plan(**overrides) -> ReasoningPlan:
    cfg = ReasoningConfig(mode="on", think_budget=5, answer_budget=6, answer_cue="Answer:", **overrides)
    return ReasoningPlan(cfg, True, False, {}, cfg.instruction, (7, 8), CLOSE, CLOSE + CUE, 5, 6)


def test_rollout_episodes_carry_forced_segments_and_rewards_read_only_the_answer():
    plan = _plan()
    settings = RolloutSettings(SamplingParams(1.0), num_samples=2, max_new_tokens=11, reasoning=plan)
    examples = [Example("a", [{"role": "user", "content": "hi"}])]
    r = collect(PARAMS, TINY, _Tokenizer(), _AnswerLength(), examples, jax.random.key(0), settings)
    for e in r.groups[0]:
        assert [s.source for s in e.segments] == [Source.PROMPT, Source.POLICY, Source.FORCED, Source.POLICY]
        assert e.budget_hit and e.well_formed and e.think_tokens == 5
        assert e.num_policy_tokens == 8 and not e.loss_mask[5:8].any() and e.loss_mask[:5].all()
        # the reward read the forced cue and the 3 answer characters after "</think>", not the thinking
        assert e.text.startswith("Answer:") and e.reward == len(e.text) == len("Answer:") + 3
        assert e.prompt_ids[-2:].tolist() == [7, 8]  # the reply was opened with the tag
    batch = pack_groups(r.groups, np.zeros((1, 2)), pad_id=0, max_completion_tokens=11)
    np.testing.assert_array_equal(batch.loss_mask_BxGxC[0].sum(-1), [8, 8])


def test_an_unclosed_thinking_is_malformed_penalised_and_rewarded_on_nothing():
    # The model ended (EOS) before closing its thinking: no answer.
    plan = _plan(malformed_penalty=0.5)
    ids = [3 + ord(ch) for ch in "so 4"] + [1]
    unclosed = Episode.single_turn(EXAMPLE, [2], ids, [-0.1] * 5, policy_version=0, finish_reason="stop",
                                   text="so 4")
    closed = Episode.single_turn(EXAMPLE, [2], [3 + ord("a"), *CLOSE, 3 + ord("4"), 1], [-0.1] * 5,
                                 policy_version=0, finish_reason="stop", text="a</think>4")
    groups = [[reasoned_episode(unclosed, plan), reasoned_episode(closed, plan)]]
    score_episodes(_AnswerLength(), groups)
    penalise_malformed(groups, plan)
    assert not unclosed.well_formed and unclosed.text == "" and unclosed.thinking == "so 4"
    assert unclosed.think_tokens == 5 and not unclosed.budget_hit
    assert unclosed.reward == -0.5 and unclosed.components["reasoning_malformed"] == -0.5
    assert closed.well_formed and closed.text == "4" and closed.think_tokens == 3 and closed.reward == 1.0
    assert closed.components["reasoning_malformed"] == 0.0
    assert reasoning_metrics(groups[0]) == {
        "reasoning/think_length/mean": 4.0, "reasoning/think_length/max": 5.0,
        "reasoning/answer_length/mean": 1.0, "reasoning/budget_hit_rate": 0.0, "reasoning/well_formed_rate": 0.5}


def test_reward_reads_all_gives_the_reward_the_thinking_too():
    plan = _plan(reward_reads="all")
    settings = RolloutSettings(SamplingParams(1.0), num_samples=2, max_new_tokens=11, reasoning=plan)
    examples = [Example("a", [{"role": "user", "content": "hi"}])]
    r = collect(PARAMS, TINY, _Tokenizer(), _AnswerLength(), examples, jax.random.key(0), settings)
    for e in r.groups[0]:
        assert "</think>Answer:" in e.text and e.reward == len(e.text) > 3


def test_reasoning_off_builds_no_forcing():
    assert budget_forcing(None) is None
    off = ReasoningPlan(ReasoningConfig(), False, True, {"enable_thinking": False}, None, (), (), (), 0, 0)
    assert budget_forcing(off) is None


def test_evaluation_penalises_a_malformed_answer_as_training_does_and_shows_the_answer_once():
    from rft_jax.evaluation.evaluate import evaluate  # noqa: PLC0415

    greedy = _sample(None, temperature=0.0, g=1)
    second = int(np.asarray(greedy.tokens_BxGxC)[0, 0, 1])

    class EndsEarly(_Tokenizer):
        eos_ids = (second,)  # the greedy model's 2nd token ends it inside its thinking

        def apply_chat_template(self, messages, tools=None, **kwargs):
            return list(PROMPTS[0])

    plan = _plan(malformed_penalty=0.25)
    examples = [Example("a", [{"role": "user", "content": "hi"}])]
    result = evaluate(PARAMS, TINY, EndsEarly(), examples, {"reward": _AnswerLength()}, key=jax.random.key(0),
                      max_new_tokens=11, reasoning=plan._replace(reply_prefix_ids=()))
    sample = result.samples[0]
    assert not sample["well_formed"] and sample["completion"] == "" and sample["reward"] == -0.25
    assert result.metrics["reward/mean"] == -0.25 and result.metrics["reasoning/well_formed_rate"] == 0.0
