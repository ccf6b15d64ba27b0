"""A run's saved state: orbax checkpoints of the train state (`store`) and the exported model (`export`).

Shared by GRPO and SFT runs, evaluation of a checkpoint and serving, so it sits
below all of them.
"""
