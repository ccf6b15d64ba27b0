"""One process of the two-process test (tests/test_parallel_multiprocess.py); also the single-process reference.

    python tests/parallel_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR

With NUM_PROCESSES=1 no cluster is formed (PORT is unused).

Two GRPO steps of a tiny LoRA model: sample on the mesh, each process scores its
share of the prompts, gather, update with the sharded step, save a checkpoint.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rft_jax.parallel import initialize_distributed

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
            head_dim=8)
B, G, C = 8, 4, 8


def prompts() -> list[list[int]]:
    rng = np.random.default_rng(3)
    return [[int(t) for t in rng.integers(3, 64, n)] for n in rng.integers(2, 7, B)]


def reward(tokens_GxC: np.ndarray, mask_GxC: np.ndarray) -> np.ndarray:
    return ((tokens_GxC % 3 == 0) & mask_GxC).mean(-1).astype(np.float32)


def two_steps(out_dir: str) -> dict:
    from rft_jax.checkpoint.store import RunCheckpoints
    from rft_jax.grpo import GRPOLossConfig, OptimizerConfig, group_advantages, make_optimizer
    from rft_jax.model import ModelConfig, init_params
    from rft_jax.model.lora import LoraConfig, init_lora
    from rft_jax.parallel import MeshConfig, gather_objects, make_mesh, place, process_part, to_host
    from rft_jax.sampling import SamplingParams
    from rft_jax.sampling.generate import generate_ids
    from rft_jax.train.sharded_step import jit_sharded_train_step, step_shardings
    from rft_jax.train.step import RolloutBatch, StepSettings, TrainState

    cfg = ModelConfig(**TINY)
    mesh = make_mesh(MeshConfig(fsdp=-1, tensor=2))
    params = init_params(cfg, jax.random.key(0), std=0.2)
    opt = make_optimizer(OptimizerConfig(learning_rate=1e-2), 10)
    lora = init_lora(cfg, LoraConfig(rank=4), jax.random.key(1))
    state = TrainState(lora, opt.init(lora), jnp.int32(0))
    sh = step_shardings(mesh, opt, state, params, None, B, lora_mode=True)
    state, params = place((state, params), (sh.state, sh.frozen))
    step = jit_sharded_train_step(opt, StepSettings(cfg, GRPOLossConfig(), 1.0, 1.0, "float32", remat=False), sh)
    ids, share = prompts(), process_part(B)
    record = {"losses": [], "tokens": []}
    for i in range(2):
        r, ptoks, pmask = generate_ids(params, cfg, ids, jax.random.key(10 + i), sampling=SamplingParams(1.0),
                                       num_samples=G, max_new_tokens=C, eos_ids=(1,), pad_id=0, lora=state.trainable,
                                       mesh=mesh)
        mine = np.stack([reward(t, m) for t, m in zip(r.tokens_BxGxC[share], r.mask_BxGxC[share])])
        rewards = np.stack(gather_objects(list(mine)))  # every process's share, in process order
        batch = RolloutBatch(ptoks, pmask, r.tokens_BxGxC, r.mask_BxGxC, r.logprobs_BxGxC,
                             np.asarray(group_advantages(jnp.asarray(rewards))), ~r.stopped_BxG)
        state, metrics = step(state, params, None, place(batch.with_loss_mask(), sh.batch))
        record["losses"].append(float(metrics["actor/loss"]))
        record["tokens"].append(r.tokens_BxGxC.tolist())
    ckpt = RunCheckpoints(out_dir)
    ckpt.save_latest(2, state, {"note": "two-process run"})
    ckpt.close()
    record["trainable"] = jax.tree.map(lambda x: x.tolist(), to_host(state.trainable))
    record["processes"] = jax.process_count()
    return record


def main(argv: list[str]) -> int:
    pid, num, port, out_dir = int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    if num > 1:
        initialize_distributed(f"127.0.0.1:{port}", num, pid)
    record = two_steps(out_dir)
    if jax.process_index() == 0:
        with open(f"{out_dir}/result.json", "w") as f:
            json.dump(record, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
