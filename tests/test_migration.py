"""Coming from Bedrock or OpenAI RFT: Bedrock's hyperparameter names on `rft-jax train`, `rft-jax migrate
openai-job`, reward files, and docs/migration.md command by command: its data, reward and migrate commands run
as written, its train and serve commands are parsed and their rewards built; a slow test trains with the first
train command."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import tyro

from rft_jax.cli import bedrock_names, migrate
from rft_jax.cli.reward import RewardServeOptions
from rft_jax.cli.train import build_config, load_experiment, split_config_arg
from rft_jax.cli.train import main as train_main
from rft_jax.data import Example, load_dataset
from rft_jax.data.reasoning import EFFORT_BUDGETS, ReasoningConfig
from rft_jax.rewards import build_reward, parse_spec
from rft_jax.train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "migration.md"
EXAMPLES = REPO / "docs" / "migration_examples"
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def parse_train(argv: list[str]) -> TrainConfig:
    """What `rft-jax train ARGV` would train, without training."""
    path, argv = split_config_arg(argv)
    return build_config(load_experiment(path) if path else TrainConfig(), argv)


# ---- Bedrock's names on `rft-jax train` -------------------------------------------------------------------------

def test_bedrock_names_become_rft_jax_flags_in_both_spellings():
    argv = ["--epochCount", "3", "--learningRate=2e-5", "--seed", "1", "--evalInterval=4"]
    assert bedrock_names.translate(argv) == ["--epochs", "3", "--optimizer.learning-rate=2e-5", "--seed", "1",
                                             "--evaluation.interval=4"]
    assert bedrock_names.translate(["--reward", "--epochCountish"]) == ["--reward", "--epochCountish"]


def test_bedrock_names_set_the_same_config_fields():
    cfg = parse_train(["--epochCount", "3", "--learningRate=2e-5", "--maxPromptLength", "512",
                       "--inferenceMaxTokens=1024", "--trainingSamplePerPrompt", "4", "--evalInterval", "10",
                       "--preset", "dapo", "--batch-size", "16"])
    assert (cfg.epochs, cfg.optimizer.learning_rate, cfg.data.max_prompt_tokens) == (3, 2e-5, 512)
    assert (cfg.sampling.max_new_tokens, cfg.sampling.samples_per_prompt, cfg.evaluation.interval) == (1024, 4, 10)
    assert cfg.batch_size == 16 and cfg.dynamic_sampling.enabled  # the preset still applies
    assert set(bedrock_names.ALIASES) | set(bedrock_names.REFUSED) | {bedrock_names.EFFORT} == {
        "epochCount", "batchSize", "learningRate", "maxPromptLength", "inferenceMaxTokens",
        "trainingSamplePerPrompt", "reasoningEffort", "evalInterval"}  # RFTHyperParameters, every member


def test_batch_size_has_no_equivalent_and_is_refused_before_training(capsys):
    assert train_main(["--batchSize", "128"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size N/G" in err and "docs/migration.md" in err


ANSWER = ReasoningConfig.answer_budget  # kept unless the job sets a completion size


@pytest.mark.parametrize("argv, think", [(["--reasoningEffort", "low"], 256),
                                         (["--reasoningEffort=medium"], 1024),
                                         (["--reasoningEffort", "high"], 4096)])
def test_reasoning_effort_turns_reasoning_on_with_its_think_budget(argv, think):
    cfg = parse_train(argv)
    assert (cfg.reasoning.mode, cfg.reasoning.think_budget, cfg.reasoning.answer_budget) == ("on", think, ANSWER)
    assert cfg.sampling.max_new_tokens == think + ANSWER
    assert think == EFFORT_BUDGETS[argv[-1].split("=")[-1]]


@pytest.mark.parametrize("argv, think, answer", [
    (["--inferenceMaxTokens", "512", "--reasoningEffort", "low"], 256, 256),  # the answer gets the rest
    (["--reasoningEffort=medium", "--inferenceMaxTokens=512"], 512 - ANSWER, ANSWER),  # it keeps its default
    (["--reasoningEffort", "high", "--sampling.max-new-tokens", "4096"], 4096 - ANSWER, ANSWER),
])
def test_reasoning_effort_shares_inference_max_tokens_with_the_answer(argv, think, answer):
    cfg = parse_train(argv)
    assert (cfg.reasoning.mode, cfg.reasoning.think_budget, cfg.reasoning.answer_budget) == ("on", think, answer)
    assert cfg.sampling.max_new_tokens == think + answer


@pytest.mark.parametrize("argv, says", [
    (["--reasoningEffort", "extreme"], "--reasoningEffort 'extreme' is not one of Bedrock's levels: write "
                                       "--reasoningEffort low, medium or high (docs/migration.md)"),
    (["--reasoningEffort=minimal"], "write --reasoningEffort low, medium or high"),  # not a Bedrock level
    (["--epochs", "2", "--reasoningEffort"], "--reasoningEffort needs a value: --reasoningEffort low|medium|high"),
    (["--reasoningEffort", "low", "--inferenceMaxTokens", str(ANSWER)],
     f"--inferenceMaxTokens {ANSWER} leaves no room to think"),
])
def test_a_reasoning_effort_rft_jax_cannot_take_is_refused_before_training(argv, says, capsys):
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rft-jax train: ") and says in err, err


def test_an_alias_value_rft_jax_cannot_take_fails_like_its_own_flag():
    with pytest.raises(SystemExit) as exit_:
        parse_train(["--inferenceMaxTokens", "0"])  # a completion of no tokens
    assert exit_.value.code == 2


# ---- `rft-jax migrate openai-job` ---------------------------------------------------------------------------------

def openai_job() -> dict:
    return json.loads((EXAMPLES / "openai_job.json").read_text(encoding="utf-8"))


def test_openai_job_maps_each_field_and_notes_the_rest():
    job = openai_job()
    migration, grader = migrate.migrate_openai_job(job, model="m", grader_path="g.json", default_lr=1e-4)
    flags = dict(migration.flags)
    assert grader == job["method"]["reinforcement"]["grader"]
    assert flags == {"--model.name": "m", "--data.train-file": "file-TrainAbc123.jsonl",
                     "--data.val-file": "file-ValDef456.jsonl", "--reward": "g.json", "--epochs": "2",
                     "--batch-size": "8", "--optimizer.learning-rate": "0.0001", "--evaluation.interval": "5",
                     "--reasoning.mode": "on", "--reasoning.think-budget": "1024", "--seed": "42",
                     "--out-dir": "runs/word-problems"}
    notes = "\n".join(migration.notes)
    for said in ("o4-mini-2025-04-16", "/v1/files/file-TrainAbc123/content", "learning_rate_multiplier=1.5",
                 "eval_samples=3", "reasoning_effort=medium", "compute_multiplier: 'auto'"):
        assert said in notes


def test_openai_job_reads_the_deprecated_top_level_hyperparameters():
    job = openai_job()
    job["method"]["reinforcement"].pop("hyperparameters")
    job["hyperparameters"] = {"n_epochs": 5, "batch_size": "auto"}
    migration, _ = migrate.migrate_openai_job(job, model="m", grader_path="g", train_file="t.jsonl", default_lr=1e-4)
    flags = dict(migration.flags)
    assert flags["--epochs"] == "5" and "--batch-size" not in flags and flags["--data.train-file"] == "t.jsonl"


def test_migrate_writes_the_grader_and_prints_a_command_that_parses(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert migrate.main(["openai-job", str(EXAMPLES / "openai_job.json"), "--grader-out", "grader.json"]) == 0
    assert json.loads(Path("grader.json").read_text()) == openai_job()["method"]["reinforcement"]["grader"]
    cfg = parse_train(script_command(capsys.readouterr().out))
    assert (cfg.epochs, cfg.batch_size, cfg.seed, cfg.evaluation.interval) == (2, 8, 42, 5)
    assert cfg.optimizer.learning_rate == TrainConfig().optimizer.learning_rate  # the default, spelt out
    assert cfg.reward.name == "openai_grader" and cfg.data.val_file == "file-ValDef456.jsonl"
    assert (cfg.reasoning.mode, cfg.reasoning.think_budget, cfg.sampling.max_new_tokens) == ("on", 1024, 1024 + ANSWER)


@pytest.mark.parametrize("change, says", [
    (lambda job: job["method"].update(type="supervised"), "rft-jax sft"),
    (lambda job: job["method"]["reinforcement"]["grader"].update(type="label_model"), "score_model"),
])
def test_migrate_refuses_what_it_cannot_carry_over(change, says, tmp_path, monkeypatch, capsys):
    assert says in refused_job_error(change, tmp_path, monkeypatch, capsys)


def refused_job_error(change, tmp_path, monkeypatch, capsys) -> str:
    """stderr of `migrate openai-job` on the example job after `change`; it must exit 2 and write no grader."""
    job = openai_job()
    change(job)
    (tmp_path / "job.json").write_text(json.dumps(job))
    monkeypatch.chdir(tmp_path)
    assert migrate.main(["openai-job", "job.json"]) == 2
    assert not (tmp_path / "grader.json").exists()
    return capsys.readouterr().err


def move_hyperparameters_to_the_top(job: dict, value) -> None:
    """The deprecated place: top-level `hyperparameters`."""
    del job["method"]["reinforcement"]["hyperparameters"]
    job["hyperparameters"] = value


@pytest.mark.parametrize("change, says", [
    (lambda job: job["method"]["reinforcement"].update(hyperparameters="auto"),
     "method.reinforcement.hyperparameters must be an object"),
    (lambda job: move_hyperparameters_to_the_top(job, [2]), "hyperparameters must be an object"),
    (lambda job: job["method"]["reinforcement"]["hyperparameters"].update(n_epochs="two"),
     "method.reinforcement.hyperparameters.n_epochs must be a whole number of at least 1"),
    (lambda job: job["method"]["reinforcement"]["hyperparameters"].update(batch_size=0),
     "method.reinforcement.hyperparameters.batch_size must be a whole number of at least 1"),
    (lambda job: job["method"]["reinforcement"]["hyperparameters"].update(eval_interval=2.5),
     "hyperparameters.eval_interval must be a whole number"),
    (lambda job: job["method"]["reinforcement"]["hyperparameters"].update(learning_rate_multiplier=-1),
     "learning_rate_multiplier must be a number above 0"),
    (lambda job: job["method"]["reinforcement"]["hyperparameters"].update(reasoning_effort="extreme"),
     "method.reinforcement.hyperparameters.reasoning_effort must be one of 'default', 'minimal', 'low', "
     "'medium', 'high', got 'extreme'"),
    (lambda job: job.update(seed="42"), "seed must be a whole number"),
    (lambda job: job.update(training_file=17), "training_file must be an OpenAI file id"),
    (lambda job: job["method"]["reinforcement"]["grader"].update(type="endpoint"), "method.reinforcement.grader: "),
])
def test_migrate_names_the_file_and_field_of_a_bad_value(change, says, tmp_path, monkeypatch, capsys):
    err = refused_job_error(change, tmp_path, monkeypatch, capsys)
    assert err.startswith("rft-jax migrate openai-job: job.json: ") and says in err, err


@pytest.mark.parametrize("text", ["", "{\"method\": ", "\xff\xfe"])
def test_migrate_names_a_job_file_that_is_not_json(text, tmp_path, monkeypatch, capsys):
    (tmp_path / "job.json").write_bytes(text.encode("latin-1"))
    monkeypatch.chdir(tmp_path)
    assert migrate.main(["openai-job", "job.json"]) == 2
    err = capsys.readouterr().err
    assert "job.json: not valid JSON (" in err and "Traceback" not in err, err


def test_a_job_without_a_training_file_gets_a_placeholder_and_a_note(tmp_path, monkeypatch, capsys):
    job = openai_job()
    del job["training_file"], job["validation_file"]
    (tmp_path / "job.json").write_text(json.dumps(job))
    monkeypatch.chdir(tmp_path)
    assert migrate.main(["openai-job", "job.json"]) == 0
    script = capsys.readouterr().out
    assert "# - training_file: the job names none; replace TRAIN.jsonl" in script
    cfg = parse_train(script_command(script))
    assert cfg.data.train_file == "TRAIN.jsonl" and cfg.data.val_file is None


@pytest.mark.parametrize("effort, think", [("low", 256), ("medium", 1024), ("default", 1024),
                                           ("high", 4096)])
def test_migrate_turns_reasoning_effort_into_reasoning_mode(effort, think, tmp_path, monkeypatch, capsys):
    job = openai_job()
    job["method"]["reinforcement"]["hyperparameters"]["reasoning_effort"] = effort
    (tmp_path / "job.json").write_text(json.dumps(job))
    monkeypatch.chdir(tmp_path)
    assert migrate.main(["openai-job", "job.json"]) == 0
    script = capsys.readouterr().out
    cfg = parse_train(script_command(script))
    assert (cfg.reasoning.mode, cfg.reasoning.think_budget, cfg.reasoning.answer_budget) == ("on", think, ANSWER)
    assert cfg.sampling.max_new_tokens == think + ANSWER
    note = next(line for line in script.splitlines() if line.startswith(f"# - reasoning_effort={effort}"))
    for said in (f"think budget of {think} tokens", f"default {ANSWER} tokens", f"becomes {think + ANSWER}",
                 "reads only the answer after </think>"):
        assert said in note, note


def test_minimal_reasoning_effort_keeps_reasoning_off():
    job = openai_job()
    job["method"]["reinforcement"]["hyperparameters"]["reasoning_effort"] = "minimal"
    migration, _ = migrate.migrate_openai_job(job, model="m", grader_path="g", default_lr=1e-4)
    assert not any(flag.startswith("--reasoning.") for flag, _ in migration.flags)
    assert any(note.startswith("reasoning_effort=minimal: a think budget of 0 tokens, so reasoning stays off")
               for note in migration.notes)


def script_command(script: str) -> list[str]:
    """The `rft-jax train` arguments of a printed script (comments dropped, continuations joined)."""
    command = " ".join(line.rstrip("\\") for line in script.splitlines() if line and not line.startswith("#"))
    words = shlex.split(command)
    assert words[:2] == ["rft-jax", "train"], words
    return words[2:]


# ---- a reward named by its .json file ----------------------------------------------------------------------------

def test_a_missing_reward_file_is_not_found_not_an_unknown_reward(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="reward file missing.json not found"):
        parse_spec("missing.json")
    with pytest.raises(ValueError, match="reward file grader/missing.json not found"):
        build_reward("grader/missing.json")


@pytest.mark.parametrize("text, says", [
    ('{"type": "string_check", "name": ', "grader.json: not valid JSON (Expecting value: line 1"),
    ('["string_check"]', "grader.json: a reward spec is a name"),
    ('{"type": "label_model"}', "grader.json: "),
])
def test_a_bad_reward_file_is_named_in_the_error(text, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("grader.json").write_text(text)
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_spec("grader.json")
    with pytest.raises(SystemExit):  # `rft-jax train --reward grader.json` stops with the message, before training
        parse_train(["--reward", "grader.json"])


def test_an_inline_json_spec_that_is_not_json_says_so():
    with pytest.raises(ValueError, match="is not valid JSON"):
        parse_spec('{"name": "math_answer",}')


# ---- the rollout log shows text-part prompts as text --------------------------------------------------------------

def test_rollout_log_writes_the_prompt_text_of_text_parts():
    from rft_jax.train.loop import logging_hooks  # noqa: PLC0415 (imports the trainer)

    written = []
    writer = types.SimpleNamespace(write_rollouts=lambda step, records: written.append(records))
    hook = next(h for h in logging_hooks(TrainConfig(), writer) if h.name == "rollout_log")
    example = Example(id="e", messages=[{"role": "user", "content": [{"type": "text", "text": "What is "},
                                                                      {"type": "text", "text": "6 x 7?"}]}])
    sample = types.SimpleNamespace(example=example, text="42", reward=1.0, components={})
    hook.fn(types.SimpleNamespace(step=5, rollouts=types.SimpleNamespace(groups=[[sample]])))
    assert written[0][0]["prompt"] == "What is 6 x 7?"


# ---- docs/migration.md, command by command ----------------------------------------------------------------------

def guide_commands(text: str) -> list[str]:
    """Every command of the guide's ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        commands += [line.strip() for line in block.replace("\\\n", " ").splitlines()
                     if line.strip() and not line.strip().startswith("#")]
    return commands


# What the slow test appends to the guide's first train command; the guide says so, in these words.
SMALL_RUN = ["--max-steps", "1", "--batch-size", "2", "--sampling.samples-per-prompt", "2",
             "--sampling.max-new-tokens", "16", "--no-require-signal", "--no-export"]


def command_words(command: str) -> list[str]:
    """The command's words after any VAR=value assignments."""
    words = shlex.split(command)
    return words[next(i for i, w in enumerate(words) if not ENV_ASSIGNMENT.match(w)):]


def first_train_command(text: str) -> str:
    return next(c for c in guide_commands(text) if command_words(c)[:2] == ["rft-jax", "train"])


def cli_env() -> dict:
    """The environment of a shell running `rft-jax`: this interpreter's scripts first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_the_guide_runs_its_commands_and_parses_its_train_and_serve_lines(tmp_path, monkeypatch):
    text = GUIDE.read_text(encoding="utf-8")
    shutil.copytree(EXAMPLES, tmp_path / "docs" / "migration_examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "docs" / "migration_examples"))  # PYTHONPATH, for parsed lines
    ran, parsed = [], []
    for command in guide_commands(text):
        words = command_words(command)
        assert words[0] == "rft-jax", f"the guide's bash blocks hold rft-jax commands only: {command}"
        if words[1] == "train":  # parsed and its reward built, never trained
            cfg = parse_train(words[2:])
            parsed.append(build_reward(cfg.reward))
        elif words[1:3] == ["reward", "serve"]:  # a server: parse it and build its reward
            options = tyro.cli(RewardServeOptions, args=words[3:])
            parsed.append(build_reward(options.reward))
        else:
            done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=cli_env(), capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            ran.append((words[1:3], done.stdout))
    assert len(ran) >= 7 and len(parsed) >= 4, (ran, parsed)
    assert len(Path("prompts.jsonl").read_text().splitlines()) == 2  # the Nova calls of team tutoring
    assert "def lambda_handler(event, context)" in Path("lambda_function.py").read_text()
    # The migrate output the guide shows is what the command prints, and its command parses.
    printed = next(out for words, out in ran if words == ["migrate", "openai-job"])
    shown = re.search(r"\nprints\n\n```text\n(.*?)```", text, re.S).group(1)
    assert printed == shown
    cfg = parse_train(script_command(printed))
    assert cfg.reward.name == "openai_grader" and cfg.data.train_file == "docs/migration_examples/train.jsonl"
    # The Bedrock example's --reasoningEffort low shares its --inferenceMaxTokens 512, as the guide says.
    bedrock = next(c for c in guide_commands(text) if "--reasoningEffort" in c)
    cfg = parse_train(command_words(bedrock)[2:])
    assert (cfg.reasoning.mode, cfg.reasoning.think_budget, cfg.reasoning.answer_budget) == ("on", 256, 256)
    assert "--reasoning.mode on --reasoning.think-budget 256 --reasoning.answer-budget 256" in " ".join(text.split())


def test_the_guide_states_the_flags_the_slow_test_adds_and_they_make_a_small_run():
    text = GUIDE.read_text(encoding="utf-8")
    assert f"`{shlex.join(SMALL_RUN)}`" in text
    words = command_words(first_train_command(text))
    cfg = parse_train(words[2:] + SMALL_RUN)
    assert cfg.reward.name == "lambda_reward:reward" and cfg.data.val_file == "docs/migration_examples/val.jsonl"
    assert (cfg.max_steps, cfg.batch_size, cfg.require_signal, cfg.export) == (1, 2, False, False)


def test_the_guides_lambda_adapter_imports_and_scores_with_the_unchanged_handler(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # what PYTHONPATH=docs/migration_examples does
    scorer = build_reward("lambda_reward:reward")
    pens = load_dataset(str(EXAMPLES / "train.jsonl"))[0]  # reference_answer "36"
    results = scorer.score_batch([pens, pens, pens], ["36", "He has 36 pens.", "35"])
    assert [r.score for r in results] == [1.0, 1.0, 0.0]
    assert results[0].components == {"correct": 1.0}  # the handler's metrics_list, read back


@pytest.mark.slow  # trains the default model (SmolLM2-135M) for one step on the CPU: minutes
def test_the_guides_first_train_command_trains_end_to_end(tmp_path):
    command = first_train_command(GUIDE.read_text(encoding="utf-8"))
    shutil.copytree(EXAMPLES, tmp_path / "docs" / "migration_examples")
    env = {k: v for k, v in cli_env().items() if k != "XLA_FLAGS"}  # one CPU device, not the tests' eight fakes
    done = subprocess.run(["bash", "-c", f"{command} {shlex.join(SMALL_RUN)}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    results = json.loads((tmp_path / "runs" / "default" / "results.json").read_text())
    assert results["final_step"] == 1
