"""Tokenizer and chat template, from a Hugging Face folder or from GGUF metadata.

Encoding runs in the Rust `tokenizers` library; the chat template is rendered
by transformers' own Jinja machinery (the model's template, unmodified), so
ids match transformers exactly. For a GGUF file the BPE is rebuilt from the
stored tokens and merges.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Pre-tokenizer split patterns named by GGUF's `tokenizer.ggml.pre` (the GPT-2
# pattern of ByteLevel is the default, e.g. for "smollm" and "gpt2").
_SPLITS = {
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}
_SPLITS["llama3"] = _SPLITS["llama-bpe"]
_SPLITS["deepseek-r1-qwen"] = _SPLITS["qwen2"]


class Tokenizer:
    """What rft_jax needs of a tokenizer: ids, text, chat prompts and stop ids.

    `end_of_turn_id` closes an assistant reply in the chat template (`<|eot_id|>`
    for Llama 3, `<|im_end|>` for ChatML, `<end_of_turn>` for Gemma): SFT targets
    end with it, and it is always one of `eos_ids`, the sampler's stop set. It is
    read from the template because the eos list cannot say which: Llama 3's
    sorted eos ids start with `<|end_of_text|>`, which no chat reply ends with.
    """

    def __init__(self, hf_tokenizer, eos_ids: Sequence[int]):
        self.hf = hf_tokenizer
        listed = sorted(set(int(i) for i in eos_ids))
        self.end_of_turn_id = end_of_turn_id(hf_tokenizer, listed)
        self.eos_ids = tuple(sorted(set(listed) | {self.end_of_turn_id}))
        pad = hf_tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else listed[0]

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def render_chat(self, messages: list[dict], tools: list | None = None, add_generation_prompt: bool = True,
                    **template_kwargs: Any) -> str:
        return self.hf.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                           tokenize=False, **template_kwargs)

    def apply_chat_template(self, messages: list[dict], tools: list | None = None,
                            add_generation_prompt: bool = True, **template_kwargs: Any) -> list[int]:
        text = self.render_chat(messages, tools, add_generation_prompt, **template_kwargs)
        return self.hf.encode(text, add_special_tokens=False)


_REPLY_MARKER = "rft-jax-reply-marker"


def end_of_turn_id(hf_tokenizer, eos_ids: Sequence[int]) -> int:
    """The special token the chat template writes right after an assistant's reply.

    A one-exchange conversation is rendered with a marker as the reply; the
    special token that follows it (whitespace skipped, as Llama 2 writes
    ` </s>`) ends the turn. Without a template, or when none follows, the
    tokenizer's own eos token stands in (else the smallest listed eos id): a
    base model's text simply ends there.
    """
    fallback = hf_tokenizer.eos_token_id if hf_tokenizer.eos_token_id is not None else min(eos_ids)
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _REPLY_MARKER}]
    try:
        text = hf_tokenizer.apply_chat_template(conversation, add_generation_prompt=False, tokenize=False)
    except Exception:  # a template is arbitrary Jinja (or absent): whatever it raises, the fallback stands
        return int(fallback)
    at = text.find(_REPLY_MARKER) if isinstance(text, str) else -1
    if at < 0:
        return int(fallback)
    after = text[at + len(_REPLY_MARKER):].lstrip()
    specials = {t.content: i for i, t in hf_tokenizer.added_tokens_decoder.items() if t.special}
    found = [s for s in specials if s and after.startswith(s)]
    return int(specials[max(found, key=len)]) if found else int(fallback)


def _transformers():
    """transformers, imported without its "PyTorch was not found" notice.

    Only its tokenizers and chat templates are used here, which need no torch,
    so the notice printed on every run without torch says nothing useful. It is
    an advisory warning, silenced for the import alone: the variable is restored.
    """
    if "transformers" not in sys.modules:
        saved = os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
        os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
        try:
            import transformers  # noqa: F401, PLC0415
        finally:
            if saved is None:
                del os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"]
            else:
                os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = saved
    return sys.modules["transformers"]


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def tokenizer_from_gguf(meta: dict[str, Any]) -> Tokenizer:
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers  # noqa: PLC0415
    from tokenizers import Tokenizer as RustTokenizer  # noqa: PLC0415

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"GGUF tokenizer type {kind!r} is not supported (rft_jax reads byte-level BPE, 'gpt2', "
                         "and SentencePiece, 'llama', by `tokenizer_from_sentencepiece_gguf`)")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    alphabet = _byte_alphabet()
    spelled = set(alphabet.values())
    vocab = {}
    for i, tok in enumerate(tokens):
        key = tok if set(tok) <= spelled else "".join(alphabet[b] for b in tok.encode("utf-8"))
        vocab.setdefault(key, i)
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    rust = RustTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    split = _SPLITS.get(meta.get("tokenizer.ggml.pre", ""))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split is None)
    rust.pre_tokenizer = (
        byte_level if split is None
        else pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level])
    )
    rust.decoder = decoders.ByteLevel()
    control = [t for t, ty in zip(tokens, types) if ty == 3 and set(t) <= spelled]
    user = [t for t, ty in zip(tokens, types) if ty == 4]
    rust.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    if user:
        rust.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])

    def token(key):
        idx = meta.get(f"tokenizer.ggml.{key}_token_id")
        return None if idx is None else tokens[int(idx)]

    hf = _transformers().PreTrainedTokenizerFast(
        tokenizer_object=rust, bos_token=token("bos"), eos_token=token("eos"), unk_token=token("unknown"),
        pad_token=token("padding") or token("eos"), chat_template=meta.get("tokenizer.chat_template"),
    )
    eos = [int(meta["tokenizer.ggml.eos_token_id"])]
    if meta.get("tokenizer.ggml.eot_token_id") is not None:
        eos.append(int(meta["tokenizer.ggml.eot_token_id"]))
    return Tokenizer(hf, eos)


def tokenizer_from_sentencepiece_gguf(meta: dict[str, Any]) -> Tokenizer:
    """A SentencePiece vocabulary in a GGUF (`tokenizer.ggml.model` "llama": Gemma, Llama 2), built by the
    builders transformers' own GGUF reader uses, fed our metadata (its reader needs torch; these do not).

    The file stores tokens and scores but no merges, and Gemma's scores do not give its merge order;
    the builders recover the merges per architecture (about 25 s for Gemma's 262k tokens on a CPU), so
    ids match transformers loading the same file.
    """
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (  # noqa: PLC0415
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    fields = {name: meta[f"tokenizer.{key}"] for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
              if f"tokenizer.{key}" in meta}
    backend, _ = convert_gguf_tokenizer(meta["general.architecture"], fields)
    tokens = fields["tokens"]

    def token(key):
        idx = meta.get(f"tokenizer.ggml.{key}_token_id")
        return None if idx is None else tokens[int(idx)]

    hf = _transformers().PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=token("bos"), eos_token=token("eos"), unk_token=token("unknown"),
        pad_token=token("padding") or token("eos"), chat_template=meta.get("tokenizer.chat_template"),
    )
    eos = [int(meta["tokenizer.ggml.eos_token_id"])]
    if meta.get("tokenizer.ggml.eot_token_id") is not None:
        eos.append(int(meta["tokenizer.ggml.eot_token_id"]))
    return Tokenizer(hf, eos)


def tokenizer_from_hf_folder(folder: Path) -> Tokenizer:
    import json  # noqa: PLC0415

    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{folder}: no tokenizer.json or tokenizer_config.json")
    hf = _transformers().AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    eos = [hf.eos_token_id] if hf.eos_token_id is not None else []
    gen_cfg = folder / "generation_config.json"
    if gen_cfg.is_file():
        extra = json.loads(gen_cfg.read_text()).get("eos_token_id")
        eos += extra if isinstance(extra, list) else ([extra] if extra is not None else [])
    if not eos:
        raise ValueError(f"{folder}: the tokenizer names no eos token; set eos_token in tokenizer_config.json")
    return Tokenizer(hf, eos)


@functools.lru_cache(maxsize=8)
def load_tokenizer(model: str) -> Tokenizer:
    """The tokenizer of a model named by registry key, HF folder or .gguf path."""
    from rft_jax.model.registry import resolve_model_path  # noqa: PLC0415
    from rft_jax.model.weights_gguf import read_gguf_metadata  # noqa: PLC0415

    path = resolve_model_path(model)
    if path.suffix == ".gguf":
        meta = read_gguf_metadata(path)
        if meta.get("tokenizer.ggml.model") == "llama":
            return tokenizer_from_sentencepiece_gguf(meta)
        return tokenizer_from_gguf(meta)
    return tokenizer_from_hf_folder(path)
