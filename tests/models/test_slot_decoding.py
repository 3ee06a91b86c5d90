"""Slot decoders (continuous batching): sequences that join and leave one decoder between steps
get exactly the tokens the family's ``sample`` gives each prompt alone (greedy)."""

from __future__ import annotations

import pytest
import torch

from genloop.models.family import TokenRequest
from genloop.models.registry import FAMILIES

VOCAB = 40
BLOCK = 16  # small, so gpt's context overflows (and is refilled) within a test

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random model with large weights: at the usual init (std 0.02) greedy decoding
    repeats one token; at std 0.5 each token depends on the context, so a wrong key, position or
    state shows in the output."""
    family = FAMILIES[name]
    torch.manual_seed(seed)
    model = family.build(family.make_config("tiny", vocab_size=VOCAB, block_size=BLOCK)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.5)
    return model


def _alone(name: str, model: torch.nn.Module, prompt: torch.Tensor, n: int) -> list[int]:
    """Greedy tokens of ``family.sample`` on this prompt alone (batch 1)."""
    req = TokenRequest(prompt_ids=prompt[None], max_new_tokens=n, temperature=0.0)
    return [int(t) for t in FAMILIES[name].sample(model, req, torch.Generator())]


def _together(decoder, prompts: list[torch.Tensor], lengths: list[int], joins: list[int]) -> list[list[int]]:
    """Greedy-decode every prompt through one decoder, as a batcher does: prompt i joins (takes a
    free slot) at step ``joins[i]`` and leaves (frees it) after ``lengths[i]`` tokens; while no
    slot is free it waits."""
    out: list[list[int]] = [[] for _ in prompts]
    logits: dict[int, torch.Tensor] = {}  # prompt -> logits of its next token
    slot_of: dict[int, int] = {}
    free = list(range(decoder.slots))
    waiting = list(range(len(prompts)))
    step = 0
    while waiting or slot_of:
        for i in [i for i in waiting if joins[i] <= step]:
            if not free:
                break
            waiting.remove(i)
            slot_of[i] = free.pop(0)
            logits[i] = decoder.prefill(slot_of[i], prompts[i])
            assert logits[i].shape == (VOCAB,) and logits[i].dtype == torch.float32
        rows = sorted(slot_of)
        for i in rows:
            out[i].append(int(logits[i].argmax()))
        for i in rows:
            if len(out[i]) == lengths[i]:
                free.append(slot_of.pop(i))
                decoder.free(free[-1])
        rows = [i for i in rows if i in slot_of]
        if rows:
            tokens = torch.tensor([out[i][-1] for i in rows])
            new = decoder.step([slot_of[i] for i in rows], tokens)
            assert new.shape == (len(rows), VOCAB) and new.dtype == torch.float32
            logits.update(zip(rows, new, strict=True))
        step += 1
    return out


def _prompts(lengths: list[int], seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g) for n in lengths]


@pytest.mark.parametrize("name", ["gpt", "lstm", "seq2seq"])
def test_joining_and_leaving_gives_each_prompt_its_alone_tokens(name):
    model = _model(name)
    # prompt lengths 1 .. BLOCK-1; up to 45 new tokens: gpt refills its context several times,
    # at different steps for different rows (a step mixes refilled and cached rows)
    prompts = _prompts([5, 1, 15, 9, 3, 12])
    lengths = [45, 20, 30, 7, 40, 25]
    joins = [0, 0, 3, 4, 10, 11]
    got = _together(FAMILIES[name].slot_decoder(model, 4), prompts, lengths, joins)
    for i, prompt in enumerate(prompts):
        assert got[i] == _alone(name, model, prompt, lengths[i]), f"prompt {i}"
    # more than one token was chosen: a constant output would pass for the wrong reasons
    assert len(set(got[0])) > 1


@pytest.mark.parametrize("name", ["gpt", "lstm", "seq2seq"])
def test_freed_restarted_and_idle_slots(name):
    model = _model(name)
    a, b = _prompts([7, 4], seed=5)
    ref_a, ref_b = _alone(name, model, a, 6), _alone(name, model, b, 6)
    decoder = FAMILIES[name].slot_decoder(model, 2)
    # slot 1 decodes ``b`` past gpt's context, is freed, then reused: its past is forgotten
    logits = decoder.prefill(1, b)
    for _ in range(BLOCK + 3):
        logits = decoder.step([1], logits.argmax()[None])[0]
    decoder.free(1)
    decoder.prefill(1, a)
    got_b = [int(decoder.prefill(1, b).argmax())]  # prefilling an occupied slot restarts it
    # slot 0 decodes ``a`` beside it but is stepped only every other step: an idle slot keeps its state
    got_a = [int(decoder.prefill(0, a).argmax())]
    for t in range(10):
        slots = [1, 0] if t % 2 else [1]
        tokens = [got_b[-1], got_a[-1]][: len(slots)]
        new = decoder.step(slots, torch.tensor(tokens)).argmax(dim=-1).tolist()
        if len(got_b) < 6:
            got_b.append(new[0])
        if t % 2:
            got_a.append(new[1])
    assert got_b == ref_b
    assert got_a == ref_a


@pytest.mark.parametrize("name", ["gpt", "lstm", "seq2seq"])
def test_misuse_is_refused(name):
    decoder = FAMILIES[name].slot_decoder(_model(name), 2)
    prompt = torch.tensor([1, 2, 3])
    for bad in (-1, 2):
        with pytest.raises(IndexError, match="out of range"):
            decoder.prefill(bad, prompt)
    with pytest.raises(ValueError, match="free"):
        decoder.step([0], torch.tensor([1]))
    decoder.prefill(0, prompt)
    decoder.prefill(1, prompt)
    with pytest.raises(ValueError, match="distinct"):
        decoder.step([0, 0], torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="one token per slot"):
        decoder.step([0, 1], torch.tensor([1]))
    with pytest.raises(IndexError, match="out of range"):
        decoder.step([0, 5], torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"\(T,\)"):
        decoder.prefill(0, torch.tensor([], dtype=torch.long))
    decoder.free(1)
    with pytest.raises(ValueError, match="free"):
        decoder.step([0, 1], torch.tensor([1, 2]))
    assert decoder.step([0], torch.tensor([1])).shape == (1, VOCAB)  # still usable
    assert decoder.step([], torch.tensor([], dtype=torch.long)).shape == (0, VOCAB)
