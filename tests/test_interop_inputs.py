"""Data from the managed RFT services (OpenAI, Bedrock) as it comes: content as text parts, evaluation sets with
duplicate prompts, no validation file, prompts over the token limit."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import jax
import pytest

from rft_jax.checkpoint.export import export_model
from rft_jax.cli.eval import main as eval_main
from rft_jax.data import DatasetError, Example, load_dataset, validate_lines
from rft_jax.data import example as example_module
from rft_jax.evaluation.evaluate import evaluate
from rft_jax.model import DEFAULT_MODEL, ModelConfig, init_params
from rft_jax.model.tokenizer import Tokenizer, load_tokenizer
from rft_jax.rewards import build_reward
from rft_jax.rewards.judge.backend_local import LocalBackend
from rft_jax.rewards.spec import RewardSpec
from rft_jax.rollout.engine import prompt_ids
from rft_jax.serving.protocol import parse_chat_request
from rft_jax.sft.demos import pairs_from_examples
from rft_jax.train import setup
from rft_jax.train.config import DataConfig, EvalConfig, SamplingConfig, TrainConfig
from rft_jax.train.loop import run

QUESTION = "What is 17 + 25?"
# Qwen3's chat template reads content only when it is a string; a list renders as nothing.
QWEN3_STYLE = (
    "{%- for message in messages %}"
    "{%- if message.content is string %}{%- set content = message.content %}{%- else %}{%- set content = '' %}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
TINY = ModelConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   head_dim=8, max_position_embeddings=512)


def parts(*texts: str) -> list[dict]:
    return [{"type": "text", "text": t} for t in texts]


def user_parts(text: str) -> dict:
    """A Bedrock/OpenAI-style user turn: the text split over two parts."""
    half = len(text) // 2
    return {"role": "user", "content": parts(text[:half], text[half:])}


def record(i: int, content, **extra) -> str:
    return json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": content}], "reference_answer": i,
                       **extra})


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def qwen3_style(tokenizer) -> Tokenizer:
    hf = copy.deepcopy(tokenizer.hf)
    hf.chat_template = QWEN3_STYLE
    return Tokenizer(hf, tokenizer.eos_ids)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tokenizer) -> str:
    """A random 2-layer model with SmolLM2's tokenizer (and chat template), as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("tiny_model")
    export_model(folder, TINY, init_params(TINY, jax.random.key(0), std=0.5), tokenizer)
    return str(folder)


def prompt_is_text(example, completion: str) -> float:
    """A user reward that reads the prompt as OpenAI's graders do: a string."""
    return float(QUESTION.lower() in example.messages[-1]["content"].lower())


# --- one flatten function, used wherever messages reach a chat template or a reward -----------------------------


def test_flatten_messages_joins_parts_and_keeps_other_keys():
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    messages = [{"role": "system", "content": "be brief"}, user_parts(QUESTION),
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "content": parts("42"), "tool_call_id": "c1", "name": "add"}]
    flat = example_module.flatten_messages(messages)
    assert [m["content"] for m in flat] == ["be brief", QUESTION, "", "42"]
    assert flat[2]["tool_calls"] == [call] and flat[3]["name"] == "add" and flat[3]["tool_call_id"] == "c1"
    assert messages[1]["content"] == parts(QUESTION[:8], QUESTION[8:])  # the input is not changed


def test_training_prompts_with_text_parts_render_like_strings_in_smollm2_template(tokenizer):
    # SmolLM2's template joins '...' + message['content'] and raised TypeError on a list.
    as_parts = Example("a", [user_parts(QUESTION)])
    as_string = Example("b", [{"role": "user", "content": QUESTION}])
    ids = prompt_ids(tokenizer, [as_parts, as_string])
    assert ids[0] == ids[1]
    assert QUESTION in tokenizer.decode(ids[0], skip_special_tokens=False)


def test_training_prompts_with_text_parts_reach_a_qwen3_style_template(qwen3_style):
    ids = prompt_ids(qwen3_style, [Example("a", [user_parts(QUESTION)])])[0]
    assert QUESTION in qwen3_style.decode(ids, skip_special_tokens=False)


def test_validation_measures_prompts_given_as_text_parts(tokenizer):
    result = validate_lines([record(1, parts(QUESTION[:8], QUESTION[8:]))], tokenizer=tokenizer, max_prompt_tokens=64)
    assert result.errors == []
    assert result.prompt_tokens == [len(tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}]))]


def test_warm_start_pairs_render_text_parts(tokenizer):
    ex = Example("a", [user_parts(QUESTION), {"role": "assistant", "content": parts("17 + 25 = ", "42")}])
    [(ids, target)] = pairs_from_examples(tokenizer, [ex])
    assert QUESTION in tokenizer.decode(ids, skip_special_tokens=False)
    assert target == "17 + 25 = 42"


def test_evaluation_renders_text_parts_and_records_the_prompt_text(tiny_model, tokenizer):
    from rft_jax.model import load_model

    cfg, params = load_model(tiny_model)
    result = evaluate(params, cfg, tokenizer, [Example("a", [user_parts(QUESTION)])],
                      {"r": build_reward("tests.test_interop_inputs:prompt_is_text")}, key=jax.random.key(0),
                      max_new_tokens=2)
    assert result.samples[0]["prompt"] == QUESTION
    assert result.metrics["r/mean"] == 1.0 and result.samples[0]["error"] is None


class RecordingTokenizer:
    """The tokenizer, recording each prompt it renders as text: what the model was shown."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer, self.rendered = tokenizer, []

    def apply_chat_template(self, messages, **kwargs):
        ids = self.tokenizer.apply_chat_template(messages, **kwargs)
        self.rendered.append(self.tokenizer.decode(ids, skip_special_tokens=False))
        return ids

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_judge_renders_text_parts(tiny_model, tokenizer):
    from rft_jax.model import load_model

    cfg, params = load_model(tiny_model)
    recording = RecordingTokenizer(tokenizer)
    judge = LocalBackend("tiny", max_tokens=2, loaded=(cfg, params, recording))
    developer = {"role": "developer", "content": parts("Grade ", "strictly.")}
    [replies] = judge.complete([[developer, user_parts(QUESTION)]], n=1)
    assert not isinstance(replies, Exception), replies
    assert len(replies) == 1
    [rendered] = recording.rendered
    assert f"<|im_start|>system\nGrade strictly.<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>" in rendered


def test_rewards_read_text_parts_as_a_string():
    scorer = build_reward("tests.test_interop_inputs:prompt_is_text")
    ex = Example("a", [user_parts(QUESTION)])
    [batched] = scorer.score_batch([ex], ["42"])
    assert (batched.score, batched.error) == (1.0, None)
    assert scorer.score(ex, "42").score == 1.0
    aggregate = build_reward({"name": "aggregate", "components": {"p": "tests.test_interop_inputs:prompt_is_text"}})
    assert aggregate.score(ex, "42").score == 1.0


def test_serving_flattens_with_the_shared_function():
    messages = [{"role": "developer", "content": parts("be ", "brief")}, user_parts(QUESTION)]
    req = parse_chat_request({"model": "m", "messages": messages}, "m")
    assert req.messages == example_module.flatten_messages(messages)
    assert req.messages[0] == {"role": "system", "content": "be brief"}


# --- OpenAI RFT rows (developer turns) and Bedrock/Nova text blocks validate as they come ------------------------

OPENAI_RFT_ROW = {  # the shape of a row of OpenAI's RFT guide: a developer instruction, the user's question
    "messages": [
        {"role": "developer", "content": "You are a chemistry tutor. Give the number of hydrogen-bond donors "
                                         "and acceptors as JSON."},
        {"role": "user", "content": "CC(=O)OC1=CC=CC=C1C(=O)O"}],
    "reference_answer": {"donor_bond_counts": 1, "acceptor_bond_counts": 4},
    "compound": "aspirin"}


def test_an_openai_rft_row_with_a_developer_turn_validates_and_renders_it_as_the_system_turn(tokenizer):
    result = validate_lines([json.dumps(OPENAI_RFT_ROW)], tokenizer=tokenizer, max_prompt_tokens=256,
                            require_reference=True)
    assert result.problems == []
    [example] = result.examples
    assert example.reference_answer == {"donor_bond_counts": 1, "acceptor_bond_counts": 4}
    assert example.metadata == {"compound": "aspirin"}
    rendered = tokenizer.decode(prompt_ids(tokenizer, [example])[0], skip_special_tokens=False)
    developer = OPENAI_RFT_ROW["messages"][0]["content"]
    assert f"<|im_start|>system\n{developer}<|im_end|>" in rendered
    assert "developer" not in rendered


def test_a_developer_turn_is_held_to_the_system_turns_rules():
    late = {"messages": [{"role": "user", "content": "q"}, {"role": "developer", "content": "late"}]}
    found = [(p.field, p.problem) for p in validate_lines([json.dumps(late)]).problems]
    assert found == [("messages[1].role", "system message after the first turn")]
    unknown = validate_lines([record(1, "q").replace('"user"', '"wizard"')]).problems
    assert "developer" in unknown[0].fix  # the error lists the accepted roles


@pytest.mark.parametrize("content", [
    [{"text": "What is "}, {"text": "17 + 25?"}],  # Bedrock Converse / Nova
    [{"type": "input_text", "text": "What is "}, {"type": "text", "text": "17 + 25?"}],  # Responses API
])
def test_text_blocks_that_flattening_reads_also_validate(content, tokenizer):
    result = validate_lines([record(1, content)], tokenizer=tokenizer, max_prompt_tokens=64)
    assert result.problems == []
    assert example_module.flatten_messages(result.examples[0].messages)[0]["content"] == QUESTION


def test_parts_that_flattening_would_drop_are_refused():
    image = {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
    [problem] = validate_lines([record(1, [{"type": "text", "text": "What is this?"}, image])]).problems
    assert (problem.field, problem.severity) == ("messages[0].content[1]", "error")
    assert "'image_url' part" in problem.problem


# --- evaluation sets may repeat a prompt; training sets may not ----------------------------------------------------


def test_eval_warns_about_duplicate_prompts_and_goes_on(tiny_model, tmp_path, capsys):
    data = tmp_path / "test.jsonl"
    data.write_text("\n".join([record(1, "2 + 2?"), record(2, "3 + 3?"), record(3, "2  + 2?"), record(4, "3 + 3?")]))
    out = tmp_path / "eval.json"
    rc = eval_main(["--model", tiny_model, "--data", str(data), "--reward", "tests.toy_rewards:brevity",
                    "--max-new-tokens", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "2 duplicate prompts" in err and "q3" in err and "q4" in err
    assert len(json.loads(out.read_text())["samples"]) == 4


def test_an_evaluation_set_may_repeat_a_prompt_but_not_reuse_an_id_for_another():
    lines = [record(1, "2 + 2?"), record(1, "2 + 2?"), record(2, "3 + 3?"), record(2, "4 + 4?")]
    found = [(p.line, p.field, p.severity) for p in validate_lines(lines, allow_duplicate_prompts=True).problems]
    assert found == [(2, "id", "warning"), (2, "messages", "warning"), (4, "id", "error")]
    assert {p.severity for p in validate_lines(lines).problems} == {"error"}


def test_training_data_still_refuses_duplicate_prompts(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join([record(1, "2 + 2?"), record(2, "2 + 2?")]))
    with pytest.raises(DatasetError, match="duplicate prompt"):
        load_dataset(str(data))


def test_eval_of_a_bad_file_says_why_without_a_traceback(tiny_model, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(record(1, "2 + 2?") + "\n{\"messages\": []}\n")
    assert eval_main(["--model", tiny_model, "--data", str(data), "--reward", "tests.toy_rewards:brevity"]) == 2
    assert f"{data}:2: messages" in capsys.readouterr().err


# --- runs without validation data, and prompts over the limit ----------------------------------------------------


def train_config(model: str, out_dir, train_file, **data) -> TrainConfig:
    cfg = TrainConfig(
        data=DataConfig(train_file=str(train_file), max_prompt_tokens=64, **data),
        reward=RewardSpec("tests.toy_rewards:brevity"), require_signal=False, batch_size=2, max_steps=2,
        sampling=SamplingConfig(samples_per_prompt=2, max_new_tokens=4), evaluation=EvalConfig(interval=1),
        out_dir=str(out_dir), seed=0, export=False)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=model, compute_dtype="float32"))


def write_train(path, n: int, long_ids: tuple[int, ...] = ()) -> None:
    lines = [record(i, f"{i} + {i}? " + ("and then some more words " * 40 if i in long_ids else "")) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow  # a whole run (20-95 s): `make test-slow`, keeping the default suite under 15 min
def test_run_without_validation_data_trains_with_no_nan(tiny_model, tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    write_train(train, 4)
    run_dir = tmp_path / "run"
    run(train_config(tiny_model, run_dir, train))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["step"] > 0] == [1, 2]
    values = [v for r in rows for v in r.values() if isinstance(v, float)]
    assert values and not any(math.isnan(v) for v in values)
    assert not any(k.startswith("val/") for r in rows for k in r)
    assert not (run_dir / "eval_base_val.json").exists() and not (run_dir / "eval_val.json").exists()
    assert "no validation data" in capsys.readouterr().out


def test_over_long_prompts_are_skipped_counted_and_recorded(tiny_model, tmp_path, capsys):
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    write_train(train, 12, long_ids=(1, 3, 4, 5, 6, 7, 8))
    val.write_text(record(100, "5 + 5?") + "\n")
    cfg = train_config(tiny_model, tmp_path / "run", train, val_file=str(val))
    splits = setup.prepare(cfg, tmp_path / "run").splits
    assert [ex.id for ex in splits.train] == ["q0", "q2", "q9", "q10", "q11"]
    out = capsys.readouterr().out
    assert "skipped 7 of 12 prompts" in out and "q1, q3, q4, q5, q6 and 2 more" in out
    summary = json.loads((tmp_path / "run" / "data_summary.json").read_text())
    assert summary["train"]["skipped_over_max_prompt_tokens"] == 7
    assert summary["train"]["examples"] == 5 and summary["val"]["skipped_over_max_prompt_tokens"] == 0


def test_refused_only_when_every_prompt_is_over_the_limit(tiny_model, tmp_path):
    train = tmp_path / "train.jsonl"
    write_train(train, 2, long_ids=(0, 1))
    with pytest.raises(DatasetError, match="over the limit of 64"):
        setup.prepare(train_config(tiny_model, tmp_path / "run", train), tmp_path / "run")
