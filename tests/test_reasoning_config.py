"""Reasoning mode's configuration, prompt rendering (native and instruction formats) and answer extraction."""

from __future__ import annotations

import copy

import pytest
import tyro

from rft_jax.data.example import Example
from rft_jax.data.reasoning import (
    THINK_INSTRUCTION,
    ReasoningConfig,
    plan_reasoning,
    reward_text,
    split_reasoning,
    think_token_count,
)
from rft_jax.model.registry import DEFAULT_MODEL
from rft_jax.model.tokenizer import Tokenizer, load_tokenizer
from rft_jax.rollout.engine import prompt_ids
from rft_jax.train.config import SamplingConfig, TrainConfig

# Our own template with Qwen3's thinking switch: thinking is on unless `enable_thinking` is false, in which case
# the reply starts with an empty, closed think block.
QWEN3_THINKING = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{%- endif %}"
)
EXAMPLE = Example("q", [{"role": "system", "content": "Be careful."}, {"role": "user", "content": "What is 2 + 3?"}])


@pytest.fixture(scope="module")
def smollm2() -> Tokenizer:
    return load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def qwen3(smollm2) -> Tokenizer:
    hf = copy.deepcopy(smollm2.hf)
    hf.chat_template = QWEN3_THINKING
    return Tokenizer(hf, smollm2.eos_ids)


def _rendered(tokenizer, cfg: ReasoningConfig | None) -> str:
    plan = None if cfg is None else plan_reasoning(cfg, tokenizer)
    return tokenizer.decode(prompt_ids(tokenizer, [EXAMPLE], plan)[0], skip_special_tokens=False)


def test_qwen3_template_thinking_on_leaves_the_reply_open_and_off_renders_an_empty_think_block(qwen3):
    on = plan_reasoning(ReasoningConfig(mode="on"), qwen3)
    assert on.native and on.template_kwargs == {"enable_thinking": True} and on.instruction is None
    assert on.reply_prefix_ids == ()  # the model writes <think> itself
    assert _rendered(qwen3, ReasoningConfig(mode="on")).endswith("<|im_start|>assistant\n")
    off = _rendered(qwen3, ReasoningConfig(mode="off"))
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # the template's default (no switch passed) is thinking on: off must be asked for
    assert _rendered(qwen3, None).endswith("<|im_start|>assistant\n")
    assert "Think step by step" not in off


def test_a_model_without_a_native_format_gets_the_instruction_and_an_opened_tag(smollm2):
    plan = plan_reasoning(ReasoningConfig(mode="on"), smollm2)
    assert not plan.native and plan.template_kwargs == {}
    text = _rendered(smollm2, ReasoningConfig(mode="on"))
    assert text.endswith("<|im_start|>assistant\n<think>\n")
    assert f"{THINK_INSTRUCTION}\n\nBe careful." in text  # in front of the example's own system prompt
    assert _rendered(smollm2, ReasoningConfig(mode="off")) == _rendered(smollm2, None)
    assert plan.close_ids == tuple(smollm2.encode("</think>"))
    cued = plan_reasoning(ReasoningConfig(mode="on", answer_cue="\nANSWER:"), smollm2)
    assert smollm2.decode(cued.forced_ids) == "</think>\nANSWER:"


def test_native_format_on_a_template_without_the_switch_is_refused(smollm2):
    with pytest.raises(ValueError, match="enable_thinking"):
        plan_reasoning(ReasoningConfig(mode="on", format="native"), smollm2)


def test_an_answer_budget_too_small_for_the_forced_tokens_is_refused(smollm2):
    with pytest.raises(ValueError, match="answer_budget"):
        plan_reasoning(ReasoningConfig(mode="on", answer_budget=2, answer_cue="\nFinal answer:"), smollm2)


@pytest.mark.parametrize(("text", "thinking", "answer", "closed"), [
    ("<think>\n3 + 4 = 7\n</think>\nANSWER: 7", "3 + 4 = 7", "ANSWER: 7", True),
    ("3 + 4 = 7\n</think>\n\nANSWER: 7", "3 + 4 = 7", "ANSWER: 7", True),  # the tag was in the prompt
    ("  <think>a</think>b</think>c", "a", "b</think>c", True),  # the first closing tag ends the thinking
    ("3 + 4 = 7, so ANSWER: 7", "3 + 4 = 7, so ANSWER: 7", "", False),  # never closed: no answer
    ("</think>", "", "", True),
])
def test_answer_extraction_with_and_without_the_closing_tag(text, thinking, answer, closed):
    assert split_reasoning(text) == (thinking, answer, closed)


def test_rewards_read_the_answer_unless_the_config_opts_into_the_whole_text():
    text = "2 + 3 = 5\n</think>\nANSWER: 5"
    assert reward_text(text, ReasoningConfig(mode="on")) == "ANSWER: 5"
    assert reward_text(text, ReasoningConfig(mode="on", reward_reads="all")) == text
    assert reward_text(text, ReasoningConfig(mode="off")) == text


def test_think_token_count_stops_at_the_forced_tokens_or_the_models_own_tag():
    assert think_token_count([5, 6, 7, 8], [False, False, True, False], ((9,),)) == 2
    assert think_token_count([5, 6, 9, 9, 8], None, ((6, 9),)) == 3
    assert think_token_count([5, 6, 9, 9, 8], None, ((4, 9), (9, 9))) == 4  # the first variant to end
    assert think_token_count([5, 6, 7], None, ((9,),)) == 3


def test_train_config_takes_the_completion_budget_from_the_reasoning_budgets():
    cfg = tyro.cli(TrainConfig, args=["--reasoning.mode", "on", "--reasoning.think-budget", "300",
                                      "--reasoning.answer-budget", "40"])
    assert cfg.reasoning.enabled and cfg.sampling.max_new_tokens == 340
    assert TrainConfig().sampling.max_new_tokens == 64 and not TrainConfig().reasoning.enabled
    with pytest.raises(ValueError, match="think_budget \\+ answer_budget"):
        TrainConfig(reasoning=ReasoningConfig(mode="on"), sampling=SamplingConfig(max_new_tokens=100))
    with pytest.raises(ValueError, match="at least 1"):
        ReasoningConfig(mode="on", think_budget=0)
    with pytest.raises(ValueError, match=">= 0"):
        ReasoningConfig(malformed_penalty=-1.0)


def test_the_models_closing_tag_is_found_however_its_tokenizer_split_it(smollm2):
    # SmolLM2 writes " </think>" as `Ġ</` `think` `>`: the tag tokenised alone (`</` `think` `>`) is not there.
    plan = plan_reasoning(ReasoningConfig(mode="on"), smollm2)
    ids = smollm2.encode("so 3 + 4 = 7 </think>\nANSWER: 7")
    thinking = len(smollm2.encode("so 3 + 4 = 7 </think>"))
    assert think_token_count(ids, None, (plan.close_ids,)) == len(ids)  # the alone-spelling misses it
    assert think_token_count(ids, None, plan.closings) == thinking
    assert all(smollm2.decode(v).endswith("</think>") for v in plan.closings) and len(plan.closings) > 1


def test_a_template_that_opens_the_thinking_itself_gets_no_instruction_and_no_second_tag(smollm2):
    # DeepSeek-R1 distills: the generation prompt ends with "<think>\n" whatever the caller asks.
    hf = copy.deepcopy(smollm2.hf)
    hf.chat_template = QWEN3_THINKING.replace("{{- '<|im_start|>assistant\n' }}", "{{- '<|im_start|>assistant\n<think>\n' }}")
    hf.chat_template = hf.chat_template.replace("enable_thinking", "thinking_switch")  # no native switch
    r1 = Tokenizer(hf, smollm2.eos_ids)
    plan = plan_reasoning(ReasoningConfig(mode="on"), r1)
    assert not plan.native and plan.instruction is None and plan.reply_prefix_ids == ()
    text = _rendered(r1, ReasoningConfig(mode="on"))
    assert text.endswith("<|im_start|>assistant\n<think>\n") and text.count("<think>") == 1
    assert "Think step by step" not in text
