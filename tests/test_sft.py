"""Supervised warm start: demonstrations, packing, and the NLL going down on a tiny model."""

from __future__ import annotations

import jax
import numpy as np

from rft_jax.model import ModelConfig, init_params
from rft_jax.model.lora import LoraConfig, init_lora
from rft_jax.sft.demos import pack, with_answer_line
from rft_jax.sft.run import train_sft
from rft_jax.sft.step import SFTSettings


def test_answer_line_uses_the_models_own_last_number():
    assert with_answer_line("12 + 30 = 42.\n") == "12 + 30 = 42.\nANSWER: 42"
    assert with_answer_line("So she has 1,250 coins") == "So she has 1,250 coins\nANSWER: 1250"
    assert with_answer_line("about 2.5 apples") is None  # not an integer: no demonstration
    assert with_answer_line("I cannot tell.") is None


class _Tok:
    eos_ids, pad_id, end_of_turn_id = (1,), 0, 1

    def encode(self, text):
        return [3 + (ord(ch) % 60) for ch in text]


def test_pack_pads_prompts_left_and_targets_right():
    prompt, pmask, target, tmask = pack(_Tok(), [([5, 6, 7], "ab"), ([8], "abcd")], max_target_tokens=8)
    assert target.shape == (2, 8) and prompt.shape[0] == 2
    assert pmask[0, -3:].all() and not pmask[1, :-1].any()
    assert tmask.sum(1).tolist() == [3, 5]  # text + end-of-turn token
    assert target[0, 2] == 1 and target[1, 4] == 1


def test_sft_lowers_the_loss_on_a_tiny_model():
    cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8)
    params = init_params(cfg, jax.random.key(0), std=0.2)
    lora_cfg = LoraConfig(rank=4)
    pairs = [([10 + i, 20 + i, 30], "hello world") for i in range(8)]
    _, losses = train_sft(init_lora(cfg, lora_cfg, jax.random.key(1)), params, _Tok(), pairs,
                          SFTSettings(cfg, lora_cfg.scale), steps=12, batch_size=4, learning_rate=3e-2, seed=0,
                          max_target_tokens=16)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
