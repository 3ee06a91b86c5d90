"""Text evaluation: every validation token scored once, exact likelihood relations, diversity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genloop.evaluation.text import (
    count_characters,
    distinct_n,
    likelihood_metrics,
    repetition_rate,
    validation_nll,
    windows,
)
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
