"""`rft-jax sft`: supervised fine-tuning on the final assistant turn of each JSONL example.

The result is exported like an RFT run (HF folder, and a PEFT adapter for LoRA),
so `rft-jax train --config ... --model.name OUT/export/model` continues from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp


def pairs_from_examples(tokenizer, examples) -> list[tuple[list[int], str]]:
    pairs = []
    for ex in examples:
        last = max((i for i, m in enumerate(ex.messages) if m["role"] == "assistant"), default=None)
        if last is None:
            continue
        content = ex.messages[last]["content"]
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
        pairs.append((tokenizer.apply_chat_template(ex.messages[:last], tools=ex.tools), text))
    return pairs


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

    from rft_jax.data import load_dataset  # noqa: PLC0415
    from rft_jax.model import load_model  # noqa: PLC0415
    from rft_jax.model.lora import LoraConfig, init_lora  # noqa: PLC0415
    from rft_jax.model.tokenizer import load_tokenizer  # noqa: PLC0415
    from rft_jax.sft.run import train_sft  # noqa: PLC0415
    from rft_jax.sft.step import SFTSettings  # noqa: PLC0415
    from rft_jax.train.export import export_run  # noqa: PLC0415

    tokenizer = load_tokenizer(args.model)
    pairs = pairs_from_examples(tokenizer, load_dataset(args.data, tokenizer=tokenizer))
    if not pairs:
        print(f"rft-jax sft: {args.data} has no example with an assistant turn to learn from")
        return 2
    cfg, params = load_model(args.model, dtype=jnp.float32)
    lora_cfg = LoraConfig(rank=args.rank, alpha=args.alpha)
    if args.mode == "lora":
        trainable, frozen, scale = init_lora(cfg, lora_cfg, jax.random.key(args.seed)), params, lora_cfg.scale
    else:
        trainable, frozen, scale = params, None, None
    trained, losses = train_sft(trainable, frozen, tokenizer, pairs, SFTSettings(cfg, scale), steps=args.steps,
                                batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sft_losses.json").write_text(json.dumps(losses))
    run_cfg = dataclasses.make_dataclass("C", [("mode", str), ("lora", object), ("model", object)])(
        args.mode, lora_cfg, dataclasses.make_dataclass("M", [("name", str)])(args.model))
    export_run(run_cfg, cfg, params, trained, tokenizer, out / "export")
    print(f"SFT loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps; exported to {out / 'export'}")
    return 0
