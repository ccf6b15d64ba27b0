"""The rollout engine: prompts in, scored episodes out, packed into the arrays a train step reads."""
