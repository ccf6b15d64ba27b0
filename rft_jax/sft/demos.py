"""Demonstrations for a warm start, and packing (prompt, target) pairs into padded arrays."""

from __future__ import annotations

import re

import jax
import numpy as np

from rft_jax.data.example import flatten_messages, message_text
from rft_jax.data.reasoning import ReasoningPlan, split_reasoning
from rft_jax.data.tool_prompt import messages_with_tools
from rft_jax.rollout.engine import budget_forcing, prompt_ids
from rft_jax.sampling import SamplingParams, decode_rollout, generate_ids
from rft_jax.sampling.generate import bucket, left_pad

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def with_answer_line(completion: str) -> str | None:
    """The completion with `ANSWER: <its own last number>` appended; None if it states no number.

    The value is the model's own, right or wrong: the demonstration teaches the
    required format and nothing about arithmetic, so accuracy gains are left to RL.
    """
    numbers = _NUMBER.findall(completion)
    if not numbers:
        return None
    value = numbers[-1].replace(",", "")
    if value.endswith(".0"):
        value = value[:-2]
    if not re.fullmatch(r"-?\d+", value):
        return None
    return f"{completion.rstrip()}\nANSWER: {value}"


def reasoned_answer_line(completion: str, plan: ReasoningPlan) -> str | None:
    """Reasoning mode's demonstration: the model's own thinking, closed, then `ANSWER: <its last number>`.
    None when the thinking states no number."""
    cfg = plan.config
    thinking = split_reasoning(completion, cfg.open_tag, cfg.close_tag).thinking
    line = with_answer_line(thinking)
    if line is None:
        return None
    # A native template leaves the reply open: the model writes the opening tag itself, so the target does too.
    opening = f"{cfg.open_tag}\n" if plan.native else ""
    return f"{opening}{thinking.rstrip()}\n{cfg.close_tag}\n{line.splitlines()[-1]}"


def self_format_demos(params, cfg, tokenizer, examples, *, key: jax.Array, max_new_tokens: int, dtype,
                      lora=None, lora_scale: float = 1.0, batch_size: int = 64,
                      reasoning: ReasoningPlan | None = None) -> list[tuple[list[int], str]]:
    """(prompt ids, target text) from the model's own greedy answers with the answer line added.

    In reasoning mode the prompts are rendered as training renders them and the
    sampler keeps the think budget; the target is the model's own thinking,
    closed with the tag, and the answer line (`reasoned_answer_line`).
    """
    demos = []
    reasoned = reasoning is not None and reasoning.enabled
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        ids = prompt_ids(tokenizer, chunk, reasoning)
        rollout, _, _ = generate_ids(params, cfg, ids, jax.random.fold_in(key, start),
                                     sampling=SamplingParams(temperature=0.0), num_samples=1,
                                     max_new_tokens=max_new_tokens, eos_ids=tokenizer.eos_ids,
                                     pad_id=tokenizer.pad_id, lora=lora, lora_scale=lora_scale, dtype=dtype,
                                     forcing=budget_forcing(reasoning))
        for prompt, row in zip(ids, decode_rollout(tokenizer, rollout)):
            if reasoned:
                target = reasoned_answer_line(row[0].text, reasoning)
            else:
                target = with_answer_line(row[0].text) if row[0].finish_reason == "stop" else None
            if target is not None and len(tokenizer.encode(target)) < max_new_tokens:
                demos.append((prompt, target))
    return demos


def pack(tokenizer, pairs: list[tuple[list[int], str]], max_target_tokens: int):
    """Left-padded prompts [B, P] and targets right-padded to exactly `max_target_tokens` [B, C]
    (the template's end-of-turn token appended, e.g. Llama 3's `<|eot_id|>`, not an end-of-text eos;
    longer targets cut). One target length means one compile."""
    targets = [tokenizer.encode(text)[: max_target_tokens - 1] + [tokenizer.end_of_turn_id] for _, text in pairs]
    c = max_target_tokens
    prompt, pmask = left_pad([p for p, _ in pairs], bucket(max(len(p) for p, _ in pairs)), tokenizer.pad_id, len(pairs))
    target = np.full((len(pairs), c), tokenizer.pad_id, np.int32)
    tmask = np.zeros((len(pairs), c), bool)
    for i, t in enumerate(targets):
        target[i, :len(t)] = t
        tmask[i, :len(t)] = True
    return prompt, pmask, target, tmask


def pairs_from_examples(tokenizer, examples) -> list[tuple[list[int], str]]:
    """(prompt ids, target text): each example's last assistant turn given the turns before it."""
    pairs = []
    for ex in examples:
        last = max((i for i, m in enumerate(ex.messages) if m["role"] == "assistant"), default=None)
        if last is None:
            continue
        text = message_text(ex.messages[last])
        pairs.append((tokenizer.apply_chat_template(flatten_messages(ex.messages[:last]), tools=ex.tools), text))
    return pairs


def conversation_pairs(tokenizer, example, tools: list | None = None) -> list[tuple[list[int], str]]:
    """(context ids, turn text) for every assistant turn of a conversation, tool calls and tool results
    included: multi-turn demonstrations, each turn learnt given the turns and tool results before it, as a
    rollout's tool tokens are context without a loss. The turn's text is what the chat template writes for
    it (tool calls in the template's format, or the Hermes-tag fallback), end-of-turn token excluded (`pack`
    appends it). `tools`: those the prompt shows (default: the example's own; a multi-turn run passes its
    environment's for demonstrations without any, as its rollouts show them)."""
    tools = example.tools if tools is None else tools
    messages = flatten_messages(example.messages)
    pairs = []
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        before, shown = messages_with_tools(tokenizer, messages[:i], tools)
        upto, _ = messages_with_tools(tokenizer, messages[:i + 1], tools)
        context = tokenizer.render_chat(before, shown, add_generation_prompt=True)
        whole = tokenizer.render_chat(upto, shown, add_generation_prompt=False)
        if not whole.startswith(context):
            raise ValueError(f"example {example.id}: the chat template renders turn {i} differently in context; "
                             "cannot cut its text out of the conversation")
        turn = whole[len(context):]
        end = tokenizer.decode([tokenizer.end_of_turn_id], skip_special_tokens=False)
        cut = turn.rfind(end)
        pairs.append((tokenizer.encode(context), turn[:cut] if cut >= 0 else turn.rstrip()))
    return pairs
