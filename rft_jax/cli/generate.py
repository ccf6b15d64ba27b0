"""`rft-jax generate`: sample completions of a model for a JSONL file of chat prompts.

    rft-jax generate --data prompts.jsonl --out completions.jsonl [--model M | --checkpoint RUN]
        [--num-samples 4 --temperature 0.8 --top-p 0.95 --max-new-tokens 256 --stop "###"]

The input is the RFT chat format (`messages`, optional `id` and `tools`; no
`reference_answer` needed); each prompt is the messages up to the last user turn.
The output has one JSON line per prompt and sample: id, sample, messages (the
prompt), completion, finish_reason ("stop" or "length") and completion_tokens
(tokens sampled, the end-of-turn token included). The same --seed (and
--batch-size) gives the same output.

With `--reasoning.mode on` (docs/reasoning.md) the model thinks within
`--reasoning.think-budget` tokens, then answers; each row's `completion` is the
answer and `reasoning_content` the thinking. With reasoning off, a template with
a thinking switch (Qwen3's `enable_thinking`) is rendered with thinking off.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import tyro

from rft_jax.data.reasoning import ReasoningConfig

DEFAULT_MAX_NEW_TOKENS = 256


@dataclasses.dataclass(frozen=True)
class GenerateOptions:
    """The prompts, the model, how to sample, and where the completions go."""

    data: str
    """JSONL of chat prompts (RFT format; reference_answer is not needed)."""
    out: str
    """JSONL written: one line per prompt and sample."""
    model: str | None = None
    """Registry key, HF folder or .gguf (default: smollm2-135m-instruct, or the --checkpoint run's base)."""
    checkpoint: str | None = None
    """Run directory of `rft-jax train`/`sft` (its best, else latest, checkpoint) or a RUN/checkpoints/KIND/STEP."""
    num_samples: int = 1
    """Completions per prompt (G)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens with this much probability (1: off)."""
    top_k: int = 0
    """Keep the k most likely tokens (0: off)."""
    max_new_tokens: int | None = None
    """Tokens sampled per completion at most (default 256; with reasoning on, think + answer budgets)."""
    batch_size: int = 32
    """Prompts sampled together (each with --num-samples completions)."""
    seed: int = 0
    """Seed of the sampling; batch i draws from fold_in(key(seed), i)."""
    stop: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """Stop string (repeatable): the completion text is cut before the first one."""
    reasoning: ReasoningConfig = ReasoningConfig()
    """Think within a budget, then answer (docs/reasoning.md)."""


def check(opts: GenerateOptions) -> None:
    """Raises ValueError naming the first option out of range."""
    for name in ("num_samples", "max_new_tokens", "batch_size"):
        if getattr(opts, name) is not None and getattr(opts, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(opts, name)}")
    if opts.temperature < 0:
        raise ValueError(f"--temperature must be >= 0 (0: greedy), got {opts.temperature}")
    if not 0 < opts.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {opts.top_p}")
    if opts.top_k < 0:
        raise ValueError(f"--top-k must be >= 0 (0: off), got {opts.top_k}")


def prompt_ids(tokenizer, examples: list, cfg, max_new_tokens: int, plan=None) -> list[list[int]]:
    """The chat-templated prompt of each example (under a reasoning plan); ValueError if one cannot fit the
    context with its completion."""
    from rft_jax.rollout import engine  # noqa: PLC0415 (the one prompt rendering; text parts flattened)

    prompts = engine.prompt_ids(tokenizer, examples, plan)
    for ex, ids in zip(examples, prompts):
        if len(ids) + max_new_tokens > cfg.max_position_embeddings:
            raise ValueError(f"example {ex.id!r} has a {len(ids)}-token prompt; with --max-new-tokens "
                             f"{max_new_tokens} it exceeds the model's context of {cfg.max_position_embeddings} "
                             "tokens: shorten it or lower --max-new-tokens")
    return prompts


def generate_rows(params: dict, cfg, tokenizer, examples: list, prompts: list[list[int]], *, key, sampling,
                  num_samples: int, max_new_tokens: int, batch_size: int, stops: tuple[str, ...] = (),
                  dtype="float32", progress: bool = True, plan=None) -> Iterator[dict]:
    """One output row per example and sample, in input order, batch by batch. Under a reasoning plan the
    sampler keeps the think budget and a row's completion is the answer, its thinking beside it."""
    import jax  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from rft_jax.data.reasoning import split_reasoning, think_token_count  # noqa: PLC0415
    from rft_jax.rollout.engine import budget_forcing  # noqa: PLC0415
    from rft_jax.sampling import decode_rollout, generate_ids  # noqa: PLC0415

    starts = range(0, len(examples), batch_size)
    for i, start in enumerate(tqdm(starts, desc="generate", unit="batch", disable=not progress)):
        chunk = examples[start:start + batch_size]
        rollout, _, _ = generate_ids(params, cfg, prompts[start:start + batch_size], jax.random.fold_in(key, i),
                                     sampling=sampling, num_samples=num_samples, max_new_tokens=max_new_tokens,
                                     eos_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id, dtype=dtype,
                                     forcing=budget_forcing(plan))
        for ex, row in zip(chunk, decode_rollout(tokenizer, rollout, stops)):
            for g, c in enumerate(row):
                out = {"id": ex.id, "sample": g, "messages": ex.prompt_messages, "completion": c.text,
                       "finish_reason": c.finish_reason, "completion_tokens": len(c.token_ids)}
                if plan is not None and plan.enabled:
                    parts = split_reasoning(c.text, plan.config.open_tag, plan.config.close_tag)
                    out.update(completion=parts.answer, reasoning_content=parts.thinking, well_formed=parts.closed,
                               reasoning_tokens=think_token_count(c.token_ids, c.forced, plan.closings))
                yield out


def main(argv: list[str]) -> int:
    opts = tyro.cli(GenerateOptions, args=argv, prog="rft-jax generate", description=__doc__)
    from rft_jax.cli.eval import completion_budget  # noqa: PLC0415
    from rft_jax.data import DatasetError, load_dataset  # noqa: PLC0415

    try:
        check(opts)
        max_new_tokens = completion_budget(opts.max_new_tokens, opts.reasoning, DEFAULT_MAX_NEW_TOKENS)
        examples = load_dataset(opts.data)  # before the model: a bad file fails in a second
        if not examples:
            raise ValueError(f"{opts.data} has no prompts")
    except (DatasetError, OSError, ValueError) as err:
        print(f"rft-jax generate: {err}", file=sys.stderr)
        return 2

    import jax  # noqa: PLC0415 (keeps --help fast)

    from rft_jax.cli.eval import load_policy  # noqa: PLC0415
    from rft_jax.data.reasoning import plan_reasoning  # noqa: PLC0415
    from rft_jax.model.registry import resolve_compute_dtype  # noqa: PLC0415
    from rft_jax.model.tokenizer import load_tokenizer  # noqa: PLC0415
    from rft_jax.sampling import SamplingParams  # noqa: PLC0415

    loaded = load_policy(opts.model, opts.checkpoint, "generate")
    if loaded is None:
        return 2
    model, cfg, params, _ = loaded
    tokenizer = load_tokenizer(model)
    try:  # always a plan: with reasoning off a native template (Qwen3's) still gets enable_thinking=False
        plan = plan_reasoning(opts.reasoning, tokenizer)
        prompts = prompt_ids(tokenizer, examples, cfg, max_new_tokens, plan)
    except ValueError as err:  # a prompt too long, or a chat template that rejects the messages
        print(f"rft-jax generate: {err}", file=sys.stderr)
        return 2
    sampling = SamplingParams(temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p)
    rows = generate_rows(params, cfg, tokenizer, examples, prompts, key=jax.random.key(opts.seed),
                         sampling=sampling, num_samples=opts.num_samples, max_new_tokens=max_new_tokens,
                         batch_size=opts.batch_size, stops=opts.stop, dtype=resolve_compute_dtype("auto"), plan=plan)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in rows:  # written as they come: an interrupted run keeps the batches done
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(examples)} prompts x {opts.num_samples} samples -> {out}", file=sys.stderr)
    return 0
