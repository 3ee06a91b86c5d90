"""Imported checkpoints as real ones are: a chat model with two end tokens (generation_config.json's
``eos_token_id`` list; its template ends each turn with ``<|eot|>``) stops at either on every face
and shows neither; an embedding padded past the tokenizer never yields an id without text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genloop.generation import service
from genloop.generation.chat import ChatMessage
from genloop.hub.imports import import_model
from genloop.models.modeldir import ModelDir

from ..generation.test_batching import submit  # noqa: TID252
from .conftest import TEXT, transformers

pytestmark = pytest.mark.usefixtures("one_thread", "workspace")

SPECIALS = ["<|endoftext|>", "<s>", "<|user|>", "<|assistant|>", "<|eot|>"]
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eot|>"
            "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
MESSAGES = [{"role": "user", "content": "Hello, Romeo"}]


def _tokenizer(directory: Path) -> tuple[object, int]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TEXT], trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                bos_token="<s>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(directory)
    return fast, tok.get_vocab_size()


def _llama(vocab: int, embedding: int, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=embedding, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64,
                                      eos_token_id=0, bos_token_id=1, tie_word_embeddings=False)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.3)
    return model


def chat_model(directory: Path) -> tuple[Path, list[int], list[int]]:
    """A Llama-layout chat model ending turns with ``<|eot|>`` (generation_config: eos ids
    [0, eot]) whose greedy reply to MESSAGES ends with ``<|eot|>`` after a few tokens: the head's
    row of ``<|eot|>`` is a hair above that of the reply's k-th token. Returns the directory, the
    prompt ids and transformers' greedy reply (stopped at either end token)."""
    directory.mkdir(parents=True)
    fast, vocab = _tokenizer(directory)
    eot = fast.convert_tokens_to_ids("<|eot|>")
    model = _llama(vocab, vocab)
    prompt = fast.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([fast.encode(prompt, add_special_tokens=False)])
    free = model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[0, ids.size(1):].tolist()
    k = next(k for k in range(2, 10) if free[k] not in (*free[:k], 0, eot))
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[eot] = head[free[k]] * 1.001
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=[0, eot], bos_token_id=1, do_sample=True, temperature=0.6, top_p=0.9)
    model.save_pretrained(directory)
    reply = model.generate(ids, max_new_tokens=10, do_sample=False,
                           pad_token_id=0)[0, ids.size(1):].tolist()
    assert reply[-1] == eot and len(reply) == k + 1, "the fixture must end the reply at <|eot|>"
    return directory, ids[0].tolist(), reply


def test_a_chat_model_stops_at_each_of_its_end_tokens_on_every_face(tmp_path: Path):
    directory, prompt_ids, reply = chat_model(tmp_path / "chat")
    version = import_model(directory, "chat")
    model = service.load("chat")
    tok = model.tokenizer
    eot = tok.encode("<|eot|>")[0]
    from genloop.tokenizers import end_ids

    assert end_ids(tok) == {0, eot} and tok.eos_id == 0
    card = ModelDir(Path(version.path)).card()
    assert "`<|eot|>`" in card and "temperature 0.6" in card
    assert ModelDir(Path(version.path)).lineage()["sampling_defaults"]["top_p"] == 0.9
    # the chat prompt as /v1/chat/completions renders it: turns end with the special token
    prompt = model.chat_template.render([ChatMessage(**m) for m in MESSAGES])
    assert tok.encode(prompt) == prompt_ids
    expected = tok.decode(reply[:-1])
    params = dict(temperature=0.0, max_new_tokens=10, seed=0)
    # CLI / Python: stream_tokens
    out = model.generate(prompt, **params)[0]
    assert (out.text, out.tokens, out.finish_reason) == (expected, len(reply) - 1, "stop")
    assert "".join(model.stream(prompt, **params)) == expected
    # HTTP: the continuous batcher, with a plain-eos request beside it
    c = submit(model.batcher(), prompt=prompt, **params)
    assert c.done.wait(60) and not c.errors
    served = c.outputs[0]
    assert (served.text, served.tokens, served.finish_reason) == (expected, len(reply) - 1, "stop")
    # a request whose first token is forced to <|eot|> ends at once, with no text
    forced = model.generate(prompt, **params, logit_bias={eot: 100.0})[0]
    assert (forced.text, forced.tokens, forced.finish_reason) == ("", 0, "stop")


@pytest.mark.parametrize("layout", ["gpt2", "llama"])
def test_ids_past_the_tokenizer_are_never_drawn(tmp_path: Path, layout: str):
    """Real checkpoints pad the embedding past the tokenizer (to a multiple of 64, …): those
    rows are made the most likely here, and still no face draws one (decoding would fail)."""
    directory = tmp_path / layout
    directory.mkdir()
    _fast, vocab = _tokenizer(directory)
    embedding = vocab + 40
    if layout == "gpt2":
        torch.manual_seed(0)
        lm = transformers.AutoModelForCausalLM.from_config(transformers.GPT2Config(
            vocab_size=embedding, n_positions=64, n_embd=32, n_layer=2, n_head=2,
            eos_token_id=0, bos_token_id=1)).eval()
    else:
        lm = _llama(vocab, embedding)
    with torch.no_grad():
        lm.get_output_embeddings().weight[vocab:] *= 20.0  # the padded rows win every argmax
    lm.save_pretrained(directory)
    import_model(directory, "padded")
    model = service.load("padded")
    assert model.tokenizer.vocab_size == vocab and model.network.config.vocab_size == embedding
    ids = torch.tensor([model.tokenizer.encode("ROMEO: But soft")])
    with torch.no_grad():
        assert int(model.network(ids)[0, -1].argmax()) >= vocab  # unmasked, a padded id wins
    for temperature in (0.0, 1.0):
        params = dict(temperature=temperature, max_new_tokens=12, seed=3)
        out = model.generate("ROMEO: But soft", **params)[0]
        assert out.finish_reason in ("stop", "length")
        assert "".join(model.stream("ROMEO: But soft", **params)) == out.text
        c = submit(model.batcher(), prompt="ROMEO: But soft", **params)
        assert c.done.wait(60) and not c.errors and c.outputs[0].text == out.text
    # the path without a KV cache masks them too
    no_cache = model.generate("ROMEO: But soft", temperature=1.0, max_new_tokens=12, seed=3,
                              use_cache=False)[0]
    assert no_cache.finish_reason in ("stop", "length")
