"""Amazon Bedrock's RFT hyperparameter names on `rft-jax train`'s command line.

A Bedrock job sets `customizationConfig.rftConfig.hyperParameters` (the RFTHyperParameters shape of
CreateModelCustomizationJob). Where a name means exactly what an rft_jax field means, `--name value`
and `--name=value` become that field's flag before tyro parses; reasoningEffort, a level rather than a
field's value, becomes reasoning mode with that level's think budget; a name with no one-to-one field is
refused with what to write instead, so that no run silently means something else. docs/migration.md has
the table.
"""

from __future__ import annotations

from rft_jax.data.reasoning import EFFORT_BUDGETS, ReasoningConfig

ALIASES: dict[str, str] = {
    "epochCount": "--epochs",                           # passes over the training prompts
    "learningRate": "--optimizer.learning-rate",        # the peak learning rate
    "maxPromptLength": "--data.max-prompt-tokens",      # prompt tokens, chat template included
    "inferenceMaxTokens": "--sampling.max-new-tokens",  # tokens generated per response
    "trainingSamplePerPrompt": "--sampling.samples-per-prompt",  # G, the responses compared per prompt
    "evalInterval": "--evaluation.interval",            # training steps between validations
}
"""Bedrock name -> the rft_jax flag that means the same thing."""

EFFORT = "reasoningEffort"
EFFORTS = ("low", "medium", "high")
"""Bedrock's reasoningEffort levels (RFTHyperParameters documents low | medium | high)."""

REFUSED: dict[str, str] = {
    "batchSize": (
        "--batchSize is not translated: Bedrock documents it as the number of 'training samples' per batch "
        "without saying whether a sample is a prompt or one of its trainingSamplePerPrompt responses, while "
        "rft_jax's --batch-size counts prompts (each answered --sampling.samples-per-prompt times). "
        "Write --batch-size N for N prompts per step, or --batch-size N/G if your N counted responses "
        "(docs/migration.md)."),
}
"""Bedrock names with no one-to-one rft_jax field: the message says what to write instead."""


def reasoning_budgets(effort: str, completion: int | None = None) -> tuple[int, int]:
    """(think, answer) budgets, in tokens, for a level of EFFORT_BUDGETS with reasoning on.

    The thinking gets the level's budget, or less where that would leave the answer fewer than its default
    tokens within `completion` (the completion size a job sets, more than that default); the answer gets
    the rest of `completion`, or its default without one.
    """
    answer = ReasoningConfig.answer_budget
    think = EFFORT_BUDGETS[effort] if completion is None else min(EFFORT_BUDGETS[effort], completion - answer)
    return think, answer if completion is None else completion - think


def effort_flags(effort: str, completion: str | None) -> list[str]:
    """The rft_jax flags for `--reasoningEffort effort`, given the run's completion size (--inferenceMaxTokens)
    if set: thinking and answer then share it."""
    if effort not in EFFORTS:
        raise ValueError(f"--reasoningEffort {effort!r} is not one of Bedrock's levels: write --reasoningEffort "
                         f"{', '.join(EFFORTS[:-1])} or {EFFORTS[-1]} (docs/migration.md)")
    size = int(completion) if completion and completion.isdigit() else None  # else tyro names the bad value
    least = ReasoningConfig.answer_budget + 1
    if size is not None and size < least:
        raise ValueError(f"--inferenceMaxTokens {size} leaves no room to think: with --reasoningEffort it is the "
                         f"thinking plus the answer, which keeps at least {least - 1} tokens, so give at least {least} "
                         "(docs/migration.md)")
    think, answer = reasoning_budgets(effort, size)
    flags = ["--reasoning.mode", "on", "--reasoning.think-budget", str(think)]
    return flags + (["--reasoning.answer-budget", str(answer)] if size is not None else [])


def flag_value(argv: list[str], names: tuple[str, ...]) -> str | None:
    """The value the last of `names` (as `--name value` or `--name=value`) has in `argv`, or None."""
    value = None
    for i, arg in enumerate(argv):
        name, eq, given = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name in names:
            value = given if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return value


def translate(argv: list[str]) -> list[str]:
    """`argv` with Bedrock's names replaced by rft_jax flags (values untouched, but for reasoningEffort's level);
    ValueError for a refused name or an unknown level."""
    completion = flag_value(argv, ("inferenceMaxTokens", ALIASES["inferenceMaxTokens"][2:]))
    out, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name in REFUSED:
            raise ValueError(REFUSED[name])
        if name == EFFORT:
            if not eq and not rest:
                raise ValueError(f"--{EFFORT} needs a value: --{EFFORT} {'|'.join(EFFORTS)}")
            out += effort_flags(value if eq else rest.pop(0), completion)
        else:
            out.append(ALIASES[name] + eq + value if name in ALIASES else arg)
    return out
