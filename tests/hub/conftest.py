"""Tiny Hugging Face causal LMs built from a config, random weights, saved with ``save_pretrained``
(GPT-2 and Llama layouts), with a byte-level BPE tokenizer and a jinja chat template."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

transformers = pytest.importorskip("transformers")

TEXT = ("ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is "
        "the sun. JULIET: O Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse "
        "thy name. ") * 8
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
                 "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
SPECIALS = ["<|endoftext|>", "<s>", "<|user|>", "<|assistant|>", "<|system|>"]


def tokenizer(directory: Path, chat: bool) -> int:
    """A byte-level BPE tokenizer trained on TEXT, saved into ``directory``; its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<s>",
                                   unk_token="<|endoftext|>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return tok.get_vocab_size()


def save_model(directory: Path, layout: str, *, chat: bool = True, seed: int = 0) -> Path:
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    vocab = tokenizer(directory, chat)
    if layout == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2,
                                         n_head=2, eos_token_id=0, bos_token_id=1)
    else:
        config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, max_position_embeddings=64,
                                          eos_token_id=0, bos_token_id=1)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # large weights: greedy tokens then depend on the context
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.3)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(params=["gpt2", "llama"])
def hf_dir(request, tmp_path) -> Path:
    return save_model(tmp_path / f"tiny-{request.param}", request.param)
