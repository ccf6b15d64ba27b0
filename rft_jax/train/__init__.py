"""GRPO training: config, rollouts, the jitted update, the run loop, checkpoints and export."""
