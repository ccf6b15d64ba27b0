"""Amazon Bedrock's RFT hyperparameter names on `rft-jax train`'s command line.

A Bedrock job sets `customizationConfig.rftConfig.hyperParameters` (the RFTHyperParameters shape of
CreateModelCustomizationJob). Where a name means exactly what an rft_jax field means, `--name value`
and `--name=value` become that field's flag before tyro parses; where it does not, the name is refused
with what to write instead, so that no run silently means something else. docs/migration.md has the table.
"""

from __future__ import annotations

ALIASES: dict[str, str] = {
    "epochCount": "--epochs",                           # passes over the training prompts
    "learningRate": "--optimizer.learning-rate",        # the peak learning rate
    "maxPromptLength": "--data.max-prompt-tokens",      # prompt tokens, chat template included
    "inferenceMaxTokens": "--sampling.max-new-tokens",  # tokens generated per response
    "trainingSamplePerPrompt": "--sampling.samples-per-prompt",  # G, the responses compared per prompt
    "evalInterval": "--evaluation.interval",            # training steps between validations
}
"""Bedrock name -> the rft_jax flag that means the same thing."""

NO_REASONING_MODE = (
    "rft_jax has no reasoning mode (thinking budget) yet, so the policy answers directly; to give it room to "
    "reason before its answer, raise --sampling.max-new-tokens and ask for step-by-step work in the prompt")
"""What a reasoning-effort setting (Bedrock's reasoningEffort, OpenAI's reasoning_effort) becomes."""

REFUSED: dict[str, str] = {
    "batchSize": (
        "--batchSize is not translated: Bedrock documents it as the number of 'training samples' per batch "
        "without saying whether a sample is a prompt or one of its trainingSamplePerPrompt responses, while "
        "rft_jax's --batch-size counts prompts (each answered --sampling.samples-per-prompt times). "
        "Write --batch-size N for N prompts per step, or --batch-size N/G if your N counted responses "
        "(docs/migration.md)."),
    "reasoningEffort": (
        f"--reasoningEffort is not translated: {NO_REASONING_MODE}. Drop the flag; Bedrock's "
        "--inferenceMaxTokens is accepted and sets --sampling.max-new-tokens (docs/migration.md)."),
}
"""Bedrock names with no one-to-one rft_jax field: the message says what to write instead."""


def translate(argv: list[str]) -> list[str]:
    """`argv` with Bedrock's names replaced by rft_jax flags (values untouched); ValueError for a refused name."""
    out = []
    for arg in argv:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name in REFUSED:
            raise ValueError(REFUSED[name])
        out.append(ALIASES[name] + eq + value if name in ALIASES else arg)
    return out
