"""The token that ends an assistant turn, read from the chat template: SFT targets end with it, sampling stops on it.

Llama 3 lists `<|end_of_text|>` (128001) before `<|eot_id|>` (128009): the
smallest eos id, which SFT used to append, is not what ends a chat reply.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rft_jax.data.example import Example
from rft_jax.model import DEFAULT_MODEL, ModelConfig, init_params
from rft_jax.model.tokenizer import load_tokenizer, tokenizer_from_hf_folder
from rft_jax.sampling import SamplingParams, decode_rollout, generate_ids
from rft_jax.sft.demos import conversation_pairs, pack, pairs_from_examples
from tests.hf_tiny import LLAMA3_SPECIALS, LLAMA3_TEMPLATE, make_char_tokenizer, make_llama3_tokenizer

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
         "else message['role'] %}<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n"
         "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
LLAMA2 = ("{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
          "message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}"
          "{% endfor %}")
TEMPLATES = {  # name: (specials, bos, eos, chat template, eos ids in generation_config.json, the end of turn)
    "llama3": (LLAMA3_SPECIALS, "<|begin_of_text|>", "<|end_of_text|>", LLAMA3_TEMPLATE,
               ("<|end_of_text|>", "<|eot_id|>"), "<|eot_id|>"),
    "chatml": (("<|endoftext|>", "<|im_start|>", "<|im_end|>"), None, "<|endoftext|>", CHATML, (), "<|im_end|>"),
    "gemma": (("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"), "<bos>", "<eos>", GEMMA,
              ("<eos>", "<end_of_turn>"), "<end_of_turn>"),
    "llama2": (("<s>", "</s>"), "<s>", "</s>", LLAMA2, (), "</s>"),
    "no template": (("<|endoftext|>",), None, "<|endoftext|>", None, (), "<|endoftext|>"),
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_end_of_turn_is_read_from_the_template_and_is_a_stop_token(tmp_path, name):
    specials, bos, eos, template, generation_eos, end = TEMPLATES[name]
    tok = tokenizer_from_hf_folder(make_char_tokenizer(tmp_path, specials, bos=bos, eos=eos, chat_template=template,
                                                       generation_eos=generation_eos))
    assert tok.decode([tok.end_of_turn_id], skip_special_tokens=False) == end
    assert tok.end_of_turn_id in tok.eos_ids


def test_smollm2_keeps_im_end():
    tok = load_tokenizer(DEFAULT_MODEL)
    assert tok.eos_ids == (tok.end_of_turn_id,) == (tok.pad_id,)
    assert tok.decode([tok.end_of_turn_id], skip_special_tokens=False) == "<|im_end|>"


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    return tokenizer_from_hf_folder(make_llama3_tokenizer(tmp_path_factory.mktemp("llama3")))


QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


def test_llama3_sft_targets_end_with_eot_id(llama3):
    eot = llama3.hf.convert_tokens_to_ids("<|eot_id|>")
    assert llama3.eos_ids[0] == llama3.hf.convert_tokens_to_ids("<|end_of_text|>")  # what SFT appended before
    pairs = pairs_from_examples(llama3, [Example("a", QUESTION + [{"role": "assistant", "content": "4"}])])
    _, _, target, tmask = pack(llama3, pairs, max_target_tokens=8)
    assert target[0, tmask[0]].tolist() == llama3.encode("4") + [eot]
    # a conversation's turn is cut at the template's end of turn, which `pack` then appends once
    [(_, turn)] = conversation_pairs(llama3, Example("b", QUESTION + [{"role": "assistant", "content": "Four."}]))
    assert turn == "Four."


def _chain_model(vocab: int, chain: dict[int, int], end: int):
    """A model whose greedy next token depends only on the current one: `chain[t]`, else `end`.

    The layers are zero, so the last hidden state is the current token's
    embedding, a one-hot row (D >= V); after the final norm the logits are that
    row of the unembedding, a transition table."""
    cfg = ModelConfig(vocab_size=vocab, hidden_size=128, intermediate_size=32, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=16, tie_embeddings=False)
    params = init_params(cfg, jax.random.key(0))
    layers = {k: jax.tree.map(jnp.ones_like if k.endswith("norm") else jnp.zeros_like, v)
              for k, v in params["layers"].items()}
    table = np.zeros((cfg.hidden_size, vocab), np.float32)
    table[:vocab, end] = 1.0
    for t, nxt in chain.items():
        table[t] = 0.0
        table[t, nxt] = 1.0
    embed = np.eye(vocab, cfg.hidden_size, dtype=np.float32)
    return cfg, {**params, "layers": layers, "embed": jnp.asarray(embed), "unembed": jnp.asarray(table)}


def test_llama3_sampling_stops_on_eot_id_even_when_no_eos_list_names_it(tmp_path):
    """A Llama 3 tokenizer with only `<|end_of_text|>` as eos (no generation_config.json): its stop set still
    holds `<|eot_id|>`, so a reply ends there instead of running to the token budget."""
    tok = tokenizer_from_hf_folder(make_char_tokenizer(tmp_path, LLAMA3_SPECIALS, bos="<|begin_of_text|>",
                                                       eos="<|end_of_text|>", chat_template=LLAMA3_TEMPLATE))
    eot = tok.hf.convert_tokens_to_ids("<|eot_id|>")
    assert eot in tok.eos_ids
    prompt = tok.apply_chat_template(QUESTION)
    o, k = tok.encode("OK")
    cfg, params = _chain_model(len(tok.hf), {prompt[-1]: o, o: k}, end=eot)
    rollout, _, _ = generate_ids(params, cfg, [prompt], jax.random.key(0), sampling=SamplingParams(temperature=0.0),
                                 num_samples=1, max_new_tokens=8, eos_ids=tok.eos_ids, pad_id=tok.pad_id)
    [[completion]] = decode_rollout(tok, rollout)
    assert (completion.text, completion.finish_reason) == ("OK", "stop")
    assert completion.token_ids == [o, k, eot]
