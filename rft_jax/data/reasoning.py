"""Reasoning mode: the model thinks between tags within a token budget, then answers, and the reward reads the answer.

A model with a native format (Qwen3 and others whose chat template takes
`enable_thinking`) is rendered with that switch; the template decides where the
thinking goes and the model writes `<think>…</think>` itself. Any other model
gets `THINK_INSTRUCTION` as a system turn (or in front of its own system
prompt) and its reply is opened with the tag, so its whole completion starts
inside the thinking. Either way the completion text is split at the closing
tag (`split_reasoning`): what comes before it is the thinking, what comes after
is the answer. A completion without the closing tag has no answer: it is
malformed, counted, and can be penalised.

The think budget is enforced in the jitted sampler
(`rft_jax.sampling.sampler.BudgetForcing`): at the budget it writes the closing
tag and the optional cue as forced tokens, which carry no loss.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

from rft_jax.data.tool_prompt import messages_with_tools

THINK_INSTRUCTION = ("Think step by step inside <think> and </think> before you answer. "
                     "After </think>, write only the final answer.")

# `reasoning_effort` as OpenAI's API spells it, mapped to think budgets (tokens) for serving.
EFFORT_BUDGETS = {"minimal": 0, "low": 256, "medium": 1024, "high": 4096}


@dataclasses.dataclass(frozen=True)
class ReasoningConfig:
    """Think within a budget, then answer (docs/reasoning.md)."""

    mode: Literal["off", "on"] = "off"
    """on: the model thinks between `open_tag` and `close_tag` before its answer. off: it answers directly
    (a native template, e.g. Qwen3's, is rendered with thinking switched off)."""
    think_budget: int = 256
    """Thinking tokens at most. At the budget the sampler appends the closing tag and `answer_cue` as
    forced tokens (no loss) and the model continues into its answer."""
    answer_budget: int = 64
    """Tokens after the thinking at most (the forced closing tag and cue count in it). With reasoning on the
    completion budget, sampling.max_new_tokens, is think_budget + answer_budget."""
    answer_cue: str = ""
    """Forced after the closing tag when the budget cuts the thinking short, e.g. "\\nANSWER:". It stays in
    the answer the reward reads, as the model's own words would: pick one the grader accepts."""
    open_tag: str = "<think>"
    close_tag: str = "</think>"
    format: Literal["auto", "native", "instruction"] = "auto"
    """native: the chat template's `enable_thinking` switch; instruction: THINK_INSTRUCTION and an opened
    tag; auto: native when the template takes `enable_thinking`, nothing added when its generation prompt
    already opens the thinking (DeepSeek-R1 distills), else instruction."""
    instruction: str = THINK_INSTRUCTION
    """The system instruction of the instruction format."""
    reward_reads: Literal["answer", "all"] = "answer"
    """answer: rewards score the text after the closing tag (empty when there is none); all: the whole
    completion, thinking included (e.g. a judge that grades the reasoning)."""
    malformed_penalty: float = 0.0
    """Subtracted from the reward of a completion that never closed its thinking (reported either way)."""

    def __post_init__(self):
        if self.mode not in ("off", "on"):
            raise ValueError(f"reasoning.mode is 'off' or 'on', got {self.mode!r}")
        if self.think_budget < 1 or self.answer_budget < 1:
            raise ValueError(f"reasoning.think_budget ({self.think_budget}) and answer_budget "
                             f"({self.answer_budget}) must be at least 1 token")
        if not self.open_tag or not self.close_tag:
            raise ValueError("reasoning.open_tag and close_tag must not be empty")
        if self.malformed_penalty < 0:
            raise ValueError(f"reasoning.malformed_penalty is subtracted from the reward: give a value >= 0, "
                             f"got {self.malformed_penalty}")

    @property
    def enabled(self) -> bool:
        return self.mode == "on"

    @property
    def completion_budget(self) -> int:
        return self.think_budget + self.answer_budget

    def max_new_tokens(self, asked: int | None, default: int, flag: str) -> int:
        """Tokens per completion: `asked` (None: `default`), or with reasoning on the two budgets, which a
        different `asked` (the option `flag`) contradicts."""
        if not self.enabled:
            return default if asked is None else asked
        if asked not in (None, self.completion_budget):
            raise ValueError(f"with reasoning on the completion budget is reasoning.think_budget + answer_budget = "
                             f"{self.completion_budget} tokens, but {flag} is {asked}: set the two budgets and "
                             f"leave {flag} out")
        return self.completion_budget


class Reasoned(NamedTuple):
    """A completion split at its closing tag."""

    thinking: str
    answer: str
    closed: bool  # the closing tag is there: a well-formed answer


def split_reasoning(text: str, open_tag: str = "<think>", close_tag: str = "</think>") -> Reasoned:
    """Thinking before the first closing tag, answer after it (whitespace trimmed).

    A leading opening tag (the model wrote it, as Qwen3 does) is not part of
    the thinking. Without a closing tag everything is thinking and the answer
    is empty.
    """
    body = text.lstrip()
    if body.startswith(open_tag):
        body = body[len(open_tag):]
    thinking, tag, answer = body.partition(close_tag)
    if not tag:
        return Reasoned(body.strip(), "", False)
    return Reasoned(thinking.strip(), answer.strip(), True)


def reward_text(text: str, cfg: ReasoningConfig) -> str:
    """What a reward reads of a completion under `cfg`."""
    if not cfg.enabled or cfg.reward_reads == "all":
        return text
    return split_reasoning(text, cfg.open_tag, cfg.close_tag).answer


def has_native_thinking(chat_template: str | None) -> bool:
    """The template renders thinking on and off itself (Qwen3's `enable_thinking`)."""
    return bool(chat_template) and "enable_thinking" in chat_template


class ReasoningPlan(NamedTuple):
    """ReasoningConfig resolved against one tokenizer: what the prompt renderer and the sampler need."""

    config: ReasoningConfig
    enabled: bool
    native: bool  # the template's enable_thinking switch is used
    template_kwargs: dict  # passed to apply_chat_template
    instruction: str | None  # a system instruction to add (instruction format, reasoning on)
    reply_prefix_ids: tuple[int, ...]  # appended after the generation prompt (the opened tag)
    close_ids: tuple[int, ...]  # the closing tag as the tokenizer writes it alone
    forced_ids: tuple[int, ...]  # closing tag + cue, written at the think budget
    think_budget: int
    answer_budget: int
    close_variants: tuple[tuple[int, ...], ...] = ()  # every spelling the sampler spots (closing_variants)

    @property
    def closings(self) -> tuple[tuple[int, ...], ...]:
        return self.close_variants or (self.close_ids,)


def plan_reasoning(cfg: ReasoningConfig, tokenizer) -> ReasoningPlan:
    """Chooses the format for this tokenizer's template and tokenises the tags."""
    template = getattr(getattr(tokenizer, "hf", None), "chat_template", None)
    native = cfg.format == "native" or (cfg.format == "auto" and has_native_thinking(template))
    if cfg.format == "native" and not has_native_thinking(template):
        raise ValueError("reasoning.format='native' but this model's chat template has no `enable_thinking` "
                         "switch: use format='instruction' (or 'auto')")
    kwargs = {"enable_thinking": cfg.enabled} if native else {}
    if not cfg.enabled:
        return ReasoningPlan(cfg, False, native, kwargs, None, (), (), (), 0, 0)
    close_ids = tuple(tokenizer.encode(cfg.close_tag))
    forced = tuple(tokenizer.encode(cfg.close_tag + cfg.answer_cue)) if cfg.answer_cue else close_ids
    if len(forced) >= cfg.answer_budget:
        raise ValueError(f"the forced closing tag and cue are {len(forced)} tokens, which leaves no room in "
                         f"reasoning.answer_budget={cfg.answer_budget}: raise the answer budget")
    # A template that opens the thinking itself (DeepSeek-R1 distills) needs neither the instruction nor our tag.
    opened = native or (cfg.format == "auto" and template_opens_thinking(tokenizer, cfg.open_tag))
    prefix = () if opened else tuple(tokenizer.encode(cfg.open_tag + "\n"))
    return ReasoningPlan(cfg, True, native, kwargs, None if opened else cfg.instruction, prefix, close_ids, forced,
                         cfg.think_budget, cfg.answer_budget, closing_variants(tokenizer, cfg.close_tag))


def template_opens_thinking(tokenizer, open_tag: str) -> bool:
    """The chat template's generation prompt already ends with the opening tag (DeepSeek-R1 distills)."""
    try:
        text = tokenizer.render_chat([{"role": "user", "content": "2 + 2?"}])
    except (AttributeError, TypeError, ValueError):
        return False
    return text.rstrip().endswith(open_tag)


CLOSING_CONTEXTS = ("", " ", "\n", "\n\n", ".", ":")
"""What may stand before a closing tag in a model's text. A BPE tokenizer can merge it into the tag's first
token (SmolLM2 writes " </think>" as `Ġ</` `think` `>`, not `</` `think` `>`)."""


def closing_variants(tokenizer, close_tag: str) -> tuple[tuple[int, ...], ...]:
    """The token sequences that end a thinking: the tag tokenised alone and after each CLOSING_CONTEXTS
    (the tokens that follow an unmerged "x"), so the sampler notices the model's own closing tag however
    its tokenizer happened to split it."""
    variants = [tuple(tokenizer.encode(close_tag))]
    base = tokenizer.encode("x")
    for context in CLOSING_CONTEXTS:
        ids = tokenizer.encode("x" + context + close_tag)
        if ids[:len(base)] == base and len(ids) > len(base):
            variants.append(tuple(ids[len(base):]))
    return tuple(dict.fromkeys(v for v in variants if v))


def think_token_count(token_ids, forced, closings: tuple[tuple[int, ...], ...]) -> int:
    """Completion tokens up to the end of the thinking: before the first forced token, through the model's
    own closing tag (the first place one of `closings` ends), or all of them when it never closed."""
    ids = [int(t) for t in token_ids]
    end = list(forced).index(True) if forced is not None and any(forced) else len(ids)
    for i in range(1, end + 1):
        if any(len(v) <= i and tuple(ids[i - len(v):i]) == v for v in closings):
            return i
    return end


def render_prompt(tokenizer, messages: list[dict], tools: list | None, plan: ReasoningPlan | None,
                  **template_kwargs) -> list[int]:
    """Prompt ids under `plan`: its instruction, the template's thinking switch (Qwen3's enable_thinking, also
    when reasoning is off), then the opened tag. The one rendering training, evaluation, validation and the
    server share; None renders the messages as they are. Tools and tool turns go through
    `messages_with_tools`: the template's own tool format, else the documented fallback in the system turn
    (docs/tools.md), so no template drops them."""
    instructed = with_instruction(messages, plan.instruction) if plan is not None else messages
    shown, tools = messages_with_tools(tokenizer, instructed, tools)
    if plan is None:
        return tokenizer.apply_chat_template(shown, tools=tools, **template_kwargs)
    ids = tokenizer.apply_chat_template(shown, tools=tools, **template_kwargs, **plan.template_kwargs)
    return ids + list(plan.reply_prefix_ids)


def with_instruction(messages: list[dict], instruction: str | None) -> list[dict]:
    """The instruction as the system turn, in front of an existing system prompt."""
    if not instruction:
        return messages
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        return [{**messages[0], "content": f"{instruction}\n\n{messages[0]['content']}"}] + messages[1:]
    return [{"role": "system", "content": instruction}] + messages


class PlannedChat:
    """A tokenizer's chat template as prompts are rendered under a plan (the instruction, the template's
    switch, the opened tag, the tools as `render_prompt` places them): what data validation counts against
    data.max_prompt_tokens, so a prompt that fits there fits in training too. A None plan is the bare
    template with the tools placed."""

    def __init__(self, tokenizer, plan: ReasoningPlan | None):
        self.tokenizer, self.plan = tokenizer, plan

    def apply_chat_template(self, messages: list[dict], tools: list | None = None,
                            add_generation_prompt: bool = True) -> list[int]:
        return render_prompt(self.tokenizer, messages, tools, self.plan, add_generation_prompt=add_generation_prompt)
