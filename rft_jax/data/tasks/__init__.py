"""Built-in task generators: seeded, with difficulty levels, writing RFT JSONL."""
