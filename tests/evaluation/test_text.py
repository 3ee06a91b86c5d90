"""Text evaluation: every validation token scored once, exact likelihood relations, diversity;
any held-out text scored in overlapping windows, checked by hand and on a trained model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genloop.errors import InvalidInput
from genloop.evaluation.text import (
    count_characters,
    distinct_n,
    likelihood_metrics,
    read_documents,
    repetition_rate,
    score_text,
    validation_nll,
    window_bounds,
    windows,
)
from genloop.models.registry import get_family
from genloop.tokenizers import BPETokenizer, CharTokenizer


@pytest.mark.parametrize("length", [2, 3, 8, 9, 10, 17, 64, 65, 100, 257])
@pytest.mark.parametrize("block", [1, 4, 8, 16, 64])
def test_windows_score_every_target_exactly_once(length, block):
    ids = np.arange(length) + 1000  # distinct values: a target is identified by its value
    x, y = windows(ids, block)
    assert x.shape == y.shape and x.size(1) == min(block, length - 1)
    scored = y[y != -100]
    assert len(scored) == length - 1
    assert sorted(scored.tolist()) == ids[1:].tolist()  # each target once, none skipped
    # every scored target follows its input: y[t] == x[t] + 1 in this sequence
    assert ((y == x + 1) | (y == -100)).all()


def test_windows_need_two_tokens():
    with pytest.raises(ValueError):
        windows(np.array([5]), 8)


@pytest.mark.parametrize("length, block, batch", [(50, 8, 64), (50, 8, 2), (7, 16, 1), (200, 32, 3)])
def test_uniform_model_scores_ln_vocab(length, block, batch):
    V = 37
    ids = np.random.default_rng(0).integers(0, V, length)

    def uniform(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*x.shape, V)

    total, count = validation_nll(uniform, ids, block, batch_size=batch)
    assert count == length - 1
    assert total / count == pytest.approx(math.log(V), rel=1e-6)


def test_validation_nll_matches_a_direct_sum():
    V = 5
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(0))  # a bigram "model"
    ids = np.random.default_rng(1).integers(0, V, 30)
    total, count = validation_nll(lambda x: table[x], ids, block=7, batch_size=2)
    logp = torch.log_softmax(table, -1)
    expected = -sum(logp[ids[i], ids[i + 1]].item() for i in range(len(ids) - 1))
    assert count == 29
    assert total == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("nll, tokens, chars", [(100.0, 50, 50), (100.0, 50, 200), (3.0, 1, 4)])
def test_likelihood_metrics_relations(nll, tokens, chars):
    m = likelihood_metrics(nll, tokens, chars)
    assert m["val_loss"] == pytest.approx(nll / tokens)
    assert m["bits_per_token"] == pytest.approx(m["val_loss"] / math.log(2))
    assert m["perplexity"] == pytest.approx(math.exp(m["val_loss"]))
    assert m["bits_per_char"] == pytest.approx(nll / chars / math.log(2))
    if tokens == chars:
        assert m["bits_per_char"] == pytest.approx(m["bits_per_token"])


def test_distinct_n_on_hand_made_samples():
    assert distinct_n([["a", "b", "a", "b"]], 1) == 2 / 4
    assert distinct_n([["a", "b", "a", "b"]], 2) == 2 / 3  # ab, ba, ab
    assert distinct_n([["a", "b"], ["a", "c"]], 1) == 3 / 4  # pooled across samples
    assert distinct_n([["a", "b"], ["a", "b"]], 2) == 1 / 2
    assert distinct_n([list("abcd")], 3) == 1.0
    assert distinct_n([["a"]], 2) == 0.0  # no bigrams at all
    assert distinct_n([], 1) == 0.0


def test_repetition_rate_on_hand_made_samples():
    assert repetition_rate([list("abcdef")], 2) == 0.0
    assert repetition_rate([list("aaaa")], 2) == pytest.approx(2 / 3)  # aa aa aa
    assert repetition_rate([list("abab")], 2) == pytest.approx(1 / 3)  # ab ba ab
    # averaged over samples; a sample without n-grams does not count
    assert repetition_rate([list("aaaa"), list("abcd"), list("a")], 2) == pytest.approx(1 / 3)
    # within a sample only: the same sample twice repeats nothing
    assert repetition_rate([list("abcd"), list("abcd")], 2) == 0.0
    assert repetition_rate([], 4) == 0.0


TEXTS = ["hello world, hello there.", "床前明月光，疑是地上霜。"]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train([t * 20 for t in TEXTS], vocab_size=300)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_count_characters_counts_the_scored_text(kind, bpe):
    tok = CharTokenizer.train(TEXTS) if kind == "char" else bpe
    a, b = TEXTS
    # the first token is context only; <eos> between documents counts one character
    ids = np.array([tok.eos_id, *tok.encode(a), tok.eos_id, *tok.encode(b)])
    assert count_characters(tok, ids) == len(a) + 1 + len(b)
    ids = np.array([tok.eos_id, *tok.encode(b)])
    assert count_characters(tok, ids) == len(b)
    if kind == "bpe":
        assert len(tok.encode(a)) < len(a)  # the BPE case really has multi-character tokens


# --- any held-out text ----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [2, 3, 9, 17, 64, 65, 100])
@pytest.mark.parametrize("block, stride", [(8, 4), (8, 1), (8, 3), (16, 8), (16, 15), (5, 5), (4, 2)])
def test_strided_windows_score_once_with_half_a_context(length, block, stride):
    ids = np.arange(length) + 1000
    x, y = windows(ids, block, stride)
    scored = y[y != -100]
    assert sorted(scored.tolist()) == ids[1:].tolist()  # each target once, none skipped
    assert ((y == x + 1) | (y == -100)).all()
    width = x.size(1)
    for row in range(1, len(y)):  # past the first window, a target has >= block - stride before it
        first = int((y[row] != -100).nonzero()[0])
        assert first >= width - min(stride, width)
    assert len(window_bounds(length - 1, block, stride)) == len(x)


def test_stride_none_is_the_non_overlapping_validation_windows():
    ids = np.arange(50)
    for a, b in zip(windows(ids, 8), windows(ids, 8, 8), strict=True):
        assert torch.equal(a, b)
    assert len(windows(ids, 8)[0]) == 7  # 6 full windows and the right-aligned tail


class Bigram(torch.nn.Module):
    """A "model" that predicts from the last token only: its likelihood is a sum by hand."""

    def __init__(self, vocab: int, block: int):
        super().__init__()
        self.table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(3))
        self.config = type("Config", (), {"block_size": block})()

    def forward(self, x):
        return self.table[x]


def test_score_text_by_hand():
    tok = CharTokenizer.train(["abc"])
    model = Bigram(tok.vocab_size, block=4)
    logp = torch.log_softmax(model.table, -1)
    text = "abcazbca"  # z is not in the vocabulary
    ids = [tok.eos_id, *tok.encode(text)]  # a document starts after <eos>
    assert ids.count(tok.unk_id) == 1
    nll = -sum(logp[ids[i], ids[i + 1]].item() for i in range(len(ids) - 1))
    s = score_text(get_family("gpt"), model, tok, text)
    assert (s.tokens, s.characters, s.context, s.stride) == (8, 8, 4, 2)
    assert s.nll == pytest.approx(nll, rel=1e-5)
    assert s.nats_per_token == s.nats_per_char == pytest.approx(nll / 8, rel=1e-5)
    assert s.bits_per_char == pytest.approx(nll / 8 / math.log(2), rel=1e-5)
    assert (s.unknown_characters, s.unknown, s.unknown_share) == (1, "z", 1 / 8)
    m = s.metrics()
    assert m["nats_per_char"] == s.nats_per_char and m["unknown_share"] == 1 / 8

    # documents: each after <eos>; the <eos> between them is scored and counts one character
    docs = ["ab", "", "ca"]  # an empty row holds nothing to score
    s = score_text(get_family("gpt"), model, tok, docs)
    ids = [tok.eos_id, *tok.encode("ab"), tok.eos_id, *tok.encode("ca")]
    nll = -sum(logp[ids[i], ids[i + 1]].item() for i in range(len(ids) - 1))
    assert (s.tokens, s.characters, s.unknown_characters) == (5, 5, 0)
    assert s.nll == pytest.approx(nll, rel=1e-5)


def test_score_text_with_bpe_counts_characters_not_tokens(bpe):
    model = Bigram(bpe.vocab_size, block=8)
    text = TEXTS[0] * 3
    s = score_text(get_family("gpt"), model, bpe, text)
    assert s.characters == len(text) and s.tokens == len(bpe.encode(text)) < len(text)
    assert s.unknown_characters == 0  # byte-level BPE knows every character
    assert s.nats_per_char == pytest.approx(s.nll / len(text))


@pytest.fixture(scope="module")
def gpt():
    tok = CharTokenizer.train(["the cat sat on the mat. a dog ran."])
    family = get_family("gpt")
    torch.manual_seed(0)  # test code: a fixed random network
    model = family.build(family.make_config("tiny", vocab_size=tok.vocab_size, block_size=8)).eval()
    return family, model, tok


def test_stride_one_is_a_sliding_window_by_brute_force(gpt):
    """stride 1: every token past the first context is predicted from exactly C tokens before it."""
    family, model, tok = gpt
    text = "the cat sat on the mat."
    ids = torch.tensor([tok.eos_id, *tok.encode(text)])
    C = model.config.block_size
    with torch.no_grad():
        nll = 0.0
        for t in range(1, len(ids)):
            context = ids[max(0, t - C) : t]
            logits = model(context[None])
            logits = logits[0] if isinstance(logits, tuple) else logits
            nll -= torch.log_softmax(logits[0, -1].float(), -1)[ids[t]].item()
    s = score_text(family, model, tok, text, stride=1)
    assert s.tokens == len(text) and s.nll == pytest.approx(nll, rel=1e-4)
    # the default (half a context) and no overlap score the same tokens, from less context
    for stride in (None, C):
        other = score_text(family, model, tok, text, stride=stride)
        assert other.tokens == s.tokens and other.stride == (C // 2 if stride is None else C)


def test_score_text_refuses_what_it_cannot_score(gpt):
    family, model, tok = gpt
    for empty in ("", "  \n ", [], ["", ""]):
        with pytest.raises(InvalidInput, match="empty"):
            score_text(family, model, tok, empty)
    with pytest.raises(InvalidInput, match="stride"):
        score_text(family, model, tok, "the cat", stride=9)


def test_read_documents(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\r\ntwo\n")
    assert read_documents(tmp_path / "a.txt") == ["one\ntwo\n"]
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n\n{"body": "y", "text": ["a", "b"]}\n')
    assert read_documents(tmp_path / "b.jsonl") == ["x", "ab"]
    (tmp_path / "c.jsonl").write_text('{"body": "x"}\n{"text": "y"}\n')
    cases = {
        "missing.txt": "does not exist",
        "c.jsonl": "line 2 has no field 'body'",
        "empty.txt": "no text",
        "bin.txt": "NUL byte",
        "d.csv": ".txt or .jsonl",
        "bad.jsonl": "line 1 is not valid JSON",
        "num.jsonl": "line 1 field 'body' is int",
    }
    (tmp_path / "empty.txt").write_text(" \n")
    (tmp_path / "bin.txt").write_bytes(b"ab\x00c")
    (tmp_path / "d.csv").write_text("x")
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    (tmp_path / "num.jsonl").write_text('{"body": 3}\n')
    for name, message in cases.items():
        with pytest.raises(InvalidInput, match=message):
            read_documents(tmp_path / name, field="body")


def test_a_trained_model_knows_its_kind_of_text(workspace, tiny_recipe, one_thread):
    """Through the Python API: a tiny model trained on simple English scores unseen sentences
    of that English far better than the same characters shuffled, and counts what it never saw."""
    import random

    import genloop

    model = genloop.load(genloop.train(tiny_recipe(name="heldout", steps=60)).model_ref)
    held_out = "The river waits for the garden. A stranger paints the quiet sea. " * 4
    shuffled = list(held_out)
    random.Random(0).shuffle(shuffled)
    args = (model.family, model.network, model.tokenizer)
    good, bad = score_text(*args, held_out), score_text(*args, "".join(shuffled))
    assert good.characters == bad.characters == len(held_out) and good.unknown_characters == 0
    assert good.bits_per_char < bad.bits_per_char - 0.5
    odd = score_text(*args, held_out + "ßΩΩ")
    assert (odd.unknown_characters, odd.unknown) == (3, "Ωß")  # most frequent first, then in order
