"""OpenAI RFT graders accepted unchanged: each grader type against the examples and rules of OpenAI's graders
guide, and the same JSON through the normal reward path (parse_spec, build_reward, `rft-jax reward test`)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rft_jax.cli.reward import main as reward_main
from rft_jax.data import Example
from rft_jax.rewards import RewardSpec, build_reward, parse_spec
from rft_jax.rewards.openai_graders import formula, templating
from rft_jax.rewards.openai_graders.score_model import judge_params
from rft_jax.rewards.text_similarity import fuzzy_ratio, gleu, meteor, rouge_l, rouge_n


def row(reference=None, **fields) -> Example:
    return Example(id="r", messages=[{"role": "user", "content": "q"}], reference_answer=reference, metadata=fields)


def score(grader: dict, example: Example, completion: str):
    return build_reward(grader).score(example, completion)


# ---- templating -------------------------------------------------------------------------------------------------

def test_templates_read_nested_item_fields_and_the_sample():
    item = templating.item_of(row("Paris", meta={"tags": ["geo", {"k": 7}]}, smiles="CCO"))
    sample = templating.sample_of('{"name": "John", "scores": [1, 2.5]}')
    render = lambda t: templating.render(t, item, sample)  # noqa: E731
    assert render("{{item.reference_answer}} / {{ item.smiles }}") == "Paris / CCO"
    assert render("{{item.meta.tags[0]}} {{item.meta.tags[1].k}} {{item.meta['tags'][1]}}") == 'geo 7 {"k": 7}'
    assert render("{{sample.output_json.name}} {{sample.output_json.scores[1]}}") == "John 2.5"
    assert render("{{sample.output_text}}") == '{"name": "John", "scores": [1, 2.5]}'
    assert render("{{sample.choices[0].message.content}}") == render("{{sample.output_text}}")
    assert templating.sample_of('Here:\n```json\n{"a": 1}\n```')["output_json"] == {"a": 1}
    with pytest.raises(templating.TemplateError, match="has no 'missing'"):
        render("{{item.missing}}")
    with pytest.raises(templating.TemplateError, match="not a JSON object"):
        templating.render("{{sample.output_json.name}}", item, templating.sample_of("plain text"))


def test_template_namespaces_are_checked_when_the_grader_is_read():
    base = {"type": "string_check", "reference": "x", "operation": "eq"}
    for bad, message in [("{{ output_text }}", "namespace"), ("{{ model.output_text }}", "'item' or 'sample'"),
                         ("{{ sample.output_audio.transcript }}", "no output_audio"), ("{{ item. }}", "path")]:
        with pytest.raises(ValueError, match=message):
            parse_spec({**base, "input": bad})


# ---- string_check -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("operation, completion, expected", [
    ("eq", "Paris", 1.0), ("eq", "paris", 0.0), ("eq", "Paris ", 0.0),      # case-sensitive, exact
    ("ne", "Lyon", 1.0), ("ne", "Paris", 0.0), ("neq", "Lyon", 1.0),         # `neq`, as the guide's prose spells it
    ("like", "It is Paris.", 1.0), ("like", "It is PARIS.", 0.0),            # contains, case-sensitive
    ("ilike", "It is PARIS.", 1.0), ("ilike", "It is Lyon.", 0.0),           # contains, any case
])
def test_string_check_operations(operation, completion, expected):
    grader = {"type": "string_check", "name": "capital", "operation": operation,
              "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}"}
    assert score(grader, row("Paris"), completion).score == expected


def test_the_guides_tool_call_grader_is_read_and_a_text_completion_has_no_tool_call():
    grader = {"type": "multi", "calculate_output": "0.5 * function_name + 0.5 * arguments", "graders": {
        "function_name": {"name": "function_name", "type": "string_check", "input": "get_acceptors",
                          "reference": "{{sample.output_tools[0].function.name}}", "operation": "eq"},
        "arguments": {"name": "arguments", "type": "string_check", "input": "{\"smiles\": \"{{item.smiles}}\"}",
                      "reference": "{{sample.output_tools[0].function.arguments}}", "operation": "eq"}}}
    result = score(grader, row(smiles="CCO"), "get_acceptors(CCO)")
    assert result.score == 0.0 and "sample.output_tools is a list of 0, no [0]" in result.error


# ---- text_similarity ----------------------------------------------------------------------------------------------

def test_similarity_metrics_match_their_reference_implementations():
    assert fuzzy_ratio("this is a test", "this is a test!") == pytest.approx(28 / 29)  # rapidfuzz fuzz.ratio 96.55
    assert fuzzy_ratio("", "") == 1.0 and fuzzy_ratio("abc", "") == 0.0
    assert rouge_n("the cat sat on a mat", "the cat sat on the mat", 2) == pytest.approx(0.6)  # 3 of 5 bigrams
    assert rouge_n("The cat, sat!", "the cat sat", 1) == 1.0  # rouge-score tokens: lower-case, no punctuation
    assert rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(2 * 5 / 11)
    assert gleu("the cat", "the cat sat") == pytest.approx(0.5)  # 3 matches / 3 candidate, 6 reference n-grams
    assert meteor("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1 - 0.5 / 6 ** 3)  # nltk
    assert meteor("mat the on sat cat the", "the cat sat on the mat") == pytest.approx(0.5)  # 6 chunks: halved


@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3",
                                    "rouge_4", "rouge_5", "rouge_l"])
def test_every_text_similarity_metric_ranks_a_close_answer_above_a_far_one(metric):
    grader = {"type": "text_similarity", "name": "sim", "evaluation_metric": metric,
              "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}"}
    ref = "the quick brown fox jumps over the lazy dog"
    scorer = build_reward(grader)
    same, close, far = (scorer.score(row(ref), c).score for c in
                        (ref, "the quick brown fox jumps over the lazy cat", "a completely different sentence"))
    assert same == pytest.approx(1.0, abs=0.01) and 0.0 < close < same and far < close


def test_pass_threshold_marks_a_pass_and_keeps_the_similarity_as_the_score():
    grader = {"type": "text_similarity", "name": "sim", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.9,
              "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}"}
    near, far = score(grader, row("John Doe"), "Jon Doe"), score(grader, row("John Doe"), "Jane Roe")
    assert near.score == pytest.approx(14 / 15) and near.metrics == {"passed": 1.0}
    assert far.score == pytest.approx(10 / 16) and far.metrics == {"passed": 0.0}  # LCS "Jn oe"


def test_cosine_is_refused_and_the_error_says_what_to_use():
    grader = {"type": "text_similarity", "name": "sim", "evaluation_metric": "cosine", "pass_threshold": 0.5,
              "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}"}
    with pytest.raises(ValueError, match="embeddings model") as err:
        build_reward(grader)
    assert "fuzzy_match" in str(err.value) and "score_model" in str(err.value)


# ---- python ----------------------------------------------------------------------------------------------------------

def test_python_grader_from_the_guide_and_one_reading_sample_and_item():
    assert score({"type": "python", "source": "def grade(sample, item):\n    return 1.0",
                  "image_tag": "2025-05-08"}, row("x"), "anything").score == 1.0
    source = ("import json\n\ndef grade(sample, item):\n"
              "    answer = sample['output_json'].get('answer')\n"
              "    return 1.0 if answer == item['reference_answer'] and item['level'] == 'easy' else 0.25\n")
    scorer = build_reward({"type": "python", "name": "json_answer", "source": source})
    results = scorer.score_batch([row(4, level="easy")] * 3, ['{"answer": 4}', '{"answer": 5}', "4"])
    assert [r.score for r in results] == [1.0, 0.25, 0.25] and not any(r.error for r in results)


@pytest.mark.parametrize("source, error", [
    ("def grade(sample, item):\n    return 'high'", "returned 'high', not a finite float"),
    ("def grade(sample, item):\n    return float('nan')", "not a finite float"),
    ("def grade(sample, item):\n    raise KeyError('reference_answer')", "grade raised KeyError"),
])
def test_python_grader_that_does_not_return_a_number_grades_zero_with_the_reason(source, error):
    result = score({"type": "python", "name": "p", "source": source}, row("x"), "y")
    assert result.score == 0.0 and error in result.error


def test_python_grader_importing_a_missing_module_says_so_and_how_to_fix_it():
    source = "import rft_jax_no_such_module\n\ndef grade(sample, item):\n    return 1.0"
    result = score({"type": "python", "name": "p", "source": source}, row("x"), "y")
    assert result.score == 0.0
    assert "loading the grader's source raised ModuleNotFoundError: No module named 'rft_jax_no_such_module'" \
        in result.error
    assert "install the module here, or use the standard library" in result.error


def test_python_grader_using_only_the_standard_library_scores():
    source = ("import re\nfrom fractions import Fraction\n\ndef grade(sample, item):\n"
              "    numbers = re.findall(r'-?\\d+(?:/\\d+)?', sample['output_text'])\n"
              "    if not numbers:\n        return 0.0\n"
              "    return 1.0 if Fraction(numbers[-1]) == Fraction(item['reference_answer']) else 0.5\n")
    scorer = build_reward({"type": "python", "name": "fraction", "source": source})
    results = scorer.score_batch([row("3/4")] * 3, ["so it is 6/8", "so it is 2/3", "no idea"])
    assert [(r.score, r.error) for r in results] == [(1.0, None), (0.5, None), (0.0, None)]


def test_python_grader_source_is_checked_without_running_it():
    for source, message in [("def grade(sample, item) return 1", "line 1"), ("def score(s, i):\n    return 1",
                                                                             "must define grade"),
                            ("def grade(sample):\n    return 1", "two arguments")]:
        with pytest.raises(ValueError, match=message):
            build_reward({"type": "python", "source": source})


# ---- score_model --------------------------------------------------------------------------------------------------

class FakeGraderModel(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions endpoint that grades like the guide's prompt asks: 1 for an exact
    match of reference and answer, 0.5 when similar, 0 otherwise; other replies on request."""
    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        user = body["messages"][-1]["content"]
        reference = user.split("Reference: ")[1].split(". Model answer:")[0]
        answer = user.split("Model answer: ")[1].split("\n")[0]
        if answer == "garbage":
            reply = "I would rather not say."
        elif answer == "overshoot":
            reply = '{"steps": [], "result": 7}'
        else:
            result = 1 if answer == reference else 0.5 if answer.lower() == reference.lower() else 0
            reply = json.dumps({"steps": [{"description": "compare", "conclusion": "done"}], "result": result})
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def grader_model():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGraderModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def guide_score_model(**extra) -> dict:
    """The score_model grader of OpenAI's graders guide, as written there, plus rft_jax's keys in `extra`."""
    return {"type": "score_model", "name": "my_score_model", "input": [
        {"role": "system", "content": "You are an expert grader. If the reference and model answer are exact "
                                      "matches, output a score of 1. If they are somewhat similar in meaning, "
                                      "output a score in 0.5. Otherwise, give a score of 0."},
        {"role": "user", "content": "Reference: {{ item.reference_answer }}. Model answer: {{ sample.output_text }}"}],
        "pass_threshold": 0.5, "model": "o4-mini-2025-04-16", "range": [0, 1],
        "sampling_params": {"max_completions_tokens": 32768, "top_p": 1, "reasoning_effort": "medium"}, **extra}


def test_score_model_maps_onto_the_judge_backend():
    params = judge_params(guide_score_model())
    assert params["model"] == "o4-mini-2025-04-16" and params["base_url"] == "https://api.openai.com/v1"
    assert params["api_key_env"] == "OPENAI_API_KEY" and params["max_tokens"] == 32768
    local = judge_params(guide_score_model(base_url=None, model="smollm2-135m-instruct",
                                           sampling_params={"temperature": 0.7, "seed": 3}))
    assert local["base_url"] is None and local["temperature"] == 0.7 and local["seed"] == 3


def test_score_model_from_the_guide_grades_through_the_judge(grader_model):
    FakeGraderModel.requests.clear()
    scorer = build_reward(guide_score_model(base_url=grader_model))
    examples = [row(1.0), row("Paris"), row("Paris"), row("Paris"), row("Paris")]
    results = scorer.score_batch(examples, ["1.0", "Paris", "paris", "Lyon", "garbage"])
    assert [r.score for r in results] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert [r.metrics.get("passed") for r in results[:4]] == [1.0, 1.0, 1.0, 0.0]
    assert results[4].error and "no numeric result" in results[4].error  # 0 as documented, flagged as an error
    first = next(r for r in FakeGraderModel.requests if "Reference: 1.0" in r["messages"][1]["content"])
    assert first["model"] == "o4-mini-2025-04-16" and first["max_tokens"] == 32768
    assert first["messages"][0]["content"].startswith("You are an expert grader.")
    assert first["messages"][1]["content"].startswith("Reference: 1.0. Model answer: 1.0\n\nReply with only a JSON")


def test_score_model_clamps_to_range_and_maps_the_developer_role(grader_model):
    FakeGraderModel.requests.clear()
    grader = guide_score_model(base_url=grader_model, range=[-1, 5], pass_threshold=None)
    grader["input"][0]["role"] = "developer"
    result = score(grader, row("Paris"), "overshoot")
    assert result.score == 5.0 and result.error is None
    assert FakeGraderModel.requests[-1]["messages"][0]["role"] == "system"
    assert "a number from -1 to 5" in FakeGraderModel.requests[-1]["messages"][-1]["content"]


def test_score_model_input_as_a_list_of_plain_strings_grades_as_its_check_promised(grader_model):
    # OpenAI's GraderInputs: content may be a list of strings and text parts. The check used to accept such
    # a list while the run indexed each string as a part (TypeError on every sample).
    FakeGraderModel.requests.clear()
    grader = guide_score_model(base_url=grader_model)
    grader["input"][1]["content"] = ["Reference: {{ item.reference_answer }}. ",
                                     {"type": "input_text", "text": "Model answer: {{ sample.output_text }}"}]
    result = score(grader, row("Madrid"), "Madrid")  # a prompt no other test asks: not a cached reply
    assert (result.score, result.error) == (1.0, None)
    assert FakeGraderModel.requests[-1]["messages"][1]["content"].startswith("Reference: Madrid. Model answer: Madrid")


def test_score_model_input_that_is_not_text_is_refused_when_read():
    grader = guide_score_model()
    grader["input"][1]["content"] = [{"type": "input_text", "text": "Is this {{ sample.output_text }}?"},
                                     {"type": "input_image", "image_url": "https://x/cat.png"}]
    with pytest.raises(ValueError, match=r"input\[1\] content holds a 'input_image' block, not text; grader input"):
        build_reward(grader)
    grader["input"][1]["content"] = None
    with pytest.raises(ValueError, match=r"input\[1\] has no content; grader input must be text"):
        build_reward(grader)


# ---- multi ----------------------------------------------------------------------------------------------------------

GUIDE_MULTI = {"type": "multi", "graders": {
    "name": {"name": "name_grader", "type": "text_similarity", "input": "{{sample.output_json.name}}",
             "reference": "{{item.name}}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.9},
    "email": {"name": "email_grader", "type": "string_check", "input": "{{sample.output_json.email}}",
              "reference": "{{item.email}}", "operation": "eq"}},
    "calculate_output": "(name + email) / 2"}


def test_the_guides_multi_grader_over_json_output():
    person = row(name="John Doe", email="john.doe@gmail.com")
    scorer = build_reward(GUIDE_MULTI)
    exact, misspelt, wrong_email = (scorer.score(person, json.dumps(c)) for c in [
        {"name": "John Doe", "email": "john.doe@gmail.com"}, {"name": "Jon Doe", "email": "john.doe@gmail.com"},
        {"name": "John Doe", "email": "jd@gmail.com"}])
    assert exact.score == 1.0 and exact.components == {"name": 1.0, "email": 1.0}
    assert 0.5 < misspelt.score < 1.0 and misspelt.metrics == {"name/passed": 1.0}  # email right: 0.5-1.0
    assert wrong_email.score == 0.5  # email wrong: 0-0.5
    broken = scorer.score(person, "John Doe, john.doe@gmail.com")
    assert broken.score == 0.0 and "name: " in broken.error and "email: " in broken.error


def test_calculate_output_supports_the_documented_operators_and_functions():
    tree = formula.parse("max(a, b) ^ 2 + min(a, b) * 3 - abs(a - b) / 2 + floor(2.7) + ceil(0.2) "
                         "+ exp(0) + sqrt(4) + log(1) - (1 + 1)", ["a", "b"])
    assert formula.evaluate(tree, {"a": 0.5, "b": 1.0}) == pytest.approx(1 + 1.5 - 0.25 + 2 + 1 + 1 + 2 + 0 - 2)
    assert formula.evaluate(formula.parse("-2 ^ 2", []), {}) == -4.0  # power binds tighter than unary minus


@pytest.mark.parametrize("bad", ["__import__('os').system('true')", "name.__class__", "email % 2", "open('x')",
                                 "name if email else 0", "[name]", "unknown + 1", "min", "abs(name, email)"])
def test_calculate_output_refuses_everything_else(bad):
    with pytest.raises(ValueError, match="calculate_output"):
        build_reward({**GUIDE_MULTI, "calculate_output": bad})


def test_formula_errors_are_per_sample_and_multi_does_not_nest():
    grader = {**GUIDE_MULTI, "calculate_output": "email / (name - 1)"}
    result = score(grader, row(name="John Doe", email="e"), json.dumps({"name": "John Doe", "email": "e"}))
    assert result.score == 0.0 and "division by zero" in result.error
    with pytest.raises(ValueError, match="cannot hold another multi"):
        build_reward({"type": "multi", "graders": {"inner": GUIDE_MULTI}, "calculate_output": "inner"})


# ---- through the reward path --------------------------------------------------------------------------------------

EXACT = {"type": "string_check", "name": "exact", "operation": "eq", "input": "{{sample.output_text}}",
         "reference": "{{item.reference_answer}}"}


def test_a_grader_is_a_reward_spec_wherever_one_is_accepted(tmp_path):
    spec = parse_spec(EXACT)
    assert spec == RewardSpec("openai_grader", {"grader": EXACT}) and parse_spec(spec.to_json()) == spec
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(EXACT))
    for form in (EXACT, json.dumps(EXACT), str(path)):
        assert build_reward(form).score(row("Paris"), "Paris").score == 1.0
    mixed = build_reward({"name": "aggregate", "components": {
        "exact": {**EXACT, "weight": 2.0}, "format": {"name": "regex_format", "pattern": "^[A-Z]", "weight": 0.5}}})
    assert mixed.score(row("Paris"), "Paris").score == 2.5


@pytest.mark.parametrize("grader, message", [
    ({"type": "label_model"}, "score_model"), ({"type": "endpoint"}, "remote"), ({"type": "fancy"}, "unknown"),
    ({**EXACT, "operation": "approx"}, "operation must be one of"),
    ({"type": "score_model", "model": "m", "input": [{"role": "user", "content": "x"}], "range": [1, 0]}, "range"),
    ({"type": "score_model", "model": "m", "input": [{"role": "user", "content": "x"}],
      "sampling_params": {"temprature": 0}}, "unknown sampling_params"),
])
def test_malformed_graders_fail_when_read(grader, message):
    with pytest.raises(ValueError, match=message):
        build_reward(grader)


def test_reward_test_cli_runs_a_grader_file(tmp_path, capsys):
    data = tmp_path / "capitals.jsonl"
    rows = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo")]
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Capital of {c}?"}],
                                        "reference_answer": a}) + "\n" for c, a in rows))
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(EXACT))
    assert reward_main(["test", "--data", str(data), "--reward", str(grader)]) == 0
    out = capsys.readouterr().out
    assert "reference              n=4" in out and "OK:" in out and "separation: reference beats every bad" in out
