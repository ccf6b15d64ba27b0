"""Asynchronous RL: rollouts are sampled and scored while the trainer updates, at most K versions ahead.

A producer thread samples the batch of step s with the newest published policy,
as soon as that policy is at least version s - K (`asynchronous.max_staleness`
= K), and hands the episodes to a reward pool (rft_jax/rewards/pool.py). The
training loop takes the batches in step order, waits for their rewards, updates,
and publishes the new parameters (copied to the rollout sub-mesh when there is
one; with LoRA only the adapters move):

    producer   gen(s) ─▶ gen(s+1) ─▶ gen(s+2) ...          batch s sampled by version v, s - K <= v <= s
    rewards        └─ score(s) ┘ └─ score(s+1) ┘ ...        off the critical path, per-call time limits
    trainer            wait(s) ─▶ update(s) ─▶ publish(s+1) ─▶ wait(s+1) ...

With K = 0 the producer waits for the update before it samples, which is the
synchronous loop: same prompts, keys, parameters and update, so the same bits.
With K > 0 the sampling policy lags; `loss.off_policy` corrects for it with the
behaviour log-probs every episode carries (rft_jax/grpo/off_policy.py), and each
episode records the version that sampled it (`Episode.policy_version`).

Episodes in flight when the run stops (or dies) are discarded, never saved: a
checkpoint holds the state after step n, and `--resume` samples steps n+1...
again with that checkpoint's policy. No step is trained twice or skipped (the
prompts of a step are a pure function of the step), but for K > 0 the resumed
run's first K batches are fresher than the lost ones would have been.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rft_jax.parallel import lora_shardings, param_shardings
from rft_jax.rewards.pool import PooledScorer, RewardPool
from rft_jax.rewards.process_pool import reward_pool
from rft_jax.rollout.dynamic import fill_with_signal
from rft_jax.rollout.engine import Rollouts, apply_scores, finish_scoring, generate_episodes, my_episodes, prompt_ids
from rft_jax.rollout.episode import Episode
from rft_jax.train.config import AsyncConfig
from rft_jax.train.hooks import Hook, StepContext, run_hooks
from rft_jax.train.trainer import Trainer, batch_indices, extra_indices


class Stopped(Exception):
    """The training loop has ended: the producer leaves."""


class PolicyBoard:
    """The newest published policy (version, sampler arguments); the producer waits here for a fresh enough one."""

    def __init__(self):
        self._cond = threading.Condition()
        self._version: int | None = None
        self._args: dict | None = None
        self._closed = False

    def publish(self, version: int, args: dict) -> None:
        with self._cond:
            self._version, self._args = version, args
            self._cond.notify_all()

    def wait_for(self, version: int) -> tuple[int, dict]:
        """The newest policy once it is at least `version`; raises `Stopped` once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or (self._version is not None and self._version >= version))
            if self._closed:
                raise Stopped
            return self._version, self._args

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def tree_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


class PolicyTransfer:
    """The trainer's policy as the sampler reads it: a copy the next update's donation cannot free, on the
    rollout sub-mesh when there is one. With LoRA the base is placed there once and only adapters move."""

    def __init__(self, trainer: Trainer, rollout_mesh: Mesh | None):
        self.trainer, self.mesh = trainer, rollout_mesh
        self.lora = trainer.cfg.mode == "lora"
        base = trainer.policy.base
        if self.lora and rollout_mesh is not None:
            base = jax.device_put(base, param_shardings(base, rollout_mesh))
        self.base = base
        self.last_bytes = 0

    def _move(self, tree):
        if self.mesh is None:
            moved = jax.tree.map(jnp.copy, tree)
        else:
            shardings = (lora_shardings if self.lora else param_shardings)(tree, self.mesh)
            moved = jax.device_put(tree, shardings)
        self.last_bytes = tree_bytes(tree)
        return jax.block_until_ready(moved)  # done before the next update donates the source

    def __call__(self, state) -> dict:
        args = self.trainer.policy.sampler_args(state)
        if self.lora:
            return {**args, "params": self.base, "lora": self._move(args["lora"])}
        return {**args, "params": self._move(args["params"])}


@dataclasses.dataclass
class Produced:
    """One step's batch from the producer: sampled by `version`, its rewards pending in `rewards`."""

    step: int
    version: int
    groups: list[list[Episode]]
    rewards: Future | None  # None: already scored (dynamic sampling scores in the producer)
    generate_s: float
    submitted: float  # perf_counter when the rewards were submitted
    active_B: np.ndarray | None = None
    extra: dict[str, float] = dataclasses.field(default_factory=dict)
    reward_s: float = 0.0
    scored: float | None = None  # perf_counter when the rewards came back

    def __post_init__(self):
        if self.rewards is not None:
            self.rewards.add_done_callback(lambda _: setattr(self, "scored", time.perf_counter()))

    def rollouts(self, settings, stop: threading.Event | None = None) -> Rollouts:
        """The scored rollouts: waits for the rewards (raises `Stopped` once `stop` is set)."""
        if self.rewards is not None:
            while True:
                try:
                    results = self.rewards.result(timeout=0.25)
                    break
                except FutureTimeout:
                    if stop is not None and stop.is_set():
                        raise Stopped from None
            apply_scores(self.groups, results)
            finish_scoring(self.groups, settings)
            self.reward_s = (self.scored or time.perf_counter()) - self.submitted
            self.rewards = None
        return Rollouts(self.groups, {"generate": self.generate_s, "reward": self.reward_s})


class Producer:
    """Samples the batches of steps start..steps-1 in order on its own thread (see the module docstring)."""

    def __init__(self, trainer: Trainer, examples: list, ids: list, board: PolicyBoard, pool: RewardPool,
                 acfg: AsyncConfig, rollout_mesh: Mesh | None, start: int, steps: int):
        self.trainer, self.examples, self.ids, self.board, self.pool = trainer, examples, ids, board, pool
        self.acfg, self.mesh, self.start, self.steps = acfg, rollout_mesh, start, steps
        self.out: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.key = jax.random.key(trainer.cfg.seed)
        self.thread = threading.Thread(target=self._run, name="rft-jax-rollouts", daemon=True)

    def _sample(self, examples, ids, key, version: int, args: dict) -> tuple[list[list[Episode]], Future, float]:
        t0 = time.perf_counter()
        t = self.trainer
        groups = generate_episodes(args["params"], t.model_cfg, t.tokenizer, examples, key, t.rollout_settings,
                                   lora=args["lora"], lora_scale=args["lora_scale"], mesh=self.mesh,
                                   policy_version=version, ids=ids)
        generate_s = time.perf_counter() - t0
        mine = my_episodes(groups)
        return groups, self.pool.submit([e.example for e in mine], [e.text for e in mine]), generate_s

    def _produce(self, step: int) -> Produced:
        cfg = self.trainer.cfg
        version, args = self.board.wait_for(step - self.acfg.max_staleness)
        idx = batch_indices(step, cfg.batch_size, len(self.examples), cfg.seed)
        key = jax.random.fold_in(self.key, step)
        groups, rewards, generate_s = self._sample([self.examples[i] for i in idx], [self.ids[i] for i in idx], key,
                                                   version, args)
        item = Produced(step, version, groups, rewards, generate_s, time.perf_counter())
        if cfg.dynamic_sampling.enabled:  # the groups without a signal are known only once scored
            self._fill(item, key, version, args)
        return item

    def _fill(self, item: Produced, key, version: int, args: dict) -> None:
        """Dynamic sampling in the producer, with the policy that sampled the first round."""
        cfg, settings = self.trainer.cfg, self.trainer.rollout_settings

        def more(round_: int) -> Rollouts:
            extra = extra_indices(item.step, round_, cfg.batch_size, len(self.examples), cfg.seed)
            groups, rewards, generate_s = self._sample([self.examples[i] for i in extra], [self.ids[i] for i in extra],
                                                       jax.random.fold_in(key, 1000 + round_), version, args)
            return Produced(item.step, version, groups, rewards, generate_s, time.perf_counter()).rollouts(
                settings, self.stopping)

        filled = fill_with_signal(item.rollouts(settings, self.stopping), more, cfg.batch_size,
                                  cfg.dynamic_sampling.max_rounds)
        item.groups, item.rewards, item.active_B, item.extra = filled.rollouts.groups, None, filled.active_B, \
            filled.metrics
        item.generate_s, item.reward_s = filled.rollouts.timing["generate"], filled.rollouts.timing["reward"]

    def _run(self) -> None:
        try:
            for step in range(self.start, self.steps):
                self.out.put(self._produce(step))
        except Stopped:
            pass
        except BaseException as err:  # handed to the training loop, which raises it
            self.out.put(err)

    def next(self) -> Produced:
        item = self.out.get()
        if isinstance(item, BaseException):
            raise RuntimeError(f"the rollout producer failed: {type(item).__name__}: {item}") from item
        return item

    def stop(self, timeout_s: float = 600.0) -> int:
        """Ends the thread after the batch it is sampling (it stops waiting for rewards at once); returns how
        many produced batches were never trained."""
        self.stopping.set()
        self.board.close()
        self.thread.join(timeout_s)
        if self.thread.is_alive():  # a daemon: it cannot keep the process alive
            print(f"[rft-jax] asynchronous: the rollout producer is still sampling after {timeout_s:.0f} s; "
                  "left behind")
        return self.out.qsize()


def staleness_metrics(step: int, groups: list[list[Episode]], max_staleness: int) -> dict[str, float]:
    """The batch's staleness (updates between the sampling policy and the one trained) and its histogram."""
    lag = np.array([step - e.policy_version for group in groups for e in group])
    return {"async/staleness_mean": float(lag.mean()), "async/staleness_max": float(lag.max()),
            **{f"async/staleness_share/{k}": float(np.mean(lag == k)) for k in range(max_staleness + 1)}}


def warn_uncorrected(cfg) -> None:
    """An asynchronous run whose loss ignores the lag (decoupled objective, no correction) is a valid
    baseline, but rarely what is meant."""
    off = cfg.loss.off_policy
    if cfg.asynchronous.max_staleness > 0 and off.objective == "decoupled" and off.correction == "none":
        print(f"[rft-jax] asynchronous: episodes up to {cfg.asynchronous.max_staleness} version(s) old are "
              "trained with loss.off_policy.correction none, which ignores the lag; tis or mask corrects it "
              "(docs/async.md)")


def train_async(trainer: Trainer, state, examples, steps: int, hooks: list[Hook], start: int = 0,
                rollout_mesh: Mesh | None = None):
    """RL steps `start` .. `steps` - 1 with asynchronous rollouts; returns the state and why it stopped early
    (or None), as `rft_jax.train.loop.train` does."""
    acfg = trainer.cfg.asynchronous
    warn_uncorrected(trainer.cfg)
    ids = prompt_ids(trainer.tokenizer, examples, trainer.rollout_settings.reasoning)
    board, transfer = PolicyBoard(), PolicyTransfer(trainer, rollout_mesh)
    board.publish(trainer.rl_step(state), transfer(state))
    own = not isinstance(trainer.scorer, PooledScorer)  # run() hands in the run's pool
    pool = reward_pool(trainer.cfg.reward_workers, trainer.scorer) if own else trainer.scorer.pool
    producer = Producer(trainer, examples, ids, board, pool, acfg, rollout_mesh, start, steps)
    producer.thread.start()
    stopped = None
    try:
        for step in range(start, steps):
            t_wait = time.perf_counter()
            item = producer.next()
            if item.step != step:
                raise RuntimeError(f"the producer handed over step {item.step} for step {step}")
            r = item.rollouts(trainer.rollout_settings)
            t0 = time.perf_counter()
            state, metrics = trainer.update(state, r, item.active_B)
            t1 = time.perf_counter()
            board.publish(trainer.rl_step(state), transfer(state))
            t2 = time.perf_counter()
            tokens = int(r.lengths_BxG.sum()) + int(r.prompt_lengths_B.sum())
            metrics.update(item.extra)
            metrics.update(staleness_metrics(step, r.groups, acfg.max_staleness))
            metrics.update({f"reward_pool/{k}": v for k, v in pool.stats().items()})
            # timing_s/wait is the part of the step the trainer spent waiting for rollouts and rewards.
            metrics.update({"timing_s/generate": item.generate_s, "timing_s/reward": item.reward_s,
                            "timing_s/wait": t0 - t_wait, "timing_s/update": t1 - t0,
                            "timing_s/param_transfer": t2 - t1, "async/transfer_bytes": float(transfer.last_bytes),
                            "timing_s/step": t2 - t_wait, "perf/tokens_per_s": tokens / max(t2 - t_wait, 1e-9)})
            ctx = StepContext(step + 1, steps, state, metrics, r)
            run_hooks(hooks, ctx)
            if ctx.stop:
                if ctx.stop != "signal":
                    print(f"[rft-jax] stopping at step {ctx.step}: {ctx.stop}")
                stopped = ctx.stop
                break
    finally:
        board.close()
        if own:
            pool.close()
        lost = producer.stop()
        if lost:
            print(f"[rft-jax] asynchronous: {lost} sampled batch(es) not trained were discarded; --resume samples "
                  "them again")
    return state, stopped
