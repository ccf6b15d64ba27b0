"""`rft-jax train --preset NAME`: a paper's settings as the starting point, every field still overridable."""

from __future__ import annotations

from rft_jax.cli import train as train_cli
from rft_jax.grpo.presets import PRESETS, apply_preset
from rft_jax.train.config import TrainConfig


def test_preset_sets_the_papers_values_and_flags_still_override_them():
    for name in PRESETS:
        advantage, loss = apply_preset(name, TrainConfig().sampling.max_new_tokens)
        cfg = train_cli.with_preset(TrainConfig(), name)
        assert (cfg.advantage, cfg.loss) == (advantage, loss)
        assert cfg.dynamic_sampling.enabled == (name == "dapo")
    gspo = train_cli.cli(train_cli.with_preset(TrainConfig(), "gspo"), ["--loss.epsilon-high", "0.001"])
    assert gspo.loss.policy_loss == "gspo" and gspo.loss.epsilon_high == 0.001 and gspo.loss.epsilon_low == 3e-4


def test_unknown_or_missing_preset_exits_2_before_training(capsys):
    assert train_cli.main(["--preset", "nope"]) == 2
    assert "preset 'nope' not in" in capsys.readouterr().err
    assert train_cli.main(["--preset"]) == 2
    assert "--preset needs a value" in capsys.readouterr().err


def test_dapo_overlong_buffer_follows_the_response_budget_given_on_the_command_line():
    """The preset's buffer (20% of the budget, as DAPO's 4096 of 20480) is sized to --sampling.max-new-tokens, even
    though the preset is applied before the other flags are parsed."""
    cfg = train_cli.build_config(TrainConfig(), ["--preset", "dapo", "--sampling.max-new-tokens", "400"])
    assert cfg.sampling.max_new_tokens == 400
    assert cfg.advantage.overlong_buffer_len == apply_preset("dapo", 400)[0].overlong_buffer_len == 80
    explicit = train_cli.build_config(TrainConfig(), ["--preset", "dapo", "--sampling.max-new-tokens", "400",
                                            "--advantage.overlong-buffer-len", "10"])
    assert explicit.advantage.overlong_buffer_len == 10
