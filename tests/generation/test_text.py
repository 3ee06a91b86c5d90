"""Text generation through the real tokenizer and a tiny real GPT (random weights)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from genloop.errors import InvalidInput
from genloop.generation.text import TextRequest, generate_texts, stream_text
from genloop.models.registry import get_family
from genloop.tokenizers import CharTokenizer

GPT = get_family("gpt")
CORPUS = ["the quick brown fox jumps over the lazy dog.", "To be, or not to be: that is it!"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only fight


@pytest.fixture(scope="module")
def tok() -> CharTokenizer:
    return CharTokenizer.train(CORPUS)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    config = GPT.make_config("tiny", vocab_size=tok.vocab_size, block_size=32, tie_weights=False)
    m = GPT.build(config)
    with torch.no_grad():  # a sharper head than init's std 0.02: samples vary with the context
        m.head.weight.normal_(0.0, 0.3)
        m.head.weight[tok.eos_id] = 0.0
    return m.eval()


def gen(model, tok, **kw):
    return generate_texts(GPT, model, tok, TextRequest(**kw))


def test_same_seed_same_texts_other_seed_other_texts(model, tok):
    req = dict(prompt=["the ", "to"], max_new_tokens=20, temperature=1.0, num_samples=2)
    a = gen(model, tok, seed=1, **req)
    b = gen(model, tok, seed=1, **req)
    c = gen(model, tok, seed=2, **req)
    assert [o.text for o in a] == [o.text for o in b]
    assert [o.content_hash for o in a] == [o.content_hash for o in b]
    assert [o.seed for o in a] == [1, 2, 3, 4]  # choice i: choice_seed(seed, i)
    assert [o.text for o in a] != [o.text for o in c]
    # the samples of one prompt differ from each other too
    assert a[0].text != a[1].text


def test_every_choice_is_the_request_of_one_with_its_own_seed(model, tok):
    """Choice i of a many-prompt, many-sample request equals that prompt alone with seed + i,
    so a record (prompt, choice seed, n = 1) replays it, whatever it was batched with."""
    prompts = ["the ", "to", "the lazy dog"]
    top = 2**63 - 6  # the last choice's seed is 2^63 - 1: the highest a request may reach
    out = gen(model, tok, prompt=prompts, max_new_tokens=24, temperature=1.0, top_k=20,
              repetition_penalty=1.3, seed=top, num_samples=2)
    assert [o.seed for o in out] == [top + i for i in range(6)]
    with pytest.raises(ValidationError, match="would pass 2\\^63 - 1"):  # never wrapped round
        TextRequest(prompt=prompts, num_samples=2, seed=top + 1)
    for o in out:
        alone = gen(model, tok, prompt=o.prompt, max_new_tokens=24, temperature=1.0, top_k=20,
                    repetition_penalty=1.3, seed=o.seed)
        assert alone[0].text == o.text and alone[0].content_hash == o.content_hash


def test_batch_of_prompts_of_different_lengths_keeps_prompt_order(model, tok):
    prompts = ["the lazy dog", "a", "", "to be or", "b"]
    out = gen(model, tok, prompt=prompts, max_new_tokens=8, temperature=1.0, seed=3, num_samples=3)
    assert [o.prompt for o in out] == [p for p in prompts for _ in range(3)]
    for o in out:
        assert o.finish_reason in {"stop", "length"}
        assert o.tokens <= 8
        if o.finish_reason == "length":
            assert o.tokens == 8
    # each prompt's output is the same whether it is decoded alone or in a mixed batch, greedily
    greedy = gen(model, tok, prompt=prompts, max_new_tokens=8, temperature=0.0)
    for p, o in zip(prompts, greedy, strict=True):
        alone = gen(model, tok, prompt=p, max_new_tokens=8, temperature=0.0)
        assert [o.text] == [x.text for x in alone]


def test_stop_string_cuts_the_text(model, tok):
    base = dict(prompt="the ", max_new_tokens=30, temperature=1.0, seed=11)
    (full,) = gen(model, tok, **base)
    assert full.finish_reason == "length" and full.tokens == 30  # <unk> decodes to ""
    assert len(full.text) > 20
    for start, width in [(10, 1), (10, 2), (5, 3), (0, 2)]:
        stop = full.text[start : start + width]
        (cut,) = gen(model, tok, stop=[stop], **base)
        assert cut.finish_reason == "stop"
        assert cut.text == full.text[: full.text.find(stop)]
        assert stop not in cut.text
    (miss,) = gen(model, tok, stop=["#never#"], **base)
    assert miss.finish_reason == "length" and miss.text == full.text


def test_several_stop_strings_never_leave_one_in_the_text(model, tok):
    base = dict(prompt="to", max_new_tokens=30, temperature=1.0, seed=5)
    (full,) = gen(model, tok, **base)
    stops = [full.text[12:14], full.text[11:12], full.text[8:11]]  # later ones listed first
    (cut,) = gen(model, tok, stop=stops, **base)
    assert cut.finish_reason == "stop"
    assert full.text.startswith(cut.text)
    assert not any(s in cut.text for s in stops)


def test_prompt_longer_than_the_context_is_refused(model, tok):
    with pytest.raises(InvalidInput, match="context is 32 tokens"):
        gen(model, tok, prompt="a" * 32, max_new_tokens=2)
    with pytest.raises(InvalidInput, match="context"):  # one bad prompt in a batch is enough
        gen(model, tok, prompt=["ok", "b" * 40], max_new_tokens=2)
    (ok,) = gen(model, tok, prompt="a" * 31, max_new_tokens=40, temperature=0.0)
    assert ok.tokens == 40  # generating past the context is fine: the window slides


@pytest.mark.parametrize("stop", [[], ["e"], ["th"], ["he q", "o"]])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stream_pieces_join_to_the_generated_text(model, tok, stop, seed):
    req = TextRequest(prompt="the", max_new_tokens=25, temperature=1.0, seed=seed, stop=stop)
    pieces = list(stream_text(GPT, model, tok, req))
    (out,) = generate_texts(GPT, model, tok, req)
    assert all(pieces)
    assert "".join(pieces) == out.text


@pytest.mark.parametrize("width", [1, 2, 3])
def test_stream_stops_where_generate_stops(model, tok, width):
    base = dict(prompt="the", max_new_tokens=30, temperature=1.0, seed=4)
    (full,) = gen(model, tok, **base)
    req = TextRequest(stop=[full.text[10 : 10 + width]], **base)
    (out,) = generate_texts(GPT, model, tok, req)
    assert out.finish_reason == "stop"
    assert "".join(stream_text(GPT, model, tok, req)) == out.text


def test_stream_takes_one_prompt_and_one_sample(model, tok):
    with pytest.raises(InvalidInput):
        list(stream_text(GPT, model, tok, TextRequest(prompt=["a", "b"], max_new_tokens=2)))
    with pytest.raises(InvalidInput):
        list(stream_text(GPT, model, tok, TextRequest(prompt="a", num_samples=2)))


def test_unknown_characters_map_to_unk(model, tok):
    assert tok.encode("床前明月") == [tok.unk_id] * 4
    (out,) = gen(model, tok, prompt="床前明月光", max_new_tokens=10, temperature=1.0, seed=0)
    assert out.prompt == "床前明月光"
    assert out.tokens == 10 or out.finish_reason == "stop"
    assert set(out.text) <= set(tok.chars)


def test_text_request_rejects_unknown_fields_and_out_of_range_values():
    with pytest.raises(ValidationError, match="max_tokens"):
        TextRequest(prompt="a", max_tokens=5)
    bad = [
        dict(max_new_tokens=0), dict(max_new_tokens=100_001), dict(temperature=-0.1),
        dict(temperature=5.1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.01),
        dict(repetition_penalty=0.9), dict(stop=[""]), dict(stop=["x"] * 17),
        dict(seed=-1), dict(num_samples=0), dict(num_samples=65),
    ]
    for kw in bad:
        with pytest.raises(ValidationError):
            TextRequest(prompt="a", **kw)
    ok = TextRequest(prompt="a", temperature=0.0, top_k=1, top_p=1.0, seed=0, stop=["x"])
    assert ok.prompts == ["a"]


def test_images_follow_the_same_seed_bound():
    from genloop.generation.image import ImageGenRequest

    assert ImageGenRequest(num_samples=3, seed=2**63 - 3).seed == 2**63 - 3
    with pytest.raises(ValidationError, match="would pass 2\\^63 - 1"):
        ImageGenRequest(num_samples=3, seed=2**63 - 2)
