"""One GRPO step, ours vs TRL's GRPOTrainer, in one process on the same machine.

    python benchmarks/grpo_step.py [--modes lora,full] [--steps 3] [--no-trl]

Setting (../shared/PEERS.md): SmolLM2-135M-Instruct, 8 prompts x 8 generations, 64 new
tokens at temperature 1.0, LoRA r=16 alpha 32 on all linear layers (lr 1e-4) or full
fine-tuning (lr 1e-5), beta = 0, token-mean (TRL's `dapo`) loss, one optimisation pass.
A step is generation + reward + update: ours is `rft_jax.train.trainer.Trainer.step`, the function the
training loop calls, on the mesh the default config builds. Steps that compile a new shape (the first,
or a new completion bucket) are reported but not counted. Prints seconds per step for each, the ratio,
and our step's achieved FLOP/s against the matmul peak measured in the same run.
TRL needs `pip install trl==1.16.0 peft==0.21.2` (and torch==2.13.0).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.matmul_peak import matmul_peak_gflops  # noqa: E402
from rft_jax.data.tasks.arithmetic import generate_arithmetic  # noqa: E402
from rft_jax.grpo import GRPOLossConfig, OptimizerConfig  # noqa: E402
from rft_jax.hugepages import reexec_with_hugepages  # noqa: E402
from rft_jax.model import DEFAULT_MODEL, load_model  # noqa: E402
from rft_jax.model.lora import LoraConfig  # noqa: E402
from rft_jax.model.registry import resolve_compute_dtype  # noqa: E402
from rft_jax.model.tokenizer import load_tokenizer  # noqa: E402
from rft_jax.parallel import make_mesh  # noqa: E402
from rft_jax.rewards import build_reward  # noqa: E402
from rft_jax.rewards.spec import RewardSpec  # noqa: E402
from rft_jax.sampling.generate import mesh_sampler  # noqa: E402
from rft_jax.train.config import SamplingConfig, TrainConfig  # noqa: E402
from rft_jax.train.trainer import build_trainer  # noqa: E402

PROMPTS, GROUP, NEW_TOKENS = 8, 8, 64
LR = {"lora": 1e-4, "full": 1e-5}


def step_flops(cfg, prompt_tokens: int, completion_tokens: int, lora: bool) -> float:
    """FLOPs a step needs: decode (2N per token), then forward (2N) and backward (2N for activation
    gradients, +2N for weight gradients when training everything) over prompt-once + completions."""
    n_body = cfg.num_params - cfg.vocab_size * cfg.hidden_size
    unembed = cfg.vocab_size * cfg.hidden_size
    decode = 2 * (n_body + unembed) * completion_tokens + 2 * n_body * prompt_tokens
    forward = 2 * n_body * (prompt_tokens + completion_tokens) + 2 * unembed * completion_tokens
    backward = forward * (1 if lora else 2)
    return decode + forward + backward


def bench_config(mode: str) -> TrainConfig:
    """The PEERS.md setting as a train config: what `rft-jax train` would run with these flags."""
    cfg = TrainConfig(reward=RewardSpec("math_answer"), mode=mode, lora=LoraConfig(rank=16, alpha=32.0),
                      loss=GRPOLossConfig(beta=0.0, aggregation="token-mean"),
                      optimizer=OptimizerConfig(learning_rate=LR[mode], weight_decay=0.0),
                      sampling=SamplingConfig(samples_per_prompt=GROUP, temperature=1.0, max_new_tokens=NEW_TOKENS),
                      batch_size=PROMPTS)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, remat=False))


def our_steps(mode: str, steps: int, cfg, params, tokenizer, examples, scorer):
    """`Trainer.step`, the function `rft-jax train` calls each step: rollouts on the run's mesh, then the update."""
    train_cfg = bench_config(mode)
    mesh = make_mesh(train_cfg.mesh)
    # The full-mode state is donated by the step: give it its own copy of the parameters.
    trainer, state = build_trainer(train_cfg, cfg, jax.tree.map(jnp.copy, params), tokenizer, scorer, mesh, 100)
    sampler = mesh_sampler(mesh)
    times, flops, compiled = [], [], []
    for i in range(steps):
        programs = trainer.step_fn.jitted._cache_size() + sampler._cache_size()
        t = time.perf_counter()
        state, metrics, r = trainer.step(state, examples, jax.random.key(i))
        jax.block_until_ready(state.trainable)
        times.append(time.perf_counter() - t)
        flops.append(step_flops(cfg, int(r.prompt_lengths_B.sum()), int(r.lengths_BxG.sum()), mode == "lora"))
        compiled.append(trainer.step_fn.jitted._cache_size() + sampler._cache_size() > programs)
        print(f"  ours {mode} step {i}: {times[-1]:.1f} s{' (compiled a new shape)' if compiled[-1] else ''} "
              f"(generate {metrics['timing_s/generate']:.1f} s, reward {metrics['timing_s/reward']:.2f} s, update "
              f"{metrics['timing_s/update']:.1f} s; longest completion {int(r.lengths_BxG.max())} tokens)", flush=True)
    # A step that compiled a new shape (the first, or a new completion bucket) pays a one-time cost; the
    # figure is the median of the steps that did not.
    steady = [i for i, c in enumerate(compiled) if not c] or list(range(len(times)))
    return statistics.median(times[i] for i in steady), statistics.median(flops[i] for i in steady)


def trl_steps(mode: str, steps: int, model_dir: str, examples) -> float:
    import torch  # noqa: PLC0415
    from datasets import Dataset  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: PLC0415
    from trl import GRPOConfig, GRPOTrainer  # noqa: PLC0415

    torch.set_num_threads(os.cpu_count() or 1)
    scorer = build_reward("math_answer")
    by_prompt = {ex.prompt_messages[-1]["content"]: ex for ex in examples}

    def reward(prompts, completions, **_):
        return [scorer.score(by_prompt[p[-1]["content"]], c[0]["content"]).score for p, c in zip(prompts, completions)]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self._t = [], 0.0

        def on_step_begin(self, *a, **k):
            self._t = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self._t)
            print(f"  TRL {mode} step {len(self.times) - 1}: {self.times[-1]:.1f} s", flush=True)

    data = Dataset.from_list([{"prompt": ex.prompt_messages} for ex in examples])
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, gradient_accumulation_steps=8,
                      num_generations=GROUP, max_completion_length=NEW_TOKENS, use_cpu=True, bf16=False,
                      learning_rate=LR[mode], max_steps=steps, logging_steps=1, save_strategy="no", report_to=[])
    peft_config = None
    if mode == "lora":
        from peft import LoraConfig as PeftLoraConfig  # noqa: PLC0415

        peft_config = PeftLoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    timer = Timer()
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                          processing_class=AutoTokenizer.from_pretrained(model_dir), reward_funcs=reward,
                          args=args, train_dataset=data, peft_config=peft_config, callbacks=[timer])
    trainer.train()
    return statistics.median(timer.times[1:] or timer.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="lora,full")
    parser.add_argument("--steps", type=int, default=4,
                        help="steps per run; steps that compile a new shape (the first, at least) are not counted")
    parser.add_argument("--no-trl", action="store_true")
    args = parser.parse_args()

    dtype = jnp.dtype(resolve_compute_dtype("auto"))
    cfg, params = load_model(DEFAULT_MODEL, dtype=jnp.float32)
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    examples = generate_arithmetic(PROMPTS, seed=321, levels=("two_operand", "one_step"))
    scorer = build_reward("math_answer")
    peak = matmul_peak_gflops(dtype)
    model_dir = None
    if not args.no_trl:
        from rft_jax.checkpoint.export import export_model  # noqa: PLC0415

        model_dir = tempfile.mkdtemp()
        export_model(model_dir, cfg, params, tokenizer)  # TRL refuses GGUF-loaded models: plain safetensors
    print(f"matmul peak {peak:.0f} GFLOP/s ({dtype.name}); {PROMPTS} prompts x {GROUP} samples x {NEW_TOKENS} tokens")
    rows = []
    for mode in args.modes.split(","):
        ours_s, flops = our_steps(mode, args.steps, cfg, params, tokenizer, examples, scorer)
        trl_s = trl_steps(mode, args.steps, model_dir, examples) if model_dir else float("nan")
        rows.append((mode, ours_s, trl_s, flops / ours_s / 1e9))
        peak = max(peak, matmul_peak_gflops(dtype))  # the best reading of the run (the machine is shared)
    print(f"\nmatmul peak, best reading of the run: {peak:.0f} GFLOP/s")
    print(f"{'mode':<5} {'ours s/step':>11} {'TRL s/step':>10} {'speed-up':>8} {'ours GFLOP/s':>12} {'of peak':>7}")
    for mode, ours_s, trl_s, gflops in rows:
        print(f"{mode:<5} {ours_s:>11.1f} {trl_s:>10.1f} {trl_s / ours_s:>8.2f} {gflops:>12.1f} {gflops / peak:>7.0%}")


if __name__ == "__main__":
    reexec_with_hugepages()  # the same setting as the `rft-jax` commands (rft_jax/hugepages.py)
    main()
