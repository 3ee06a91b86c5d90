"""Decoding in its own process (``generation/decode_worker.py``): a tiny real GPT registered in a
store, decoded by a spawned child behind the batcher's interface, gives exactly the in-process
batcher's texts; admission is answered in the HTTP process and a full queue refuses without
losing a sequence; a child that dies fails its requests with one error and is restarted."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from genloop.generation.batching import Batcher, Busy
from genloop.generation.decode_worker import DecodeProcess, WorkerDied, decode_event, encode_event
from genloop.generation.service import TextModel, load
from genloop.generation.text import TextRequest
from genloop.models.modeldir import ModelDir
from genloop.models.registry import get_family
from genloop.store import Store
from genloop.tokenizers import CharTokenizer

from .test_batching import Collector, submit

CORPUS = ["the quick brown fox jumps over the lazy dog.", "To be, or not to be: that is it!"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A registered tiny gpt (sharp random head) and its proxy; the child stopped after."""
    root = tmp_path_factory.mktemp("decode")
    store = Store(f"sqlite:///{root / 'genloop.db'}")
    tok = CharTokenizer.train(CORPUS)
    family = get_family("gpt")
    torch.manual_seed(0)
    network = family.build(family.make_config("tiny", vocab_size=tok.vocab_size, block_size=24,
                                              tie_weights=False))
    with torch.no_grad():
        network.head.weight.normal_(0.0, 0.3)
        network.head.weight[tok.eos_id] = 0.0
    staged = ModelDir(root / "staged")
    staged.path.mkdir()
    staged.write_network(family, network.config, network)
    staged.write_tokenizer(tok)
    version = store.register_model("tiny", staged.path, family="gpt")
    model = load(version.ref, store)
    assert isinstance(model, TextModel)
    proxy = DecodeProcess(version.ref, store.url, model.tokenizer, 24, max_batch=2, max_queue=2)
    yield model, proxy
    proxy.close()


REQUESTS = [dict(prompt=p, max_new_tokens=n, temperature=t, seed=s, top_k=k, logprobs=lp)
            for p, n, t, s, k, lp in [("the ", 30, 1.0, 1, None, None), ("to be", 5, 0.0, 2, None, 2),
                                      ("", 17, 1.0, 3, 5, None), ("the lazy", 12, 0.7, 4, None, 1)]]


def test_the_process_decodes_the_in_process_batchers_texts(served):
    model, proxy = served
    alone = Batcher(model.family, model.network, model.tokenizer, max_batch=2, max_queue=8)
    here = [submit(alone, **r) for r in REQUESTS[:2]] + [submit(alone, **r) for r in REQUESTS[2:]]
    there = [submit(proxy, **r) for r in REQUESTS[:2]]
    for c in there:
        assert c.done.wait(120) and not c.errors  # the first waits for the child to load
    there += [submit(proxy, **r) for r in REQUESTS[2:]]
    for a, b in zip(here, there, strict=True):
        assert a.done.wait(60) and b.done.wait(60) and not a.errors and not b.errors
        out_a, out_b = a.outputs[0], b.outputs[0]
        assert (out_a.text, out_a.tokens, out_a.finish_reason, out_a.seed, out_a.content_hash) \
            == (out_b.text, out_b.tokens, out_b.finish_reason, out_b.seed, out_b.content_hash)
        # logprobs: the same tokens; values within float noise of other rows in the batch
        assert [e.token for e in out_a.logprobs or []] == [e.token for e in out_b.logprobs or []]
        assert [e.logprob for e in out_a.logprobs or []] == pytest.approx(
            [e.logprob for e in out_b.logprobs or []], abs=1e-5)
        assert "".join(b.pieces[0]) == out_b.text
    assert proxy.steps > 0 and proxy.running == proxy.waiting == 0


def test_a_full_queue_refuses_here_and_loses_no_sequence(served):
    _model, proxy = served
    admitted = [submit(proxy, 2, prompt="the ", max_new_tokens=20, seed=7, num_samples=2),
                submit(proxy, 2, prompt="to ", max_new_tokens=20, seed=8, num_samples=2)]
    with pytest.raises(Busy, match="model busy"):  # 4 = max_batch + max_queue are live
        proxy.submit(TextRequest(prompt="a", max_new_tokens=5, seed=1), Collector())
    for c in admitted:
        assert c.done.wait(60) and not c.errors and sorted(c.outputs) == [0, 1]
    later = submit(proxy, 2, prompt="a", max_new_tokens=5, seed=1, num_samples=2)  # room again
    assert later.done.wait(60) and not later.errors


def test_a_cancelled_ticket_frees_its_places_at_once(served):
    _model, proxy = served
    c = Collector()
    c.choices = 4
    ticket = proxy.submit(TextRequest(prompt="the ", max_new_tokens=200, seed=3, num_samples=4), c)
    ticket.cancel()
    again = submit(proxy, 4, prompt="the ", max_new_tokens=5, seed=3, num_samples=4)
    assert again.done.wait(60) and not again.errors


def test_a_dead_worker_fails_its_requests_and_is_restarted(served):
    _model, proxy = served
    assert proxy.ready.wait(60)
    before, pid = proxy.restarts, proxy._process.pid
    c = submit(proxy, prompt="the ", max_new_tokens=2000, seed=1)  # seconds: still decoding
    os.kill(pid, signal.SIGKILL)
    assert c.done.wait(60) and len(c.errors) == 1 and not c.outputs
    assert isinstance(c.errors[0], WorkerDied) and "exited" in str(c.errors[0])
    assert proxy.restarts == before + 1 and proxy.ready.wait(120) and proxy._process.pid != pid
    after = submit(proxy, prompt="the ", max_new_tokens=5, seed=1)
    assert after.done.wait(60) and not after.errors


def test_events_cross_the_wire_unchanged(served):
    model, _proxy = served
    c = submit(Batcher(model.family, model.network, model.tokenizer), prompt="the ",
               max_new_tokens=6, seed=5, logprobs=2)
    assert c.done.wait(60)
    out = c.outputs[0]
    from genloop.generation.batching import Finished, Piece

    for event in [Finished(0, out), Piece(1, "ab", out.logprobs or [])]:
        assert decode_event(encode_event(event)) == event
