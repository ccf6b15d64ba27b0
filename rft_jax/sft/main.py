"""`rft-jax sft`: supervised fine-tuning on the final assistant turn of each JSONL example.

The run directory is laid out like an RFT run's (config.json, checkpoints/,
export/ with an HF folder and, for LoRA, a PEFT adapter), so
`rft-jax train --config ... --init-from OUT` continues from it with RL and
`rft-jax eval --checkpoint OUT` evaluates it.
"""

from __future__ import annotations

import argparse
import sys

from rft_jax.model.lora import LoraConfig
from rft_jax.sft.config import SFTConfig
from rft_jax.train.config import ModelSpec


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rft-jax sft", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", required=True, help="JSONL whose examples end with an assistant turn (the target)")
    parser.add_argument("--mode", choices=("lora", "full"), default="lora")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/sft")
    args = parser.parse_args(argv)
    cfg = SFTConfig(data=args.data, model=ModelSpec(name=args.model, compute_dtype="float32"), mode=args.mode,
                    lora=LoraConfig(rank=args.rank, alpha=args.alpha), steps=args.steps, batch_size=args.batch_size,
                    learning_rate=args.lr, seed=args.seed, out_dir=args.out)

    from rft_jax.sft.run import run_sft  # noqa: PLC0415 (keeps --help fast)

    try:
        losses = run_sft(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"rft-jax sft: {err}", file=sys.stderr)
        return 2
    print(f"SFT loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps; run directory {cfg.out_dir}. "
          f"Continue with RL: rft-jax train ... --init-from {cfg.out_dir}")
    return 0
