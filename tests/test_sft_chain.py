"""SFT then RFT on a tiny random model: SFT memorises answers, RL starts from its checkpoint,
and `rft-jax eval --checkpoint` scores a run exactly like its exported model.

A byte-level tokenizer with a ChatML template (built here in a second) stands in for
SmolLM2's, whose GGUF takes ~10 s to read; the vocabulary stays at 264.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from rft_jax.checkpoint.export import export_model
from rft_jax.checkpoint.store import CheckpointError, find_checkpoint, restore_policy
from rft_jax.cli.eval import main as eval_main
from rft_jax.data import Example
from rft_jax.evaluation.evaluate import evaluate
from rft_jax.model import ModelConfig, init_params, load_model
from rft_jax.model.lora import LoraConfig
from rft_jax.model.tokenizer import tokenizer_from_hf_folder
from rft_jax.rewards import build_reward
from rft_jax.rewards.spec import RewardSpec
from rft_jax.sft.config import SFTConfig
from rft_jax.sft.run import run_sft
from rft_jax.train.config import DataConfig, ModelSpec, SamplingConfig
from rft_jax.train.loop import run
from tests.test_train_run import tiny_config

ANSWERS = ["red", "blue", "green", "gold"]
EXACT = RewardSpec("string_check", {"operation": "eq"})
SFT_STEPS = 40
SFT_LOSS_BOUND = 0.05  # memorised: the mean target-token NLL of the last 5 steps (it starts near ln 264 = 5.6)


def tiny_hf_model(folder: Path, hidden: int = 32) -> str:
    """A random 2-layer model with a byte-level ChatML tokenizer, saved as a Hugging Face folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<|pad|>", eos_token="<|im_end|>",
                            additional_special_tokens=["<|im_start|>"], chat_template=template
                            ).save_pretrained(str(folder))
    cfg = ModelConfig(vocab_size=264, hidden_size=hidden, intermediate_size=2 * hidden, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=hidden // 4, max_position_embeddings=256)
    export_model(folder, cfg, init_params(cfg, jax.random.key(0), std=0.5), tokenizer_from_hf_folder(folder))
    return str(folder)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return tiny_hf_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    """Four questions whose answers can only be memorised; the answer is both SFT target and RFT reference."""
    path = tmp_path_factory.mktemp("data") / "colours.jsonl"
    path.write_text("".join(json.dumps({"id": f"c{i}", "reference_answer": a, "messages": [
        {"role": "user", "content": f"Colour {i}?"}, {"role": "assistant", "content": a}]}) + "\n"
        for i, a in enumerate(ANSWERS)))
    return str(path)


@pytest.fixture(scope="module")
def sft_run(tiny_model, data, tmp_path_factory) -> tuple[str, list[float]]:
    out = tmp_path_factory.mktemp("sft")
    cfg = SFTConfig(data=data, model=ModelSpec(name=tiny_model, compute_dtype="float32"), mode="lora",
                    lora=LoraConfig(rank=8), steps=SFT_STEPS, batch_size=4, learning_rate=1e-2, max_target_tokens=8,
                    out_dir=str(out))
    return str(out), run_sft(cfg)


def greedy_answers(params, model_cfg, tokenizer, examples) -> list[str]:
    result = evaluate(params, model_cfg, tokenizer, examples, {"exact": build_reward(EXACT)}, key=jax.random.key(0),
                      max_new_tokens=8)
    return [s["completion"] for s in result.samples]


def _examples() -> list[Example]:
    return [Example(id=f"c{i}", messages=[{"role": "user", "content": f"Colour {i}?"}], reference_answer=a,
                    tools=None, metadata={}) for i, a in enumerate(ANSWERS)]


def test_sft_memorises_the_answers_and_its_checkpoint_is_the_export(tiny_model, sft_run):
    sft_dir, losses = sft_run
    assert np.mean(losses[-5:]) < SFT_LOSS_BOUND, losses
    policy = restore_policy(sft_dir)
    assert policy.model == tiny_model and policy.checkpoint == find_checkpoint(Path(sft_dir) / "checkpoints"
                                                                              / "latest" / str(SFT_STEPS))
    tokenizer = tokenizer_from_hf_folder(Path(tiny_model))
    assert greedy_answers(policy.params, policy.model_cfg, tokenizer, _examples()) == ANSWERS
    base_cfg, base = load_model(tiny_model, dtype=np.float32)
    assert greedy_answers(base, base_cfg, tokenizer, _examples()) != ANSWERS  # SFT, not the base, knows them
    _, exported = load_model(str(Path(sft_dir) / "export" / "model"), dtype=np.float32)
    jax.tree.map(np.testing.assert_array_equal, policy.params, exported)  # LoRA merged exactly as export does


@pytest.mark.slow  # a whole run (20-95 s): `make test-slow`, keeping the default suite under 15 min
def test_rft_run_starts_from_the_sft_policy(tiny_model, data, sft_run, tmp_path):
    sft_dir, _ = sft_run
    cfg = tiny_config(tiny_model, str(tmp_path / "rft"), init_from=sft_dir, reward=EXACT, max_steps=1,
                      data=DataConfig(train_file=data, val_file=data, max_prompt_tokens=64),
                      sampling=SamplingConfig(samples_per_prompt=2, max_new_tokens=8), lora=LoraConfig(rank=4))
    run(cfg)
    step0 = json.loads((tmp_path / "rft" / "eval_base_val.json").read_text())
    assert [s["completion"] for s in step0["samples"]] == ANSWERS  # greedy at step 0 = the SFT policy's
    assert step0["metrics"]["reward/mean"] == 1.0
    recorded = json.loads((tmp_path / "rft" / "config.json").read_text())["init_from"]
    assert recorded == str(Path(sft_dir).absolute() / "checkpoints" / "latest" / str(SFT_STEPS))
    # The chain restores: RFT adapter on (base + SFT adapter) equals the RFT run's export.
    chained = restore_policy(tmp_path / "rft")
    _, exported = load_model(str(tmp_path / "rft" / "export" / "model"), dtype=np.float32)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), chained.params, exported)


def test_rft_init_from_a_missing_run_is_refused(tiny_model, tmp_path):
    cfg = tiny_config(tiny_model, str(tmp_path / "rft"), init_from=str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match="does not exist; pass a run directory"):
        run(cfg)


def test_eval_checkpoint_scores_like_the_exported_model(sft_run, data, tmp_path, capsys):
    sft_dir, _ = sft_run
    common = ["--data", data, "--reward", json.dumps(EXACT.to_json()), "--max-new-tokens", "8"]
    assert eval_main(["--checkpoint", sft_dir, *common, "--out", str(tmp_path / "ckpt.json")]) == 0
    assert f"(latest checkpoint, step {SFT_STEPS})" in capsys.readouterr().out
    assert eval_main(["--model", str(Path(sft_dir) / "export" / "model"), *common,
                      "--out", str(tmp_path / "export.json")]) == 0
    ckpt, export = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ckpt", "export"))
    assert ckpt["metrics"] == export["metrics"] and ckpt["metrics"]["reward0/mean"] == 1.0  # long specs: reward<i>
    assert ckpt["samples"] == export["samples"]
    assert ckpt["checkpoint"].endswith(f"checkpoints/latest/{SFT_STEPS}")


def test_eval_checkpoint_errors_say_what_to_pass(tiny_model, sft_run, data, tmp_path, capsys):
    sft_dir, _ = sft_run
    assert eval_main(["--checkpoint", str(Path(sft_dir) / "export" / "model"), "--data", data]) == 2
    assert "looks like a model folder: pass it as the model" in capsys.readouterr().err
    assert eval_main(["--checkpoint", str(tmp_path), "--data", data]) == 2
    assert "not a training run or checkpoint" in capsys.readouterr().err
    wider = tiny_hf_model(tmp_path / "wider", hidden=64)
    with pytest.raises(CheckpointError, match="does not fit .* Use the model it was trained from"):
        restore_policy(sft_dir, model=wider)
