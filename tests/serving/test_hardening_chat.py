"""Issue 10, defects 3, 4 and 7: a long chat neither freezes the server nor costs more than linear
work, a chat request is bounded as received and stored once however many choices it asks, and
the queue gauges and the 503 message count live sequences only (not cancelled ones, and not
forgetting those being prefilled)."""

from __future__ import annotations

import contextlib
import random
import threading
import time

import httpx
import pytest
from sqlalchemy import Text, cast, create_engine, func, select

from genloop.generation.batching import Batcher, Busy
from genloop.generation.chat import ChatMessage, ChatTemplate
from genloop.generation.text import TextRequest
from genloop.tokenizers import BPETokenizer, CharTokenizer

from ..conftest import wait_until  # noqa: TID252
from ..generation.test_batching import CORPUS, Collector, tiny  # noqa: TID252
from .conftest import start_server

WORDS = "the cat walks to a green field and looks at the quiet sea".split()


def _text(rng: random.Random, chars: int) -> str:
    out = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(rng.choice(WORDS))
    return " ".join(out)[:chars]


def _messages(count: int, chars: int, seed: int = 0, last: str = "Hello") -> list[ChatMessage]:
    rng = random.Random(seed)
    msgs = [ChatMessage(role="system", content="Be brief.")]
    msgs += [ChatMessage(role="user" if i % 2 == 0 else "assistant",
                         content=_text(rng, rng.randint(1, chars))) for i in range(count)]
    return [*msgs, ChatMessage(role="user", content=last)]


def _quadratic_fit(template: ChatTemplate, messages: list[ChatMessage], fits) -> str:
    """The fitting as it was: re-render and re-encode after every dropped turn."""
    kept = list(messages)
    prompt = template.render(kept)
    while not fits(prompt):
        turns = [i for i, m in enumerate(kept[:-1]) if m.role != "system"]
        if not turns:
            break
        del kept[turns[0]]
        prompt = template.render(kept)
    return prompt


class Counting:
    """A tokenizer's length that counts its calls and the characters it encoded."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.calls, self.chars = tokenizer, 0, 0

    def __call__(self, text: str) -> int:
        self.calls += 1
        self.chars += len(text)
        return len(self.tokenizer.encode(text))


# --- defect 3: fitting is linear ------------------------------------------------------------------


def test_fitting_a_long_transcript_encodes_each_turn_once():
    tok = CharTokenizer.train([" ".join(WORDS) + ":\nUSERASISTNBbf."])
    template = ChatTemplate()
    messages = _messages(300, 4000)
    transcript = len(template.render(messages))
    count = Counting(tok)
    prompt = template.render_within(messages, count, 63)
    assert len(tok.encode(prompt)) <= 63 and prompt.endswith("USER:\nHello\n\nASSISTANT:\n")
    assert prompt.startswith("Be brief.\n\n")  # the system message is never dropped
    # linear: one encode per message (and the reply), then the short kept prompt once or twice
    assert count.calls <= len(messages) + 3, count.calls
    assert count.chars <= transcript + 3 * 200, (count.chars, transcript)
    quadratic = Counting(tok)
    assert prompt == _quadratic_fit(template, messages, lambda p: quadratic(p) <= 63)
    assert quadratic.chars > 100 * transcript  # what the old way encoded, for the record


@pytest.mark.parametrize("seed", range(6))
def test_fitting_keeps_what_dropping_one_turn_at_a_time_kept(seed):
    """The same kept turns as the old loop with an exact count (characters), and a prompt within
    the budget with a tokenizer that merges across turn boundaries (BPE)."""
    char = CharTokenizer.train(CORPUS + [" ".join(WORDS) + ":\nUSERASITN."])
    bpe = BPETokenizer.train([" ".join(WORDS) * 20, "USER:\nASSISTANT:\n\n"] * 20, vocab_size=300)
    template = ChatTemplate()
    rng = random.Random(seed)
    messages = _messages(rng.randint(1, 40), 80, seed=seed, last=_text(rng, 10))
    def exact(p: str) -> int:
        return len(char.encode(p))

    def merged(p: str) -> int:
        return len(bpe.encode(p))

    for budget in (10, 40, 100, 400, 10_000):
        assert template.render_within(messages, exact, budget) == \
            _quadratic_fit(template, messages, lambda p, b=budget: exact(p) <= b)
        prompt = template.render_within(messages, merged, budget)
        alone = template.render([messages[0], messages[-1]])
        assert merged(prompt) <= budget or prompt == alone
    assert template.render_within(messages, exact, None) == template.render(messages)


# --- defect 7: live counts in the batcher -----------------------------------------------------------


def test_busy_and_gauges_count_live_sequences_only():
    tok = CharTokenizer.train(CORPUS)
    family, model = tiny("gpt", tok)
    batcher = Batcher(family, model, tok, max_batch=2, max_queue=2)
    seen: list[tuple[int, int]] = []
    batcher.on_change = lambda r, w: seen.append((r, w))
    long = dict(prompt="the ", max_new_tokens=100_000, temperature=1.0)
    tickets = [batcher.submit(TextRequest(**long, seed=i), lambda e: None) for i in range(4)]
    wait_until(lambda: seen[-1] == (2, 2), 30, lambda: seen[-5:])
    tickets[0].cancel()  # one running
    tickets[3].cancel()  # one waiting
    with pytest.raises(Busy) as e:  # 2 live, 3 more asked, room for 2
        batcher.submit(TextRequest(**long, seed=9, num_samples=3), lambda e: None)
    running, waiting = (int(w) for w in str(e.value).split()[2:7:4])
    assert running + waiting == 2, str(e.value)
    assert "(limit 2 + 2)" in str(e.value)
    # the waiting one took the freed slot; gauges said so at once
    wait_until(lambda: seen[-1] == (2, 0), 5, lambda: seen[-5:])
    for t in tickets:
        t.cancel()
    wait_until(lambda: seen[-1] == (0, 0), 5, lambda: seen[-5:])


def test_sequences_being_prefilled_hold_their_places(monkeypatch):
    """The queue's sequences are taken out of it to be prefilled one by one: while they are,
    they count as running, so no request gets past the limit meanwhile."""
    tok = CharTokenizer.train(CORPUS)
    family, model = tiny("gpt", tok)
    batcher = Batcher(family, model, tok, max_batch=4, max_queue=0)
    decoder = batcher._decoder_()
    real = decoder.prefill
    prefilling = threading.Event()

    def slow(slot, ids):
        prefilling.set()
        time.sleep(0.3)
        return real(slot, ids)

    monkeypatch.setattr(decoder, "prefill", slow)
    c = Collector()
    c.choices = 4
    batcher.submit(TextRequest(prompt="the ", max_new_tokens=3, seed=1, num_samples=4), c)
    assert prefilling.wait(10)
    assert batcher.running == 4 and batcher.waiting == 0
    with pytest.raises(Busy, match="4 sequences running and 0 waiting"):
        batcher.submit(TextRequest(prompt="a", max_new_tokens=2, seed=1), lambda e: None)
    assert c.done.wait(30)


# --- through a real server -----------------------------------------------------------------------


def _poll_health(url: str, stop: threading.Event, worst: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            assert c.get("/health").status_code == 200
            worst.append(time.perf_counter() - t0)
            time.sleep(0.02)


def _chat_body(count: int, chars: int, **kw) -> dict:
    rng = random.Random(1)
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": _text(rng, chars)}
                for i in range(count)]
    return {"model": "tiny-text", "messages": [*messages, {"role": "user", "content": "Hi"}],
            "max_tokens": 4, "seed": 1, **kw}


def test_a_chat_at_the_body_limit_never_stalls_health(served_workspace):
    srv = start_server(served_workspace, "--max-chat-chars", "2000000")
    try:
        body = _chat_body(250, 4150)
        size = len(httpx.Request("POST", "/", json=body).content)
        assert 1_000_000 < size <= 1 << 20, size
        stop, worst = threading.Event(), []
        poller = threading.Thread(target=_poll_health, args=(srv.url, stop, worst))
        poller.start()
        try:
            wait_until(lambda: len(worst) >= 3, 30)  # the poller is polling
            with srv.client(served_workspace.key) as c:
                for _ in range(3):
                    t0 = time.perf_counter()
                    r = c.post("/v1/chat/completions", json=body)
                    took = time.perf_counter() - t0
                    assert r.status_code == 200, r.text
            after = len(worst)
            wait_until(lambda: len(worst) >= after + 3, 30)  # and answered after the chats, too
        finally:
            stop.set()
            poller.join(30)
        assert len(worst) > 5
        print(f"chat {size} bytes: {took:.2f} s; /health worst {max(worst):.3f} s "
              f"over {len(worst)} polls")
        assert max(worst) < 0.5, sorted(worst)[-5:]
    finally:
        srv.stop()


def test_chat_messages_are_limited_as_received(server, served_workspace):
    """The limit applies before old turns are dropped: what is fitted is all that was sent."""
    with server.client(served_workspace.key) as c:
        r = c.post("/v1/chat/completions", json=_chat_body(40, 4000))  # 160,000 > 131,072
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"] == \
            "messages: at most 131072 characters in all on this server"
        ok = c.post("/v1/chat/completions", json=_chat_body(30, 4000))
        assert ok.status_code == 200, ok.text


def _db_sizes(url: str) -> tuple[int, int, int, int]:
    from genloop.store.db import GenerationRow, RequestRow

    engine = create_engine(url)
    try:
        with engine.connect() as s:
            n_req, req_bytes = s.execute(select(
                func.count(), func.sum(func.length(cast(RequestRow.body, Text))))).one()
            n_gen, gen_bytes = s.execute(select(
                func.count(), func.sum(func.length(cast(GenerationRow.request, Text))))).one()
    finally:
        engine.dispose()
    return int(n_req), int(req_bytes or 0), int(n_gen), int(gen_bytes or 0)


def test_n_4_with_100_kb_of_messages_stores_the_messages_once(server, served_workspace):
    url = served_workspace.db_url or f"sqlite:///{served_workspace.home / 'genloop.db'}"
    before = _db_sizes(url)
    body = _chat_body(25, 4000, n=4, seed=77)
    with server.client(served_workspace.key) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        ids = [ch["generation_id"] for ch in r.json()["choices"]]
        records = [c.get(f"/v1/generations/{g}").json() for g in ids]
    after = _db_sizes(url)
    rows, stored, gens, own = (a - b for a, b in zip(after, before, strict=True))
    print(f"n=4, 100 KB of messages: {rows} request row(s) of {stored} bytes; "
          f"{gens} generation rows with {own} bytes of own request")
    assert (rows, gens) == (1, 4)
    assert 100_000 < stored < 110_000 and own < 4 * 1000
    for i, rec in enumerate(records):  # each record still reads the whole request
        assert rec["request"]["messages"] == body["messages"]
        assert rec["request"]["seed"] == rec["seed"] == 77 + i
        assert rec["request"]["num_samples"] == 1 and rec["request"]["api"] == "chat"


def _metric(client, name):
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_gauges_follow_real_disconnects(served_workspace):
    srv = start_server(served_workspace, "--max-batch", "16", "--queue", "32",
                       "--max-tokens", "100000", "--rate-limit", "0")  # /metrics is polled
    running = 'genloop_running_sequences{model="tiny-text@1"}'
    waiting = 'genloop_waiting_sequences{model="tiny-text@1"}'
    try:
        with srv.client(served_workspace.key) as api, contextlib.ExitStack() as streams:
            # greedy: a long text that never ends early (a sampled one may draw the end of text)
            body = {"model": "tiny-text", "prompt": "The", "max_tokens": 100_000,
                    "temperature": 0, "stream": True}
            held = []
            for i in range(16):
                stack = contextlib.ExitStack()
                c = stack.enter_context(srv.client(served_workspace.key))
                r = stack.enter_context(c.stream("POST", "/v1/completions",
                                                 json={**body, "seed": i}))
                lines = r.iter_lines()
                first = next(line for line in lines if line.startswith("data:"))
                assert first.startswith("data: {\"id\""), first
                held.append((stack, lines))
            gauges = lambda: (_metric(api, running), _metric(api, waiting))  # noqa: E731
            wait_until(lambda: gauges() == (16, 0), 10, gauges)
            for stack, _ in held[:8]:
                stack.close()  # the client goes away mid-stream
            for stack, _ in held[8:]:
                streams.callback(stack.close)
            t0 = time.monotonic()
            wait_until(lambda: gauges() == (8, 0), 3, gauges)
            print(f"gauges at 8 running / 0 waiting {time.monotonic() - t0:.2f} s after "
                  "8 of 16 streams disconnected")
            # the 503 counts the live ones: 8 running, room for 8 + 32 more
            r = api.post("/v1/completions", json={"model": "tiny-text", "prompt": [
                "a", "b", "c", "d", "e", "f"], "n": 7, "max_tokens": 2})
            assert r.status_code == 503, r.text
            assert "8 sequences running and 0 waiting (limit 16 + 32)" in \
                r.json()["error"]["message"]
    finally:
        srv.stop()
