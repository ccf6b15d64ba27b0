"""The judge reward: prompts, caching, errors, pairwise mode, aggregation, and a judge served by `rft-jax serve`."""

from __future__ import annotations

import re

import pytest

from rft_jax.data.example import Example
from rft_jax.rewards.judge import Judge, parse_rubric
from rft_jax.rewards.judge.backend_http import JudgeBackendError
from rft_jax.rewards.reward_test import run_reward_test
from rft_jax.rewards.scorer import build_reward

JUDGE = "rft_jax.rewards.judge.reward:judge_reward"  # until the registry row lands, a module:function spec


def example(i: int = 0, reference: str | None = "Paris") -> Example:
    return Example(id=f"ex{i}", messages=[{"role": "user", "content": f"Capital of France? ({i})"}],
                   reference_answer=reference)


class FakeBackend:
    """Grades by rule: 'Score: 9' when the response mentions Paris, 'Score: 2' otherwise; 'garbage' on request.
    Pairwise: prefers the longer response."""

    def __init__(self):
        self.asked = []

    def identity(self):
        return {"backend": "fake"}

    def complete(self, conversations, n):
        self.asked += conversations
        out = []
        for messages in conversations:
            user = messages[-1]["content"]
            if "<response_a>" in user:
                a = re.search(r"<response_a>\n(.*)\n</response_a>", user, re.S).group(1)
                b = re.search(r"<response_b>\n(.*)\n</response_b>", user, re.S).group(1)
                out.append([f"Winner: {'A' if len(a) > len(b) else 'B' if len(b) > len(a) else 'tie'}"] * n)
            elif "BOOM" in user:
                out.append(RuntimeError("endpoint down"))
            elif "garbage" in user:
                out.append(["I cannot decide."] * n)
            else:
                out.append([f"Fine.\nScore: {9 if 'Paris' in user.split('# Response to grade')[1] else 2}"] * n)
        return out


def test_pointwise_scores_prompt_and_cache():
    backend = FakeBackend()
    judge = Judge(parse_rubric({"text": "Correct capital?", "scale": [0, 10]}), backend)
    exs = [example(0), example(1)]
    results = judge.score_batch(exs, ["It is Paris.", "Lyon"])
    assert [r.score for r in results] == [0.9, 0.2] and not any(r.error for r in results)
    prompt = backend.asked[0][-1]["content"]
    for part in ("Correct capital?", "Capital of France? (0)", "# Reference answer", "Paris", "It is Paris.",
                 "Score: N"):
        assert part in prompt
    judge.score_batch(exs, ["It is Paris.", "Lyon"])
    judge.score_batch([example(0), example(0)], ["It is Paris.", "It is Paris."])  # duplicates asked once
    assert len(backend.asked) == 2 and judge.cache.hits == 3  # 2 + 1 (a repeated key is looked up once)


def test_unparseable_and_backend_errors_are_errors_not_zeros():
    judge = Judge(parse_rubric("Correct?"), FakeBackend())
    bad, down, good = judge.score_batch([example()] * 3, ["garbage", "BOOM", "Paris"])
    assert bad.error and "unparseable" in bad.error
    assert down.error and "endpoint down" in down.error
    assert good.error is None and good.score == 0.9


def test_pairwise_group_and_reference():
    judge = Judge(parse_rubric("Which is more complete?"), FakeBackend(), mode="pairwise")
    exs = [example(0)] * 3 + [example(1)] * 2
    results = judge.score_batch(exs, ["a", "abc", "ab", "xx", "xx"])
    assert [r.score for r in results] == [0.0, 1.0, 0.5, 0.5, 0.5]
    assert results[0].metrics["comparisons"] == 4  # 2 opponents x 2 orders
    lone = judge.score_batch([example(5)], ["alone"])[0]
    assert lone.error and ">= 2 completions" in lone.error
    ref_judge = Judge(parse_rubric("x"), FakeBackend(), mode="pairwise", against="reference")
    longer, shorter = ref_judge.score_batch([example(0), example(1)], ["Paris, France", "Par"])
    assert (longer.score, shorter.score) == (1.0, 0.0)


def test_judge_in_an_aggregate_with_a_rule_reward(monkeypatch):
    backend = FakeBackend()
    monkeypatch.setattr("rft_jax.rewards.judge.reward.JudgeConfig.build",
                        lambda self: Judge(parse_rubric(self.rubric), backend))
    scorer = build_reward({"name": "aggregate", "components": {
        "judge": {"name": JUDGE, "rubric": "Correct?", "weight": 0.5},
        "exact": {"name": "string_check", "operation": "ilike", "weight": 0.5}}})
    good, bad = scorer.score_batch([example(), example()], ["Paris", "Rome"])
    assert good.score == pytest.approx(0.5 * 0.9 + 0.5) and bad.score == pytest.approx(0.5 * 0.2)
    assert good.components == {"judge": 0.9, "exact": 1.0}
    report = run_reward_test(build_reward({"name": JUDGE, "rubric": "Correct?"}), [example(0), example(1)])
    assert report.separation == 1.0
    with pytest.raises(ValueError, match="bad parameters"):
        build_reward({"name": JUDGE, "rubric": "x", "temprature": 0.5})


@pytest.fixture(scope="module")
def judge_server():
    from test_serving_support import scripted_model, smollm2_tokenizer

    from rft_jax.serving import BackgroundServer, Engine, EngineConfig, make_app

    tok = smollm2_tokenizer()
    cfg, params = scripted_model(tok, "Clear enough. Score: 7")
    engine = Engine(params, cfg, eos_ids=tok.eos_ids, config=EngineConfig(slots=4, max_context=1024)).start()
    with BackgroundServer(make_app(engine, tok, "judge-model")) as server:
        yield server, engine, (cfg, params, tok)
    engine.stop()


def test_judge_served_by_rft_jax_serve(judge_server):
    server, engine, _ = judge_server
    spec = {"name": JUDGE, "rubric": {"text": "Is the answer clear?", "scale": [0, 10]},
            "base_url": server.base_url, "model": "judge-model", "concurrency": 4}
    scorer = build_reward(spec)
    results = scorer.score_batch([example(0), example(1), example(2)], ["Paris", "Lyon", "Nice"])
    assert [r.score for r in results] == [pytest.approx(0.7)] * 3 and not any(r.error for r in results)
    steps = engine.steps
    again = scorer.score_batch([example(0)], ["Paris"])[0]
    assert again.score == pytest.approx(0.7) and engine.steps == steps  # answered from the cache
    wrong_model = build_reward({**spec, "model": "nope", "retries": 0}).score_batch([example()], ["Paris"])[0]
    assert wrong_model.error and "404" in wrong_model.error


def test_local_backend_and_unreachable_endpoint(judge_server):
    from rft_jax.rewards.judge.backend_http import OpenAIBackend
    from rft_jax.rewards.judge.backend_local import LocalBackend

    local = LocalBackend("scripted", loaded=judge_server[2])
    judge = Judge(parse_rubric("Clear?"), local, samples=2)
    result = judge.score_batch([example()], ["Paris"])[0]
    assert result.score == pytest.approx(0.7) and result.metrics["judge_unparsed"] == 0
    dead = OpenAIBackend("http://127.0.0.1:9/v1", "m", retries=1, timeout_s=2)
    (err,) = dead.complete([[{"role": "user", "content": "hi"}]], 1)
    assert isinstance(err, JudgeBackendError) and "2 attempts" in str(err)
