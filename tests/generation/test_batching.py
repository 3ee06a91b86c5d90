"""Continuous batching through a tiny real GPT and LSTM (random weights): sequences that join and
leave the batch give exactly what each request gives alone, cancellation frees the slot before
the next step, a full queue refuses without queueing anything."""

from __future__ import annotations

import threading

import pytest
import torch

from genloop.generation.batching import Batcher, Busy, Failed, Finished, Piece
from genloop.generation.text import TextRequest, generate_texts
from genloop.models.registry import get_family
from genloop.tokenizers import CharTokenizer

CORPUS = ["the quick brown fox jumps over the lazy dog.", "To be, or not to be: that is it!"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok() -> CharTokenizer:
    return CharTokenizer.train(CORPUS)


def tiny(family_name: str, tok: CharTokenizer):
    family = get_family(family_name)
    torch.manual_seed(0)
    config = family.make_config("tiny", vocab_size=tok.vocab_size, block_size=24, tie_weights=False) \
        if family_name == "gpt" else family.make_config("tiny", vocab_size=tok.vocab_size,
                                                        tie_weights=False)
    model = family.build(config)
    with torch.no_grad():  # a sharp head: texts depend on the context
        model.head.weight.normal_(0.0, 0.3)
        model.head.weight[tok.eos_id] = 0.0
    return family, model.eval()


class Collector:
    """Events of one ticket, and a flag when every choice has finished."""

    def __init__(self) -> None:
        self.pieces: dict[int, list[str]] = {}
        self.outputs: dict[int, object] = {}
        self.errors: list[Exception] = []
        self.done = threading.Event()
        self.choices = 1

    def __call__(self, event) -> None:
        if isinstance(event, Piece):
            self.pieces.setdefault(event.index, []).append(event.text)
        elif isinstance(event, Finished):
            self.outputs[event.index] = event.output
            if len(self.outputs) == self.choices:
                self.done.set()
        elif isinstance(event, Failed):
            self.errors.append(event.error)
            self.done.set()


def submit(batcher: Batcher, choices: int = 1, **kw) -> Collector:
    c = Collector()
    c.choices = choices
    batcher.submit(TextRequest(**kw), c)
    return c


@pytest.mark.parametrize("family_name", ["gpt", "lstm"])
def test_batched_requests_equal_each_request_alone(tok, family_name):
    family, model = tiny(family_name, tok)
    batcher = Batcher(family, model, tok, max_batch=3, max_queue=8)
    requests = [dict(prompt=p, max_new_tokens=n, temperature=t, seed=s, top_k=k)
                for p, n, t, s, k in [("the ", 30, 1.0, 1, None), ("to be", 5, 0.0, 2, None),
                                      ("", 17, 1.0, 3, 5), ("the lazy dog", 40, 0.7, 4, None),
                                      ("a", 9, 1.0, 5, None)]]
    collectors = [submit(batcher, **r) for r in requests]  # 5 requests, 3 slots: some wait
    for c in collectors:
        assert c.done.wait(60) and not c.errors
    for r, c in zip(requests, collectors, strict=True):
        alone = generate_texts(family, model, tok, TextRequest(**r))[0]
        assert c.outputs[0].text == alone.text, r
        assert "".join(c.pieces.get(0, [])) == alone.text  # the stream adds up to the text
        assert c.outputs[0].finish_reason == alone.finish_reason
    assert batcher.steps < sum(r["max_new_tokens"] for r in requests)  # steps were shared


def test_n_choices_are_seeded_seed_plus_i(tok):
    family, model = tiny("gpt", tok)
    batcher = Batcher(family, model, tok)
    c = submit(batcher, choices=3, prompt="the ", max_new_tokens=12, temperature=1.0, seed=10,
               num_samples=3)
    assert c.done.wait(60)
    for i in range(3):
        alone = generate_texts(family, model, tok, TextRequest(prompt="the ", max_new_tokens=12,
                                                                temperature=1.0, seed=10 + i))[0]
        assert c.outputs[i].text == alone.text and c.outputs[i].seed == 10 + i


def test_stop_strings_end_a_choice_and_are_cut(tok):
    family, model = tiny("gpt", tok)
    batcher = Batcher(family, model, tok)
    free = submit(batcher, prompt="the ", max_new_tokens=40, temperature=0.0, seed=0)
    assert free.done.wait(60)
    text = free.outputs[0].text
    stop = text[5:7]
    c = submit(batcher, prompt="the ", max_new_tokens=40, temperature=0.0, seed=0, stop=[stop])
    assert c.done.wait(60)
    assert c.outputs[0].text == text[: text.find(stop)] and c.outputs[0].finish_reason == "stop"


def test_cancel_frees_the_slot_before_the_next_step(tok):
    family, model = tiny("gpt", tok)
    batcher = Batcher(family, model, tok, max_batch=1, max_queue=0)
    gate = threading.Event()
    steps_at_cancel: list[int] = []

    def on_event(event):
        if isinstance(event, Piece) and not gate.is_set():
            gate.set()
            ticket.cancel()  # from the decoding thread itself, like a disconnect noticed mid-step
            steps_at_cancel.append(batcher.steps)

    ticket = batcher.submit(TextRequest(prompt="the ", max_new_tokens=10_000, temperature=1.0,
                                        seed=1), on_event)
    assert gate.wait(30)
    c = submit(batcher, prompt="to", max_new_tokens=3, temperature=0.0, seed=1)  # takes the slot
    assert c.done.wait(30)
    assert batcher.steps - steps_at_cancel[0] <= 3  # the cancelled one took no further steps


def test_a_full_queue_refuses_and_queues_nothing(tok):
    family, model = tiny("gpt", tok)
    batcher = Batcher(family, model, tok, max_batch=1, max_queue=1)
    hold = threading.Event()
    blocker = batcher.submit(TextRequest(prompt="the ", max_new_tokens=10_000, seed=1),
                             lambda e: hold.set())
    assert hold.wait(30)
    waiting = submit(batcher, prompt="a", max_new_tokens=2, seed=1)
    with pytest.raises(Busy) as e:
        batcher.submit(TextRequest(prompt="b", max_new_tokens=2, seed=1), lambda e: None)
    assert e.value.retry_after >= 1 and e.value.http_status == 503
    assert batcher.waiting == 1
    blocker.cancel()
    assert waiting.done.wait(30)


def test_a_prompt_longer_than_the_context_is_refused_at_submit(tok):
    family, model = tiny("gpt", tok)
    batcher = Batcher(family, model, tok)
    with pytest.raises(Exception, match="context is 24 tokens"):
        batcher.submit(TextRequest(prompt="x" * 30, seed=1), lambda e: None)
    assert batcher.waiting == 0
