"""Properties of the pure sampling helpers in ``genloop.models.sampling``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genloop.models.sampling import (
    adjust_logits,
    apply_frequency_presence,
    apply_logit_bias,
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
    next_token_probs,
    sample_next,
    token_logprobs,
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


@st.composite
def generated_ids(draw, logits):
    """A (B, G) history of sampled ids for ``logits``'s rows, with repeats."""
    V = logits.size(-1)
    G = draw(st.integers(1, 10))
    return torch.tensor([draw(st.lists(st.integers(0, V - 1), min_size=G, max_size=G))
                         for _ in range(logits.size(0))])


@SETTINGS
@given(logits=distinct_logits(), frequency=st.floats(-2.0, 2.0), presence=st.floats(-2.0, 2.0),
       data=st.data())
def test_frequency_and_presence_penalties_follow_openais_formula(logits, frequency, presence, data):
    """logit[j] - c[j] * frequency - (c[j] > 0) * presence, c[j] = times j was sampled so far."""
    generated = data.draw(generated_ids(logits))
    before = logits.clone()
    out = apply_frequency_presence(logits, generated, frequency, presence)
    assert torch.equal(logits, before), "the input is not modified in place"
    for row in range(logits.size(0)):
        ids = generated[row].tolist()
        for v in range(logits.size(-1)):
            c = ids.count(v)
            expected = logits[row, v].item() - c * frequency - (c > 0) * presence
            assert out[row, v].item() == pytest.approx(expected, rel=1e-6, abs=1e-5)


def test_penalties_example():
    logits = torch.tensor([[1.0, 1.0, 1.0]])
    out = apply_frequency_presence(logits, torch.tensor([[0, 0, 1]]), 0.5, 0.25)
    assert out.tolist() == [[1.0 - 2 * 0.5 - 0.25, 1.0 - 0.5 - 0.25, 1.0]]


@SETTINGS
@given(logits=distinct_logits(), data=st.data())
def test_logit_bias_adds_by_token_id(logits, data):
    V = logits.size(-1)
    bias = data.draw(st.dictionaries(st.integers(0, V - 1), st.floats(-100.0, 100.0), max_size=V))
    out = apply_logit_bias(logits, bias)
    for v in range(V):
        assert out[:, v].tolist() == pytest.approx((logits[:, v] + bias.get(v, 0.0)).tolist(),
                                                   abs=1e-4)


def test_logit_bias_refuses_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="0..2"):
        apply_logit_bias(torch.zeros(1, 3), {3: 1.0})


@SETTINGS
@given(logits=distinct_logits(min_v=2), seed=st.integers(0, 2**32), temperature=st.floats(0.0, 2.0),
       data=st.data())
def test_bias_minus_100_bans_and_plus_100_forces_a_token(logits, seed, temperature, data):
    V = logits.size(-1)
    token = data.draw(st.integers(0, V - 1))
    g = torch.Generator().manual_seed(seed)
    forced = sample_next(logits, g, temperature=temperature, logit_bias={token: 100.0})
    assert (forced == token).all()
    banned = sample_next(logits, g, temperature=temperature, logit_bias={token: -100.0})
    assert (banned != token).all()


@SETTINGS
@given(logits=distinct_logits(min_v=2), seed=st.integers(0, 2**32), data=st.data())
def test_sample_next_draws_from_the_adjusted_logits(logits, seed, data):
    """Penalties and bias change the logits, nothing else: the draw is the plain draw of the
    adjusted logits with the same generator (so the seeded path stays one), greedy its argmax."""
    generated = data.draw(generated_ids(logits))
    kw = dict(frequency_penalty=0.7, presence_penalty=-0.3, generated=generated,
              logit_bias={0: 3.0}, repetition_penalty=1.2, history=generated)
    adjusted = adjust_logits(logits, **kw)
    a = sample_next(logits, torch.Generator().manual_seed(seed), temperature=0.9, top_k=3, **kw)
    b = sample_next(adjusted, torch.Generator().manual_seed(seed), temperature=0.9, top_k=3)
    assert torch.equal(a, b)
    assert torch.equal(sample_next(logits, None, temperature=0.0, **kw), adjusted.argmax(-1))
    # with one generator per row, each row is the draw of that row alone (the batcher's way)
    rows = sample_next(logits, [torch.Generator().manual_seed(seed + i) for i in range(len(a))],
                       temperature=0.9, top_k=3, **kw)
    probs = next_token_probs(adjusted, temperature=0.9, top_k=3)
    alone = [int(torch.multinomial(probs[i : i + 1], 1, generator=torch.Generator().manual_seed(seed + i)))
             for i in range(len(a))]
    assert rows.tolist() == alone

def test_no_penalty_and_no_bias_leave_the_logits_as_they_were():
    logits = torch.randn(2, 7, generator=torch.Generator().manual_seed(0))
    out = adjust_logits(logits, frequency_penalty=0.0, presence_penalty=0.0,
                        generated=torch.tensor([[1, 2], [3, 3]]), logit_bias={})
    assert torch.equal(out, logits)


@SETTINGS
@given(logits=distinct_logits(), top=st.integers(0, 20), data=st.data())
def test_token_logprobs_are_the_log_softmax_with_the_top_sorted(logits, top, data):
    chosen = torch.tensor([data.draw(st.integers(0, logits.size(-1) - 1))
                           for _ in range(logits.size(0))])
    picked, ids, values = token_logprobs(logits, chosen, top)
    reference = torch.log_softmax(logits.double(), dim=-1)
    assert picked.tolist() == pytest.approx(reference.gather(1, chosen[:, None])[:, 0].tolist(),
                                            abs=1e-5)
    k = min(top, logits.size(-1))
    assert ids.shape == values.shape == (logits.size(0), k)
    for row in range(logits.size(0)):
        assert values[row].tolist() == sorted(values[row].tolist(), reverse=True)
        assert set(ids[row].tolist()) == set(reference[row].argsort(descending=True)[:k].tolist())
        assert values[row].tolist() == pytest.approx(reference[row, ids[row]].tolist(), abs=1e-5)
