"""A judge: rubric + backend + parse rule, scoring a batch of (example, completion) pairs.

Every failure is per sample and visible: a backend error or a reply with no
readable verdict gives that sample `RewardResult(0.0, error=...)`, which the
trainer counts as a reward error, never as a genuine score of zero. With
`samples > 1` the judge is asked n times and the readable verdicts averaged.
"""

from __future__ import annotations

from rft_jax.data.example import Example
from rft_jax.rewards.judge.cache import JudgeCache, cache_key
from rft_jax.rewards.judge.pairwise import (
    PAIR_VERDICT,
    REFERENCE,
    Comparison,
    group_comparisons,
    reference_comparisons,
    win_rates,
)
from rft_jax.rewards.judge.parse import JudgeParseError, parse_label, parse_verdict
from rft_jax.rewards.judge.prompt import pairwise_messages, pointwise_messages
from rft_jax.rewards.judge.rubric import Rubric
from rft_jax.rewards.result import RewardResult, failed


class Judge:
    def __init__(self, rubric: Rubric, backend, *, parse: str = "auto", samples: int = 1, mode: str = "pointwise",
                 against: str = "group", both_orders: bool = True, cache: JudgeCache | None = None):
        if mode not in ("pointwise", "pairwise") or against not in ("group", "reference"):
            raise ValueError(f"judge mode must be pointwise|pairwise and against group|reference; got {mode}, {against}")
        self.rubric, self.backend, self.parse = rubric, backend, parse
        self.samples, self.mode, self.against, self.both_orders = samples, mode, against, both_orders
        self.cache = cache or JudgeCache()

    def ask(self, conversations: list[list[dict]]) -> list[list[str] | Exception]:
        """Replies per conversation, from the cache where possible; identical conversations asked once."""
        identity = self.backend.identity()
        keys = [cache_key(identity, m, self.samples) for m in conversations]
        replies: dict[str, list[str] | Exception] = {}
        for key in keys:
            if key not in replies:
                cached = self.cache.get(key)
                if cached is not None:
                    replies[key] = cached
        todo = {key: m for key, m in zip(keys, conversations) if key not in replies}
        if todo:
            for key, answer in zip(todo, self.backend.complete(list(todo.values()), self.samples)):
                replies[key] = answer
                if not isinstance(answer, Exception):
                    self.cache.put(key, answer)
        return [replies[key] for key in keys]

    def score_batch(self, examples: list[Example], completions: list[str]) -> list[RewardResult]:
        if self.mode == "pairwise":
            return self._pairwise(examples, completions)
        conversations = [pointwise_messages(self.rubric, self.parse, e, c) for e, c in zip(examples, completions)]
        return [self._verdict(r) for r in self.ask(conversations)]

    def _verdict(self, replies: list[str] | Exception) -> RewardResult:
        if isinstance(replies, Exception):
            return failed(f"judge backend: {type(replies).__name__}: {replies}")
        scores, parts, errors = [], [], []
        for text in replies:
            try:
                score, components = parse_verdict(text, self.rubric, self.parse)
            except JudgeParseError as err:
                errors.append(str(err))
                continue
            scores.append(score)
            parts.append(components)
        if not scores:
            return failed(f"judge: unparseable verdict: {errors[0]}")
        components = {name: sum(p[name] for p in parts) / len(parts) for name in parts[0]}
        return RewardResult(sum(scores) / len(scores), components=components,
                            metrics={"judge_unparsed": len(errors) / len(replies)})

    def _preference(self, replies: list[str] | Exception) -> tuple[float | None, str | None]:
        if isinstance(replies, Exception):
            return None, f"judge backend: {type(replies).__name__}: {replies}"
        prefs, error = [], None
        for text in replies:
            try:
                prefs.append(parse_label(text, PAIR_VERDICT, keywords="winner|verdict|better", loose=False))
            except JudgeParseError as err:
                error = str(err)
        return (sum(prefs) / len(prefs), None) if prefs else (None, error)

    def _pairwise(self, examples: list[Example], completions: list[str]) -> list[RewardResult]:
        jobs: list[tuple[Comparison, Example]] = []
        problems: dict[int, str] = {}
        if self.against == "group":
            groups: dict[str, list[int]] = {}
            for i, e in enumerate(examples):
                groups.setdefault(e.id, []).append(i)
            for members in groups.values():
                if len(members) < 2:
                    problems[members[0]] = "judge: pairwise against the group needs >= 2 completions of an example"
                jobs += [(c, examples[members[0]]) for c in group_comparisons(members, self.both_orders)]
        else:
            for i, e in enumerate(examples):
                if e.reference_answer is None:
                    problems[i] = "judge: pairwise against the reference needs a reference_answer"
                else:
                    jobs += [(c, e) for c in reference_comparisons(i, self.both_orders)]

        def text(index: int, example: Example) -> str:
            return str(example.reference_answer) if index == REFERENCE else completions[index]

        conversations = [pairwise_messages(self.rubric, e, text(c.first, e), text(c.second, e),
                                           show_reference=self.against == "group") for c, e in jobs]
        outcomes, errors = [], {}
        for (cmp, _), replies in zip(jobs, self.ask(conversations)):
            p, error = self._preference(replies)
            outcomes.append((cmp, p))
            if error:
                for index in (cmp.first, cmp.second):
                    errors.setdefault(index, error)
        results = []
        for i, (rate, counted) in enumerate(win_rates(len(examples), outcomes)):
            if i in problems or rate is None:
                results.append(failed(problems.get(i) or errors.get(i) or "judge: no comparison"))
            else:
                results.append(RewardResult(rate, components={"win_rate": rate}, metrics={"comparisons": counted}))
        return results
