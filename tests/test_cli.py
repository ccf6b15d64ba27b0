"""The `rft-jax` dispatcher: every command's --help, the flags docs and tests use, and the layering."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tyro

from rft_jax import cli
from rft_jax.cli.eval import EvalOptions
from rft_jax.cli.train import split_config_arg

# Each command's --help must document these (the flags README.md, docs/ and tests use).
HELP_MENTIONS = {
    ("train",): ["--config", "--model.name", "--batch-size", "--init-from", "--resume", "--mesh.fsdp",
                 "--sampling.temperature", "--distributed.coordinator-address", "--epochCount", "--export-dtype"],
    ("sft",): ["--data", "--model", "--mode", "--rank", "--alpha", "--steps", "--batch-size", "--lr", "--seed",
               "--out", "--export-dtype"],
    ("data",): ["validate", "split", "convert", "generate"],
    ("data", "validate"): ["FILE", "--model", "--max-prompt-tokens", "--reward", "--require-reference", "--json"],
    ("data", "split"): ["FILE", "--out-dir", "--fractions", "--seed", "--stratify-by"],
    ("data", "convert"): ["LOGS", "--out", "--response-as-reference"],
    ("data", "generate"): ["TASK", "arithmetic", "--n", "--seed", "--out", "--levels", "--system", "--instruction"],
    ("reward",): ["test", "serve", "lambda"],
    ("reward", "test"): ["--data", "--reward", "--bad", "--limit"],
    ("reward", "serve"): ["REWARD", "--host", "--port", "--token-env"],
    ("baseline",): ["--model", "--data", "--reward", "--samples", "--limit", "--max-new-tokens", "--temperature",
                    "--success-threshold", "--out"],
    ("eval",): ["--model", "--adapter", "--checkpoint", "--data", "--reward", "--max-new-tokens", "--temperature",
                "--samples", "--out", "--name"],
    ("report",): ["RUN-DIR", "--out", "--examples"],
    ("compare",): ["PATHS", "--out", "--baseline", "--metric", "--eval", "--resamples"],
    ("sweep",): ["EXPERIMENT", "--out", "--concurrency", "--dry-run", "--slurm", "--sbatch", "--only"],
    ("generate",): ["--model", "--checkpoint", "--data", "--out", "--num-samples", "--temperature", "--top-p",
                    "--top-k", "--max-new-tokens", "--batch-size", "--seed", "--stop"],
    ("serve",): ["--model", "--adapter", "--served-name", "--host", "--port", "--token-env", "--slots",
                 "--max-context"],
    ("migrate",): ["openai-job"],
    ("migrate", "openai-job"): ["JOB", "--model", "--train-file", "--val-file", "--grader-out"],
}


def test_every_command_is_covered():
    assert {words[0] for words in HELP_MENTIONS} == set(cli.COMMANDS)


@pytest.mark.parametrize("words", list(HELP_MENTIONS), ids=" ".join)
def test_help(words, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*words, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: rft-jax {' '.join(words)}" in out
    missing = [flag for flag in HELP_MENTIONS[words] if flag not in out]
    assert not missing, out


def test_usage_and_unknown_command(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in cli.COMMANDS)
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_bad_flag_exits_with_status_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["data", "split", "x.jsonl", "--out-dir", "o", "--no-such-flag", "1"])
    assert exit_.value.code == 2


def test_repeatable_and_split_flags():
    opts = tyro.cli(EvalOptions, args=["--data", "d.jsonl", "--reward", "a", "--reward", '{"name": "b"}'])
    assert opts.reward == ("a", '{"name": "b"}') and opts.model is None
    assert split_config_arg(["--config", "e.py", "--batch-size", "2"]) == ("e.py", ["--batch-size", "2"])
    assert split_config_arg(["--config=e.py"]) == ("e.py", [])
    assert split_config_arg(["--resume"]) == (None, ["--resume"])


# An import of the CLIs, as a statement or through importlib (`python -m rft_jax.cli` in a subprocess is not one).
IMPORTS_CLI = re.compile(r"^\s*(from|import)\s+rft_jax\.cli\b|import_module\(\s*[\"']rft_jax\.cli", re.MULTILINE)


def test_library_packages_do_not_import_the_cli():
    package = Path(cli.__file__).parent.parent
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if "cli" not in p.relative_to(package).parts and IMPORTS_CLI.search(p.read_text(encoding="utf-8"))]
    assert not offenders, f"the CLIs sit on top of the import graph; these library modules import them: {offenders}"
