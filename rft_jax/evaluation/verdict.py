"""The baseline verdict: is this task, with this model and reward, worth reinforcement fine-tuning yet?

Checks run in order of what blocks learning first: a broken reward makes every
other number meaningless; truncated answers score 0 whatever the model knows;
a model that never succeeds gives GRPO nothing to reinforce (SFT first); one
that always succeeds has nothing left to learn. Only then is a task "ready".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rft_jax.evaluation.passk import EvalSummary

READY = "ready"
TOO_EASY = "too_easy"
SFT_FIRST = "sft_first"
RAISE_RESPONSE_LENGTH = "raise_response_length"
FIX_REWARD = "fix_reward"


@dataclass(frozen=True)
class VerdictConfig:
    max_error_rate: float = 0.02
    """Above this share of reward errors the reward must be fixed first."""
    max_truncation: float = 0.10
    """Above this share of responses cut at the length limit, raise the limit first."""
    min_success: float = 0.05
    """Below this sampled success rate (pass@1), RL has too few positives: SFT first."""
    too_easy_success: float = 0.90
    """At or above this pass@1 there is little left for RL to learn."""
    high_constant_share: float = 0.5
    """Above this share of all-equal groups, warn that most prompts give no gradient."""


@dataclass(frozen=True)
class Verdict:
    label: str
    title: str
    reasons: tuple[str, ...]
    next_step: str

    def to_dict(self) -> dict:
        return {**asdict(self), "reasons": list(self.reasons)}


def _observations(s: EvalSummary) -> list[str]:
    """The headline numbers, as sentences; shown whatever the verdict."""
    notes = [f"sampled pass@1 is {s.pass_at_k[1]:.1%} over {s.num_prompts} prompts x {s.group_size} samples"]
    if s.greedy_pass_at_1 is not None:
        notes.append(f"greedy pass@1 is {s.greedy_pass_at_1:.1%}")
    if s.group_size > 1:
        k = max(s.pass_at_k)
        notes.append(f"pass@{k} is {s.pass_at_k[k]:.1%}: roughly the ceiling RL can pull pass@1 toward")
        notes.append(f"{s.constant_share:.0%} of prompts score all {s.group_size} samples the same (no learning signal)")
    notes.append(f"reward mean {s.reward_mean:.3g}, std {s.reward_std:.3g}")
    if s.format_compliance is not None:
        notes.append(f"format compliance is {s.format_compliance:.0%}")
    return notes


def baseline_verdict(s: EvalSummary, cfg: VerdictConfig = VerdictConfig()) -> Verdict:
    """Decide the next step from a baseline `EvalSummary`; the reasons cite the numbers."""
    notes = _observations(s)
    reward_is_constant = s.reward_std == 0.0 and s.num_prompts * s.group_size > 1
    if (s.error_rate or 0.0) > cfg.max_error_rate or reward_is_constant:
        why = []
        if (s.error_rate or 0.0) > cfg.max_error_rate:
            why.append(f"{s.error_rate:.1%} of rewards raised an error (limit {cfg.max_error_rate:.0%})")
        if reward_is_constant:
            why.append(f"every sample scored exactly {s.reward_mean:g}: the reward gives no signal")
        return Verdict(
            FIX_REWARD,
            "Fix the reward",
            tuple(why + notes),
            "Run `rft-jax reward test` on known-good and known-bad completions; the grader must tell them apart "
            "before training. If it does and every score is still 0, the model needs SFT first.",
        )
    if s.truncation_rate is not None and s.truncation_rate > cfg.max_truncation:
        return Verdict(
            RAISE_RESPONSE_LENGTH,
            "Raise the response length",
            (f"{s.truncation_rate:.0%} of responses hit the length limit (limit {cfg.max_truncation:.0%})", *notes),
            "Raise max_new_tokens until under 10% of responses are cut, or ask for shorter answers in the prompt; "
            "then rerun the baseline.",
        )
    success = s.pass_at_k[1]
    if success < cfg.min_success:
        return Verdict(
            SFT_FIRST,
            "SFT first",
            (f"only {success:.1%} of samples succeed (need {cfg.min_success:.0%}): too few positives to reinforce", *notes),
            "Fine-tune on demonstrations first (`rft-jax sft`), use a stronger base model, or start with easier prompts.",
        )
    if success >= cfg.too_easy_success:
        return Verdict(
            TOO_EASY,
            "Too easy",
            (f"{success:.1%} of samples already succeed (limit {cfg.too_easy_success:.0%}): little left to learn", *notes),
            "Use harder prompts (drop those the model always solves), or a smaller model; RFT would mostly burn compute.",
        )
    reasons = [f"{success:.1%} of samples succeed: enough positives, and room to improve", *notes]
    if s.group_size > 1 and s.constant_share > cfg.high_constant_share:
        reasons.insert(1, f"warning: {s.constant_share:.0%} of prompts give no gradient at G={s.group_size}")
    return Verdict(
        READY,
        "Ready for RFT",
        tuple(reasons),
        "Train (`rft-jax train`). Consider dropping prompts with all-equal scores to spend compute where the gradient is.",
    )
