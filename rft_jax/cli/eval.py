"""`rft-jax eval`: evaluate a model (base, checkpoint or export) on a dataset with one or more scorers.

`rft-jax eval --model M [--adapter A] --data test.jsonl --reward R` prints the
metrics, per-metadata-field breakdowns, and writes an eval JSON (the schema in
docs/monitoring.md) that `rft-jax report` reads.

`--checkpoint RUN` evaluates a run of `rft-jax train` or `rft-jax sft` from its
orbax checkpoint (best, else latest; or one checkpoints/KIND/STEP folder) on the
base model its config.json names, with LoRA merged as export does, so it scores
exactly like the run's export/model.

`--reasoning.mode on` evaluates in reasoning mode (docs/reasoning.md): the model
thinks within `--reasoning.think-budget` tokens, then answers, the scorers read
the answer, and the `reasoning/*` metrics are printed and written. The two
budgets decide the completion budget. A --checkpoint run's config.json
reasoning section is the default; --reasoning.* flags override it.

`--agent.environment.name calculator` (or sqlite, python, module, remote) evaluates
multi-turn episodes with tools (docs/agents.md): the scorers read each episode's
final answer, the `agent/*` metrics are printed, and each sample's transcript is
written. The episode budget is `--agent.max-episode-tokens`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import tyro

from rft_jax.data.reasoning import ReasoningConfig, plan_reasoning
from rft_jax.rollout.agent_config import AgentConfig

DEFAULT_MAX_NEW_TOKENS = 128


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """What `rft-jax eval` scores, how it samples, and where it writes the result."""

    data: str
    """RFT JSONL file."""
    model: str | None = None
    """Registry key, HF folder or .gguf (default: smollm2-135m-instruct, or the --checkpoint run's base)."""
    adapter: str | None = None
    """PEFT LoRA folder to apply."""
    checkpoint: str | None = None
    """Run directory of `rft-jax train`/`sft` (its best, else latest, checkpoint) or a RUN/checkpoints/KIND/STEP."""
    reward: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """Reward spec (repeatable; the first is the main score). Default: math_answer."""
    max_new_tokens: int | None = None
    """Tokens sampled per completion at most (default 128). With reasoning on it is think_budget +
    answer_budget: leave it out, or give that sum."""
    temperature: float = 0.0
    """0 = greedy."""
    samples: int = 1
    """Samples per prompt (pass@k)."""
    out: str | None = None
    """Write the eval JSON here."""
    name: str = "eval"
    """The evaluation's name in the eval JSON (and in `rft-jax report`)."""
    reasoning: ReasoningConfig = ReasoningConfig()
    """Think within a budget, then answer (docs/reasoning.md). Default: a --checkpoint run's own setting."""
    agent: AgentConfig = AgentConfig()
    """Multi-turn episodes with tools (docs/agents.md); off unless an environment is named."""


def completion_budget(max_new_tokens: int | None, reasoning: ReasoningConfig,
                      default: int = DEFAULT_MAX_NEW_TOKENS) -> int:
    """Tokens per completion: the flag, or with reasoning on the two budgets (a different flag is refused)."""
    return reasoning.max_new_tokens(max_new_tokens, default, "--max-new-tokens")


def run_reasoning(run_dir: Path) -> ReasoningConfig | None:
    """The reasoning section of a run's config.json; None when it has none (SFT runs, older runs)."""
    file = run_dir / "config.json"
    section = json.loads(file.read_text()).get("reasoning") if file.is_file() else None
    if not isinstance(section, dict):
        return None
    known = {f.name for f in dataclasses.fields(ReasoningConfig)}
    return ReasoningConfig(**{k: v for k, v in section.items() if k in known})


def with_run_reasoning(args: EvalOptions, argv: list[str]) -> EvalOptions:
    """`args` with a --checkpoint run's reasoning setting under the command line's --reasoning.* flags."""
    from rft_jax.checkpoint.store import find_checkpoint  # noqa: PLC0415 (orbax: keeps --help fast)

    run_dir = find_checkpoint(args.checkpoint).run_dir
    reasoning = run_reasoning(run_dir)
    if reasoning is None:
        return args
    args = tyro.cli(EvalOptions, args=argv, default=EvalOptions(data=args.data, reasoning=reasoning))
    print(f"reasoning: mode {args.reasoning.mode} (the run's {run_dir / 'config.json'}, then the flags)")
    return args


def load_policy(model: str | None, checkpoint: str | None, command: str) -> tuple[str, object, dict, dict] | None:
    """(model name, config, params, source) of --model or --checkpoint; None (after saying why) if it cannot.

    `source` holds {"checkpoint": path} for a checkpoint, for the output's record.
    """
    from rft_jax.model import DEFAULT_MODEL, load_model  # noqa: PLC0415

    if not checkpoint:
        name = model or DEFAULT_MODEL
        cfg, params = load_model(name)
        return name, cfg, params, {}
    from rft_jax.checkpoint.store import CheckpointError, restore_policy  # noqa: PLC0415
    from rft_jax.model.params import cast  # noqa: PLC0415
    from rft_jax.model.registry import default_param_dtype  # noqa: PLC0415

    try:
        policy = restore_policy(checkpoint, model)
    except CheckpointError as err:
        print(f"rft-jax {command}: {err}", file=sys.stderr)
        return None
    print(f"checkpoint: {policy.describe()}")
    params = cast(policy.params, default_param_dtype())
    return policy.model, policy.model_cfg, params, {"checkpoint": str(policy.checkpoint.path)}


def load_eval_set(path: str, tokenizer) -> list:
    """The examples to evaluate. A test set may repeat a prompt (a benchmark can): say so, and score each."""
    from rft_jax.data.validate import id_list, load_examples  # noqa: PLC0415

    loaded = load_examples(path, tokenizer=tokenizer, allow_duplicate_prompts=True)
    if loaded.repeated:
        print(f"rft-jax eval: warning: {path} has {len(loaded.repeated)} duplicate prompts (ids "
              f"{id_list(loaded.repeated)}); each is scored as a separate example", file=sys.stderr)
    return loaded.examples


def main(argv: list[str]) -> int:
    args = tyro.cli(EvalOptions, args=argv, prog="rft-jax eval", description=__doc__)
    if args.checkpoint and args.adapter:
        print("rft-jax eval: --checkpoint brings its own adapters; drop --adapter (or evaluate RUN/export/adapter "
              "with --model BASE --adapter instead of --checkpoint)", file=sys.stderr)
        return 2
    try:  # flag errors before the model loads (a CheckpointError is a ValueError)
        args = with_run_reasoning(args, argv) if args.checkpoint else args
        max_new_tokens = completion_budget(args.max_new_tokens, args.reasoning)
        if args.agent.enabled and args.reasoning.enabled:
            raise ValueError("--agent.environment.name and --reasoning.mode on together are not supported yet")
        max_new_tokens = args.agent.max_episode_tokens if args.agent.enabled else max_new_tokens
    except ValueError as err:
        print(f"rft-jax eval: {err}", file=sys.stderr)
        return 2

    import jax  # noqa: PLC0415 (keeps --help fast)

    from rft_jax.data.problems import DatasetError  # noqa: PLC0415
    from rft_jax.evaluation.evaluate import evaluate  # noqa: PLC0415
    from rft_jax.model.lora import load_peft_adapter  # noqa: PLC0415
    from rft_jax.model.tokenizer import load_tokenizer  # noqa: PLC0415
    from rft_jax.rewards import build_reward  # noqa: PLC0415

    loaded = load_policy(args.model, args.checkpoint, "eval")
    if loaded is None:
        return 2
    model, cfg, params, source = loaded
    tokenizer = load_tokenizer(model)
    try:  # always a plan: with reasoning off a native template (Qwen3's) still gets enable_thinking=False
        plan = plan_reasoning(args.reasoning, tokenizer)
        examples = load_eval_set(args.data, tokenizer)
    except (DatasetError, OSError, ValueError) as err:  # user errors: a message, not a traceback
        print(f"rft-jax eval: {err}", file=sys.stderr)
        return 2
    if not examples:
        print(f"rft-jax eval: {args.data} holds no examples", file=sys.stderr)
        return 2
    scorers = {spec if len(spec) < 40 else f"reward{i}": build_reward(spec)
               for i, spec in enumerate(args.reward or ("math_answer",))}
    lora, scale = None, 1.0
    if args.adapter:
        lora, lora_cfg = load_peft_adapter(args.adapter, cfg)
        scale = lora_cfg.scale
    result = evaluate(params, cfg, tokenizer, examples, scorers, key=jax.random.key(0),
                      max_new_tokens=max_new_tokens, lora=lora, lora_scale=scale,
                      temperature=args.temperature, num_samples=args.samples, reasoning=plan,
                      agent=args.agent if args.agent.enabled else None)
    width = max(len(k) for k in result.metrics)
    for k, v in result.metrics.items():
        print(f"{k:<{width}}  {v:.4f}")
    for field, groups in result.by_field.items():
        print(f"\nby {field}:")
        for value, m in groups.items():
            print(f"  {value:<14} " + "  ".join(f"{k}={v:.3f}" for k, v in m.items()))
    if args.out:
        doc = result.to_json(args.name, model=model, **source, dataset=args.data)
        Path(args.out).write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
