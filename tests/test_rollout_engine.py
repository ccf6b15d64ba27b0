"""The rollout engine: episodes, their packing into a train batch, collection on a mesh, and the loop's hooks."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tyro

from rft_jax.data.example import Example
from rft_jax.grpo import AdvantageConfig, GRPOLossConfig
from rft_jax.model import ModelConfig, init_params
from rft_jax.parallel import MeshConfig, make_mesh, param_shardings, place
from rft_jax.rewards import RewardResult, build_reward
from rft_jax.rewards.spec import RewardSpec, parse_spec
from rft_jax.rollout.batch import advantages, pack_groups
from rft_jax.rollout.engine import RolloutSettings, collect
from rft_jax.rollout.episode import Episode, Segment, Source
from rft_jax.sampling import SamplingParams
from rft_jax.train.config import TrainConfig
from rft_jax.train.hooks import Hook, StepContext, run_hooks, time_budget_hook
from rft_jax.train.report_table import before_after_markdown
from rft_jax.train.step import StepSettings, batch_loss

TINY = ModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8, max_position_embeddings=256)
PARAMS = init_params(TINY, jax.random.key(0), std=0.3)
EXAMPLE = Example("ex", [{"role": "user", "content": "q"}], reference_answer="a")


class ByteTokenizer:
    """Just what the engine reads of a tokenizer: prompts as the bytes of the last message, EOS = 1."""

    eos_ids, pad_id = (1,), 0

    def apply_chat_template(self, messages, tools=None):
        return [2] + [3 + b for b in messages[-1]["content"].encode()]

    def decode(self, ids):
        return bytes(i - 3 for i in ids if 3 <= i < 259).decode("latin-1")


def _policy(tokens, logp):
    return Segment(Source.POLICY, np.asarray(tokens, np.int32), np.asarray(logp, np.float32))


def _multi_turn(tool_tokens, reward=1.0):
    e = Episode(EXAMPLE, [Segment(Source.PROMPT, np.array([5, 6, 7], np.int32)), _policy([10, 11], [-0.5, -0.7]),
                          Segment(Source.TOOL, np.asarray(tool_tokens, np.int32)), _policy([12, 1], [-0.1, -0.2])],
                policy_version=3, finish_reason="stop")
    e.reward = reward
    return e


def test_episode_masks_only_policy_tokens_and_keeps_behaviour_logprobs():
    e = _multi_turn([20, 21, 22])
    np.testing.assert_array_equal(e.completion_ids, [10, 11, 20, 21, 22, 12, 1])
    np.testing.assert_array_equal(e.loss_mask, [1, 1, 0, 0, 0, 1, 1])
    np.testing.assert_allclose(e.behaviour_logprobs, [-0.5, -0.7, 0, 0, 0, -0.1, -0.2])
    assert e.num_policy_tokens == 4 and not e.truncated and e.policy_version == 3
    forced = Episode(EXAMPLE, [Segment(Source.PROMPT, np.array([5])), Segment(Source.FORCED, np.array([9, 9]))],
                     policy_version=0, finish_reason="length")
    assert not forced.loss_mask.any() and forced.truncated
    with pytest.raises(ValueError, match="log-prob"):
        Segment(Source.POLICY, np.array([1, 2]), np.array([0.0]))
    with pytest.raises(ValueError, match="prompt"):
        Episode(EXAMPLE, [_policy([1], [0.0])], policy_version=0, finish_reason="stop")


def test_pack_groups_lays_out_prompt_completion_and_masks():
    groups = [[_multi_turn([20, 21, 22]), Episode.single_turn(EXAMPLE, [5, 6, 7], [13, 1], [-1.0, -2.0],
                                                              policy_version=3, finish_reason="stop")]]
    batch = pack_groups(groups, np.array([[1.0, -1.0]]), pad_id=0, max_completion_tokens=64)
    assert batch.prompt_BxP.shape == (1, 32) and batch.completion_BxGxC.shape == (1, 2, 16)
    np.testing.assert_array_equal(batch.prompt_BxP[0, -3:], [5, 6, 7])
    assert batch.prompt_mask_BxP.sum() == 3
    np.testing.assert_array_equal(batch.completion_mask_BxGxC[0].sum(-1), [7, 2])
    np.testing.assert_array_equal(batch.loss_mask_BxGxC[0, 0, :7], [1, 1, 0, 0, 0, 1, 1])
    np.testing.assert_allclose(batch.old_logp_BxGxC[0, 1, :3], [-1.0, -2.0, 0.0])
    with pytest.raises(ValueError, match="budget"):
        pack_groups(groups, np.zeros((1, 2)), pad_id=0, max_completion_tokens=4)


def test_tool_tokens_carry_no_loss_but_are_read():
    """Tool tokens are out of the loss, yet the policy tokens after them read them. The ratio is taken
    against the behaviour log-probs (use_old_logp), so the loss's value depends on every token it counts."""
    s = StepSettings(TINY, GRPOLossConfig(), lora_scale=None, temperature=1.0, dtype="float32", use_old_logp=True)

    def loss(tool_tokens, as_policy=False):
        e = _multi_turn(tool_tokens)
        if as_policy:  # the same tokens, sampled by the policy: now they are trained
            e.segments[2] = _policy(tool_tokens, np.zeros(len(tool_tokens)))
        other = Episode.single_turn(EXAMPLE, [5, 6, 7], [13, 1], [-1.0, -2.0], policy_version=3,
                                    finish_reason="stop")
        batch = pack_groups([[e, other]], np.array([[1.0, -1.0]]), pad_id=0, max_completion_tokens=16)
        value, _ = batch_loss(PARAMS, None, None, batch, s)
        return float(value), batch

    base, batch = loss([20, 21, 22])
    assert int(batch.loss_mask_BxGxC.sum()) == 6 and int(batch.completion_mask_BxGxC.sum()) == 9
    assert loss([20, 21, 22], as_policy=True)[0] != pytest.approx(base, rel=1e-4)  # the mask keeps them out
    assert abs(loss([40, 41, 42])[0] - base) > 1e-6  # later policy tokens read the tool's reply (same run: exact)


def test_advantages_are_group_relative_after_shaping():
    groups = [[_multi_turn([20], reward=r) for r in (0.0, 1.0, 1.0, 0.0)]]
    adv = advantages(groups, AdvantageConfig(), 64)
    np.testing.assert_allclose(adv[0], [-0.866, 0.866, 0.866, -0.866], atol=1e-3)


class _LengthReward:
    """Scores 1 for completions shorter than 6 characters; counts its calls."""

    needs_reference = False

    def __init__(self):
        self.calls = 0

    def score_batch(self, examples, completions):
        self.calls += 1
        return [RewardResult(float(len(c) < 6), components={"short": float(len(c) < 6)}) for c in completions]


def test_collect_samples_scores_and_tags_episodes_with_the_policy_version():
    scorer = _LengthReward()
    settings = RolloutSettings(SamplingParams(1.0), num_samples=3, max_new_tokens=12)
    examples = [Example(f"e{i}", [{"role": "user", "content": "x" * (i + 2)}]) for i in range(2)]
    r = collect(PARAMS, TINY, ByteTokenizer(), scorer, examples, jax.random.key(4), settings, policy_version=7)
    assert scorer.calls == 1 and r.rewards_BxG.shape == (2, 3) and set(r.timing) == {"generate", "reward"}
    for ex, group in zip(examples, r.groups):
        for e in group:
            assert e.example is ex and e.policy_version == 7 and e.loss_mask.all()
            assert len(e.completion_ids) <= 12 and e.reward == float(len(e.text) < 6)
            assert e.finish_reason == ("stop" if e.completion_ids[-1] == 1 else "length")
            np.testing.assert_array_equal(e.prompt_ids, ByteTokenizer().apply_chat_template(ex.messages))
    np.testing.assert_array_equal(r.components["short"], r.rewards_BxG)


def test_collect_gives_the_same_episodes_on_a_sharded_mesh():
    """A one-device mesh is the unsharded case: the 8-device FSDP mesh samples the same tokens."""
    settings = RolloutSettings(SamplingParams(1.0), num_samples=2, max_new_tokens=8)
    examples = [Example(f"e{i}", [{"role": "user", "content": "ab" * (i + 1)}]) for i in range(8)]
    run = lambda params, mesh: collect(params, TINY, ByteTokenizer(), _LengthReward(), examples,  # noqa: E731
                                       jax.random.key(1), settings, mesh=mesh)
    one = run(PARAMS, None)
    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    sharded = run(place(PARAMS, param_shardings(PARAMS, mesh)), mesh)
    for a, b in zip(one.groups, sharded.groups):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.completion_ids, y.completion_ids)
            np.testing.assert_allclose(x.behaviour_logprobs, y.behaviour_logprobs, atol=1e-4)


def _ctx(step, total=10, **kw):
    return StepContext(step, total, state=None, metrics={}, rollouts=None, **kw)


def test_hooks_run_at_their_interval_the_last_step_and_on_a_stop():
    seen = []
    hooks = [Hook("every3", lambda c: seen.append(("every3", c.step)), every=3),
             Hook("end", lambda c: seen.append(("end", c.step)), every=0, at_last=True),
             Hook("stop", lambda c: seen.append(("stop", c.step)), every=0, at_stop=True)]
    for step in range(1, 11):
        run_hooks(hooks, _ctx(step))
    assert seen == [("every3", 3), ("every3", 6), ("every3", 9), ("end", 10)]
    seen.clear()
    run_hooks([Hook("stopper", lambda c: setattr(c, "stop", "early"), every=0, at_last=True), *hooks], _ctx(10))
    assert ("stop", 10) in seen


def test_time_budget_hook_stops_the_run():
    ctx = _ctx(1)
    time_budget_hook(1.0, started=0.0).fn(ctx)  # perf_counter() is far past 1 s after start 0
    assert ctx.stop == "time budget reached"
    ctx = _ctx(1)
    time_budget_hook(0.0, started=0.0).fn(ctx)  # 0: no budget
    assert ctx.stop is None


def test_reward_spec_tree_round_trips_and_the_cli_takes_json():
    spec = RewardSpec.aggregate(a=RewardSpec("math_answer", {"mode": "strict_line"}, 0.5),
                                b=RewardSpec("answer_format"))
    assert parse_spec(json.dumps(spec.to_json())) == spec
    assert set(build_reward(spec).parts) == {"a", "b"}
    cfg = tyro.cli(TrainConfig, args=["--reward", json.dumps(spec.to_json()),
                                      "--evaluation.views", '{"strict": {"name": "math_answer"}}',
                                      "--advantage.estimator", "drgrpo"])
    assert cfg.reward == spec and cfg.evaluation.views == (("strict", RewardSpec("math_answer")),)
    assert cfg.advantage.estimator == "drgrpo"
    assert tyro.cli(TrainConfig, args=["--reward", "math_answer"]).reward == RewardSpec("math_answer")
    with pytest.raises(TypeError, match="RewardSpec"):
        TrainConfig(reward="math_answer")


def test_before_after_table_rows_come_from_the_views():
    results = {n: {"reward/mean": r, "exact/mean": e, "response_length/mean": 20.0}
               for n, r, e in (("base", 0.1, 0.0), ("final", 0.9, 0.75))}
    table = before_after_markdown(results)
    assert "| exact | 0.0% | 75.0% |" in table and "| mean reward | 0.10 | 0.90 |" in table
    assert "strict" not in table


class _WordTokenizer:
    """Tokens that decode to known strings; a stop string "\\n###" spans tokens 14 and 15."""

    eos_ids, pad_id = (1,), 0
    words = {10: "The", 11: " answer", 12: " is", 13: " 4", 14: "\n#", 15: "## ", 16: "junk"}

    def decode(self, ids):
        return "".join(self.words[i] for i in ids)


def test_a_stop_string_cuts_the_tokens_logprobs_and_loss_mask_not_only_the_text():
    from rft_jax.sampling.generate import decode_rollout
    from rft_jax.sampling.sampler import Rollout

    rows = [([10, 11, 12, 13, 14, 15, 16, 16], False),  # stop string, then the budget ran out
            ([10, 16, 16, 16, 16, 16, 16, 16], False),  # the budget ran out: "length"
            ([10, 13, 1], True),  # EOS
            ([13, 14, 15, 16, 1], True)]  # stop string, then EOS
    tokens = np.zeros((1, 4, 8), np.int32)
    logprobs = np.zeros((1, 4, 8), np.float32)
    for g, (ids, _) in enumerate(rows):
        tokens[0, g, :len(ids)] = ids
        logprobs[0, g, :len(ids)] = -0.1 * np.arange(1, len(ids) + 1)
    lengths = np.array([[len(ids) for ids, _ in rows]], np.int32)
    rollout = Rollout(tokens, logprobs, np.arange(8) < lengths[..., None], lengths,
                      np.array([[eos for _, eos in rows]]), np.zeros((1, 4, 8), bool))
    completions = decode_rollout(_WordTokenizer(), rollout, stops=("\n###",))[0]
    assert [c.token_ids for c in completions] == [[10, 11, 12, 13, 14, 15], rows[1][0], [10, 13, 1], [13, 14, 15]]
    assert [c.finish_reason for c in completions] == ["stop", "length", "stop", "stop"]
    assert [c.text for c in completions] == ["The answer is 4", "The" + "junk" * 7, "The 4", " 4"]
    np.testing.assert_allclose(completions[0].logprobs, -0.1 * np.arange(1, 7), rtol=1e-6)
    episodes = [Episode.single_turn(EXAMPLE, [5, 6, 7], c.token_ids, c.logprobs, policy_version=0,
                                    finish_reason=c.finish_reason, text=c.text) for c in completions]
    batch = pack_groups([episodes], np.zeros((1, 4)), pad_id=0, max_completion_tokens=8)
    np.testing.assert_array_equal(batch.loss_mask_BxGxC[0].sum(-1), [6, 8, 3, 3])
    np.testing.assert_array_equal(batch.truncated_BxG[0], [False, True, False, False])


def test_the_step_reports_how_far_the_sampler_is_from_the_trainer():
    """mismatch/* compare the batch's behaviour log-probs with the training forward's on the policy tokens."""
    s = StepSettings(TINY, GRPOLossConfig(), lora_scale=None, temperature=1.0, dtype="float32")
    e = _multi_turn([20, 21])
    batch = pack_groups([[e, e]], np.zeros((1, 2)), pad_id=0, max_completion_tokens=16)
    _, metrics = batch_loss(PARAMS, None, None, batch, s)
    from rft_jax.model.logprobs import completion_logprobs  # noqa: PLC0415

    logp, _ = completion_logprobs(PARAMS, TINY, batch.prompt_BxP, batch.prompt_mask_BxP, batch.completion_BxGxC,
                                  remat=False)
    mask = np.asarray(batch.loss_mask_BxGxC)
    x = np.asarray(logp)[mask] - np.asarray(batch.old_logp_BxGxC)[mask]
    assert float(metrics["mismatch/max_abs_logp_diff"]) == pytest.approx(np.abs(x).max(), rel=1e-5)
    assert float(metrics["mismatch/kl"]) == pytest.approx(np.mean(np.exp(x) - x - 1), rel=1e-4)
    same = batch._replace(old_logp_BxGxC=jnp.where(batch.loss_mask_BxGxC, logp, 0.0))
    _, metrics = batch_loss(PARAMS, None, None, same, s)
    assert float(metrics["mismatch/frac_above_1e-3"]) == 0.0 and float(metrics["mismatch/kl"]) < 1e-7
