"""Building a tokenizer prints nothing about PyTorch: rft_jax uses transformers only for tokenizers and
chat templates, which need no torch, yet transformers announces the missing torch on import."""

import subprocess
import sys

# A byte-level BPE with one merge, built from GGUF-style metadata: the tokenizer path every `rft-jax` run takes.
_CODE = """
import sys
sys.modules["torch"] = None  # as in a process without torch (the tests' venv has it)
from rft_jax.model.tokenizer import _byte_alphabet, tokenizer_from_gguf
tokens = sorted(set(_byte_alphabet().values())) + ["hi"]
tok = tokenizer_from_gguf({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
                           "tokenizer.ggml.merges": ["h i"], "tokenizer.ggml.eos_token_id": 0})
assert tok.decode(tok.encode("hi")) == "hi" and len(tok.encode("hi")) == 1
print("built")
"""


def test_tokenizer_without_torch_prints_no_pytorch_notice():
    out = subprocess.run([sys.executable, "-c", _CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "built"
    text = out.stdout + out.stderr
    assert "PyTorch was not found" not in text and "None of PyTorch" not in text, text
