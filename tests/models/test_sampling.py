"""Properties of the pure sampling helpers in ``genloop.models.sampling``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genloop.models.sampling import (
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
    sample_next,
)

SETTINGS = settings(max_examples=50, deadline=None)


@st.composite
def distinct_logits(draw, min_v: int = 1, max_v: int = 12):
    """A (B, V) tensor whose rows hold distinct values (ties would make top-k keep more)."""
    B = draw(st.integers(1, 3))
    V = draw(st.integers(min_v, max_v))
    rows = []
    for _ in range(B):
        ints = draw(st.lists(st.integers(-400, 400), min_size=V, max_size=V, unique=True))
        rows.append([i / 40 for i in ints])  # distinct, well separated in float32
    return torch.tensor(rows, dtype=torch.float32)


@SETTINGS
@given(logits=distinct_logits(), k=st.integers(1, 16))
def test_top_k_keeps_exactly_the_k_largest(logits, k):
    out = filter_top_k(logits, k)
    V = logits.size(-1)
    kept = torch.isfinite(out)
    assert (kept.sum(-1) == min(k, V)).all()
    # the kept ones are the largest, unchanged; the rest are -inf
    top = torch.topk(logits, min(k, V), dim=-1).indices
    assert torch.equal(kept, torch.zeros_like(kept).scatter(-1, top, True))
    assert torch.equal(out[kept], logits[kept])
    assert (out[~kept] == float("-inf")).all()


def test_top_k_keeps_ties_at_the_kth_value():
    out = filter_top_k(torch.tensor([[3.0, 1.0, 1.0, 0.0]]), 2)
    assert torch.isfinite(out).sum() == 3


@SETTINGS
@given(logits=distinct_logits(), p=st.floats(0.01, 0.99))
def test_top_p_keeps_the_minimal_set_reaching_p(logits, p):
    out = filter_top_p(logits, p)
    probs = torch.softmax(logits.double(), dim=-1)
    for row in range(logits.size(0)):
        kept = torch.isfinite(out[row])
        assert kept[logits[row].argmax()], "the top token is always kept"
        assert torch.equal(out[row][kept], logits[row][kept])
        mass = probs[row][kept].sum().item()
        assert mass >= p - 1e-5
        # minimal: the kept set is a prefix of the sorted order, and dropping its least likely
        # member would fall short of p
        n = int(kept.sum())
        order = torch.argsort(logits[row], descending=True)
        assert kept[order[:n]].all()
        if n > 1:
            smallest = probs[row][order[n - 1]].item()
            assert mass - smallest < p + 1e-5


def test_top_p_example():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_top_p(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.9)).tolist() == [[True, True, True, False]]


@SETTINGS
@given(
    logits=distinct_logits(min_v=2),
    penalty=st.floats(1.0, 5.0),
    data=st.data(),
)
def test_repetition_penalty_lowers_only_seen_tokens(logits, penalty, data):
    V = logits.size(-1)
    hist_len = data.draw(st.integers(1, 8))
    history = torch.tensor(
        [data.draw(st.lists(st.integers(0, V - 1), min_size=hist_len, max_size=hist_len))
         for _ in range(logits.size(0))]
    )
    before = logits.clone()
    out = apply_repetition_penalty(logits, history, penalty)
    assert torch.equal(logits, before), "the input is not modified in place"
    assert out.shape == logits.shape
    for row in range(logits.size(0)):
        seen = set(history[row].tolist())
        for v in range(V):
            x, y = logits[row, v].item(), out[row, v].item()
            if v not in seen:
                assert y == x
            else:  # CTRL: divide positive, multiply negative, once however often it was seen
                expected = x / penalty if x > 0 else x * penalty
                assert y == pytest.approx(expected, rel=1e-6, abs=1e-7)
                assert y <= x


def test_repetition_penalty_example():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 0]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]
    assert logits.tolist() == [[2.0, -2.0, 1.0]]


@SETTINGS
@given(logits=distinct_logits(), seed=st.integers(0, 2**32), k=st.none() | st.integers(1, 5))
def test_temperature_zero_is_argmax(logits, seed, k):
    g = torch.Generator().manual_seed(seed)
    out = sample_next(logits, g, temperature=0.0, top_k=k, top_p=0.5)
    assert torch.equal(out, logits.argmax(-1))


@SETTINGS
@given(logits=distinct_logits(), seed=st.integers(0, 2**32), k=st.integers(1, 5))
def test_samples_stay_within_top_k_and_repeat_with_the_seed(logits, seed, k):
    a = sample_next(logits, torch.Generator().manual_seed(seed), temperature=1.3, top_k=k)
    b = sample_next(logits, torch.Generator().manual_seed(seed), temperature=1.3, top_k=k)
    assert torch.equal(a, b)
    assert a.shape == (logits.size(0),)
    top = torch.topk(logits, min(k, logits.size(-1)), dim=-1).indices
    assert (top == a[:, None]).any(-1).all()


def test_top_k_one_sampling_is_greedy():
    logits = torch.tensor([[0.1, 2.0, 1.9], [5.0, -1.0, 4.9]])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert sample_next(logits, g, temperature=2.0, top_k=1).tolist() == [1, 0]
