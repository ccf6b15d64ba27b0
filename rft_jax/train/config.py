"""The configuration tree of a GRPO run. `rft-jax train --help` shows every field."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Literal

import tyro

from rft_jax.data.reasoning import ReasoningConfig
from rft_jax.data.tasks.prompt import PromptStyle
from rft_jax.grpo import AdvantageConfig, GRPOLossConfig, OptimizerConfig
from rft_jax.model.lora import LoraConfig
from rft_jax.model.registry import ModelSpec
from rft_jax.monitoring.trackers import TrackingConfig
from rft_jax.parallel.distributed import DistributedConfig
from rft_jax.parallel.mesh import MeshConfig
from rft_jax.rewards.process_pool import RewardWorkersConfig
from rft_jax.rewards.spec import RewardSpec, parse_spec
from rft_jax.rollout.agent_config import AgentConfig
from rft_jax.sampling.processors import SamplingParams

# On the command line a reward is a registered name, `module:function`, a JSON object or a .json file.
RewardArg = Annotated[RewardSpec, tyro.constructors.PrimitiveConstructorSpec(
    nargs=1, metavar="NAME|JSON", instance_from_str=lambda args: parse_spec(args[0]),
    is_instance=lambda x: isinstance(x, RewardSpec), str_from_instance=lambda s: [json.dumps(s.to_json())])]


def parse_views(text: str) -> tuple[tuple[str, RewardSpec], ...]:
    views = json.loads(text)
    if not isinstance(views, dict):
        raise ValueError(f"evaluation views are a JSON object {{name: reward spec}}, got {text!r}")
    return tuple((str(name), parse_spec(spec)) for name, spec in views.items())


ViewsArg = Annotated[tuple[tuple[str, RewardSpec], ...], tyro.constructors.PrimitiveConstructorSpec(
    nargs=1, metavar="JSON", instance_from_str=lambda args: parse_views(args[0]),
    is_instance=lambda x: isinstance(x, tuple),
    str_from_instance=lambda views: [json.dumps({name: spec.to_json() for name, spec in views})])]


@dataclasses.dataclass(frozen=True)
class TaskData:
    """A built-in generated task (written to RUN_DIR/data/*.jsonl, then loaded like user data)."""

    name: Literal["none", "arithmetic"] = "none"
    """A built-in generator, or "none" to read data.train_file / val_file / test_file."""
    levels: tuple[str, ...] = ("two_operand", "one_step")
    """Difficulty levels (see rft_jax/data/tasks/arithmetic.py)."""
    num_train: int = 2000
    num_val: int = 64
    num_test: int = 200
    seed_train: int = 1
    seed_val: int = 2
    seed_test: int = 3
    """The test seed is never used for training or validation."""
    prompt: PromptStyle = PromptStyle()


@dataclasses.dataclass(frozen=True)
class DataConfig:
    train_file: str | None = None
    """RFT JSONL for training (OpenAI chat format). Ignored when `task` generates the data."""
    val_file: str | None = None
    test_file: str | None = None
    task: TaskData = TaskData()
    max_prompt_tokens: int = 256


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    samples_per_prompt: int = 8
    """G: rollouts per prompt (2-64; GRPO needs at least 2 to compare)."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    """Response budget; longer completions are truncated (and counted in response_length/clip_ratio)."""
    stop: tuple[str, ...] = ()

    @property
    def params(self) -> SamplingParams:
        """What the sampler needs of these settings."""
        return SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    interval: int = 5
    """Validate every this many steps (greedy)."""
    patience: int = 0
    """Early stopping: stop after this many validations without improvement (0: never stop early)."""
    min_delta: float = 0.0
    """Smallest validation-reward gain that counts as improvement."""
    success_threshold: float = 1.0
    """A completion scoring at least this counts as a success for pass@k."""
    views: ViewsArg = ()
    """Extra scorers evaluated beside the reward, each a row of the before/after table, e.g. the arithmetic
    experiment's strict/loose/format accuracies: {"strict": {"name": "math_answer", "mode": "strict_line"}}."""


@dataclasses.dataclass(frozen=True)
class DynamicSamplingConfig:
    """DAPO's dynamic sampling (arXiv 2503.14476; rft_jax/rollout/dynamic.py)."""

    enabled: bool = False
    """Drop groups whose G rewards all agree (zero advantage) and sample further prompts in their place."""
    max_rounds: int = 3
    """Extra sampling rounds per step at most; when they run out, dropped groups keep the batch's shape
    and are left out of the loss."""


@dataclasses.dataclass(frozen=True)
class AsyncConfig:
    """Asynchronous RL (docs/async.md): rollouts and their rewards are produced while the trainer updates,
    at most `max_staleness` policy versions ahead. Correct the lag with loss.off_policy (tis or mask). The
    rewards' workers and time limit are `reward_workers`, as in a synchronous run."""

    enabled: bool = False
    max_staleness: int = 1
    """K: an episode is trained on at most K updates after the policy that sampled it (0: each batch is
    sampled by the current policy, which reproduces the synchronous run bit for bit)."""
    rollout_devices: int = 0
    """Devices of the rollout sub-mesh, the first ones of the device list; the rest train on `mesh`. After
    each update the new parameters (with LoRA, only the adapters) are copied to them. 0: one shared mesh."""
    rollout_mesh: MeshConfig = MeshConfig()
    """Layout of the rollout sub-mesh (data x fsdp x tensor over rollout_devices)."""

    def __post_init__(self):
        if self.max_staleness < 0 or self.rollout_devices < 0:
            raise ValueError(f"asynchronous: max_staleness={self.max_staleness} and rollout_devices="
                             f"{self.rollout_devices} must be >= 0")
        if self.rollout_mesh != MeshConfig() and not self.rollout_devices:
            raise ValueError("asynchronous.rollout_mesh lays out the rollout sub-mesh: set rollout_devices too")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    interval: int = 10
    keep_latest: int = 1
    keep_best: int = 1


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    """Supervised warm start on generated demonstrations, run before RFT when `steps` > 0.

    The warm-started policy is where RL starts AND its KL reference, as with `init_from` (the reference is
    always the initialised policy). It is saved as RUN/warm_start/model; with LoRA it becomes the frozen
    base under a fresh adapter, and the export's adapter names it (export/base)."""

    steps: int = 0
    num_demos: int = 64
    """Training prompts (taken from the end of the training split) turned into demonstrations."""
    batch_size: int = 16
    learning_rate: float = 1e-4
    source: Literal["self_format", "conversations"] = "self_format"
    """self_format: the base model's own greedy answers with the required final line appended.
    conversations: the assistant turns of `demos_file`'s conversations (e.g. tool-use demonstrations: each
    turn learnt given the turns and tool results before it)."""
    demos_file: str = ""
    """source=conversations: an RFT JSONL whose messages hold the assistant turns to learn (num_demos of them)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """GRPO reinforcement fine-tuning."""

    model: ModelSpec = ModelSpec()
    init_from: str = ""
    """Start from a checkpoint: an `rft-jax sft` or `rft-jax train` run directory (its best, else latest,
    checkpoint) or one RUN/checkpoints/{best,latest}/STEP folder, trained from model.name. Its policy
    becomes the starting policy AND the KL reference, as RLHF pipelines use the SFT model as reference.
    LoRA checkpoints are merged into the base weights and a fresh adapter (B = 0, so step 0 is exactly
    that policy) is trained on top; export/model is then the complete policy and export/adapter applies to
    export/base (that starting policy). With a warm start as well, the warm-started policy is both.
    Empty: start from model.name."""
    data: DataConfig = DataConfig()
    reward: RewardArg = RewardSpec("math_answer")
    """The reward (rft_jax/rewards/spec.py): a registered name (rft_jax/rewards/registry.py), `module:function`,
    or a JSON spec such as {"name": "aggregate", "components": {...}}."""
    reward_workers: RewardWorkersConfig = RewardWorkersConfig()
    """Where rewards run and their time limit per call (rft_jax/rewards/process_pool.py): worker processes by
    default, so a reward that hangs, crashes or returns NaN or an out-of-range score gives per-sample errors
    (`reward/errors`) and the run goes on."""
    mode: Literal["lora", "full"] = "lora"
    lora: LoraConfig = LoraConfig()
    advantage: AdvantageConfig = AdvantageConfig()
    """Reward shaping and the group-relative advantage estimator (rft_jax/grpo/advantages.py)."""
    loss: GRPOLossConfig = GRPOLossConfig()
    """The policy loss (rft_jax/grpo/loss.py)."""
    optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-4)
    sampling: SamplingConfig = SamplingConfig()
    reasoning: ReasoningConfig = ReasoningConfig()
    """Think within a budget, then answer (docs/reasoning.md). With mode on, the completion budget
    (sampling.max_new_tokens) is think_budget + answer_budget, and the reward reads the answer."""
    agent: AgentConfig = AgentConfig()
    """Multi-turn episodes with tools (docs/agents.md): the policy calls the environment's tools (or the
    dataset's `tools`, bound by a module) for up to max_turns turns. With an environment set, the completion
    budget (sampling.max_new_tokens) is agent.max_episode_tokens, tool tokens included, and only the
    policy's tokens carry a loss."""
    evaluation: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    warm_start: WarmStartConfig = WarmStartConfig()
    batch_size: int = 8
    """Prompts per step (each gets G samples)."""
    ppo_epochs: int = 1
    """mu: optimisation passes over each rollout batch. With more than one update per step (mu > 1 or
    ppo_minibatches > 1) the ratio is taken against the sampling policy's log-probs, recomputed with the
    training forward before the first update, so that update has ratio 1 whatever top-k/top-p or the
    sampler's precision did. The learning-rate schedule and --resume count steps, not updates."""
    ppo_minibatches: int = 1
    """Mini-batches of whole groups per pass (PPO style): each pass takes one optimizer step per
    mini-batch, so a step makes ppo_epochs * ppo_minibatches optimizer updates. Divides batch_size."""
    epochs: int = 1
    max_steps: int = 0
    """Stop after this many steps (0: epochs decide)."""
    time_budget_s: float = 0.0
    """Stop training after this many seconds of wall time (0: no limit)."""
    seed: int = 0
    out_dir: str = "runs/default"
    resume: bool = False
    """Continue from the latest checkpoint in out_dir."""
    require_signal: bool = True
    """Refuse to start when the base model never succeeds on the validation groups."""
    dynamic_sampling: DynamicSamplingConfig = DynamicSamplingConfig()
    asynchronous: AsyncConfig = AsyncConfig()
    """Produce rollouts ahead of training under a staleness bound (docs/async.md)."""
    kl_monitor_interval: int = 10
    """Every this many steps, measure KL(policy || reference) on two groups of the step's rollouts
    (`actor/ref_kl`, in the report's KL panel and read by the KL alarm), even when beta = 0; 0: off.
    Full fine-tuning with beta = 0 then keeps a copy of the starting weights as the reference."""
    rollout_log_interval: int = 5
    tracking: TrackingConfig = TrackingConfig()
    """Experiment trackers the metrics also go to (wandb, MLflow; each an extra to install), e.g.
    --tracking.trackers mlflow --tracking.project arithmetic."""
    export: bool = True
    export_dtype: Literal["float32", "bfloat16"] = "float32"
    """The dtype export/ (model, adapter, base) is written in: bfloat16 halves it, as most Hub checkpoints are
    stored; training and checkpoints stay float32."""
    mesh: MeshConfig = MeshConfig()
    """Device layout data x fsdp x tensor (docs/scaling.md); the default shards everything FSDP over all devices."""
    distributed: DistributedConfig = DistributedConfig()
    """Multi-process (multi-host) runs; single-process unless configured or detected."""

    def __post_init__(self):
        if not isinstance(self.reward, RewardSpec):
            raise TypeError(f"reward is a RewardSpec, got {self.reward!r}: write RewardSpec(name, params) or "
                            "rft_jax.rewards.parse_spec(text) for a name or JSON spec")
        if self.reasoning.enabled:  # the default's value counts as unset: the budgets decide
            asked = self.sampling.max_new_tokens
            budget = self.reasoning.max_new_tokens(None if asked == SamplingConfig.max_new_tokens else asked,
                                                   asked, "sampling.max_new_tokens")
            object.__setattr__(self, "sampling", dataclasses.replace(self.sampling, max_new_tokens=budget))
        ws = self.warm_start
        if ws.steps > 0 and ws.source == "conversations" and not ws.demos_file:
            raise ValueError("warm_start.source=conversations reads its demonstrations from warm_start.demos_file: "
                             "give an RFT JSONL whose messages hold the assistant turns to learn")
        if self.agent.enabled:
            if self.reasoning.enabled:
                raise ValueError("agent.environment and reasoning.mode on together are not supported yet: "
                                 "choose one")
            if self.agent.max_turns < 1 or self.agent.max_episode_tokens < 1:
                raise ValueError(f"agent.max_turns={self.agent.max_turns} and agent.max_episode_tokens="
                                 f"{self.agent.max_episode_tokens} must be >= 1")
            # The episode budget decides (sampling.max_new_tokens is not read): a config built from a default
            # that already holds an agent carries that default's budget there, and a new --agent budget wins.
            object.__setattr__(self, "sampling", dataclasses.replace(self.sampling,
                                                                     max_new_tokens=self.agent.max_episode_tokens))
        if self.asynchronous.rollout_devices and not self.asynchronous.enabled:
            raise ValueError("asynchronous.rollout_devices splits the devices for asynchronous RL: set "
                             "asynchronous.enabled too, or leave rollout_devices at 0")
        accum, minibatches = self.optimizer.grad_accum_steps, self.ppo_minibatches
        if self.ppo_epochs < 1 or minibatches < 1:
            raise ValueError(f"ppo_epochs={self.ppo_epochs} and ppo_minibatches={minibatches} must be >= 1")
        if self.batch_size % (accum * minibatches):
            raise ValueError(f"batch_size={self.batch_size} prompts is not divisible by ppo_minibatches={minibatches}"
                             f" x optimizer.grad_accum_steps={accum} micro-batches (whole groups per micro-batch)")
        if not 2 <= self.sampling.samples_per_prompt <= 64:
            raise ValueError(f"samples_per_prompt (G) must be in [2, 64], got {self.sampling.samples_per_prompt}: "
                             "GRPO's advantage compares the samples of a group, so one sample per prompt has "
                             "no signal (its advantage is always 0)")
        if self.sampling.max_new_tokens < 1:
            # No upper cap here: memory bounds it, checked against the device when the run starts (train/memory.py).
            raise ValueError(f"sampling.max_new_tokens must be >= 1, got {self.sampling.max_new_tokens}")
