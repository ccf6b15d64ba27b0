"""RFT datasets: the JSONL chat format, its validation, splitting, conversion and task generators."""

from rft_jax.data.example import Example, prompt_messages
from rft_jax.data.problems import DatasetError, Problem
from rft_jax.data.validate import load_dataset, validate_file, validate_lines, write_jsonl

__all__ = ["Example", "DatasetError", "Problem", "load_dataset", "prompt_messages", "validate_file",
           "validate_lines", "write_jsonl"]
