"""Decoding in its own process: a text model's ``Batcher`` off the HTTP process's interpreter lock.

In one process, the event loop that speaks HTTP and the thread that decodes take turns on one
interpreter lock, and on two cores a stream lost about half its tokens to that (BENCHMARKS.md
"serving"). ``DecodeProcess`` has the ``Batcher``'s interface (``submit`` → ``Ticket`` whose
events arrive at ``on_event``, ``cancel``, ``running``/``waiting``, ``Busy``, ``on_step``,
``on_change``, ``block``) and runs the real ``Batcher`` in a child process (the ``spawn``
context: no forked torch threads) that loads the same version from the same store:

    HTTP process                                   decoding process
    submit ── {"op": "submit", request} ──Pipe──▶  Batcher.submit
    cancel ── {"op": "cancel"} ─────────────────▶  Ticket.cancel
    reader thread ◀── {"events": [...], "batches": [...], "running", "waiting"} ── one per step

Messages are JSON (``send_bytes``; no pickles), one per turn of the decoding loop carrying every
sequence's new pieces, not one per token. The text is the in-process batcher's: the child runs
the same code on the same weights with the same seeds.

Admission is answered here, before anything is sent, from the live choices this proxy has
submitted and not seen finish or cancelled; a choice leaves the child's batch before its
``Finished`` is sent and a cancel reaches it before any later submit (one pipe, in order), so the
child never holds more than this count and never refuses what was admitted (it would say so as a
``Failed``). A child that dies fails every request in flight with one ``WorkerDied`` and is
started again at once; ``restarts`` counts it.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from genloop.errors import GenloopError
from genloop.generation.batching import Batcher, Event, Failed, Finished, Piece, Ticket, busy, choices_of
from genloop.generation.text import TextOutput, TextRequest, TokenLogprob
from genloop.tokenizers import Tokenizer


class WorkerDied(GenloopError):
    """The decoding process of a model exited while requests were in flight."""

    http_status = 503


class RemoteError(GenloopError):
    """A failure inside the decoding process, with the status it had there."""

    def __init__(self, message: str, http_status: int = 500):
        super().__init__(message)
        self.http_status = http_status


# --- the wire: events as JSON ------------------------------------------------------------------


def _logprobs(entries: list[TokenLogprob] | None) -> list | None:
    return None if entries is None else [[e.token, e.logprob, e.top] for e in entries]


def _entries(wire: list | None) -> list[TokenLogprob] | None:
    return None if wire is None else [TokenLogprob(t, lp, [(i, v) for i, v in top])
                                      for t, lp, top in wire]


def encode_event(event: Event) -> list:
    if isinstance(event, Piece):
        return ["p", event.index, event.text, _logprobs(event.logprobs)]
    if isinstance(event, Finished):
        out = {**asdict(event.output), "logprobs": _logprobs(event.output.logprobs)}
        return ["f", event.index, out]
    status = getattr(event.error, "http_status", 500)
    return ["x", str(event.error) or type(event.error).__name__, status]


def decode_event(wire: list) -> Event:
    if wire[0] == "p":
        return Piece(wire[1], wire[2], _entries(wire[3]) or [])
    if wire[0] == "f":
        out = dict(wire[2])
        out["logprobs"] = _entries(out["logprobs"])
        return Finished(wire[1], TextOutput(**out))
    return Failed(RemoteError(wire[1], wire[2]))


# --- the decoding process ----------------------------------------------------------------------


def serve_decoding(conn: Connection, ref: str, store_url: str, max_batch: int, max_queue: int,
                   threads: int) -> None:
    """The child's main: load ``ref``, then run its batcher on what arrives until the pipe closes
    (the HTTP process ended or closed it)."""
    import torch

    from genloop.generation.service import TextModel, load
    from genloop.store import Store

    torch.set_num_threads(threads)
    model = load(ref, Store(store_url), 1)
    assert isinstance(model, TextModel)
    batcher = Batcher(model.family, model.network, model.tokenizer, max_batch, max_queue)
    lock = threading.Lock()  # the decoding thread and this one both send
    pending: list[list] = []
    batches: list[int] = []
    counts = [0, 0]  # running, waiting as last sent
    tickets: dict[int, Ticket] = {}  # by id, until every choice has finished or it failed
    ended: dict[int, int] = {}  # finished choices by id (-1: failed), until it leaves ``tickets``

    def flush() -> None:  # after each turn of the decoding loop: one message
        with lock:
            now = [batcher.running, batcher.waiting]
            if not pending and not batches and now == counts:
                return
            counts[:] = now
            conn.send_bytes(json.dumps({"events": pending, "batches": batches, "running": now[0],
                                        "waiting": now[1], "step_s": batcher.step_s}).encode())
            pending.clear()
            batches.clear()

    def on_event(tid: int, event: Event) -> None:  # the decoding thread
        with lock:
            pending.append([tid, *encode_event(event)])
            ended[tid] = -1 if isinstance(event, Failed) else ended.get(tid, 0) + isinstance(
                event, Finished)
            ticket = tickets.get(tid)
            if ticket is not None and ended[tid] in (-1, ticket.choices):
                del tickets[tid], ended[tid]

    def on_step(size: int) -> None:
        with lock:
            batches.append(size)

    batcher.on_step = on_step
    batcher.on_flush = flush
    conn.send_bytes(b'{"ready": true}')
    while True:
        try:
            msg = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)  # the HTTP process is gone: nothing to decode for
        if msg["op"] == "stop":
            os._exit(0)
        tid = msg["id"]
        if msg["op"] == "cancel":
            with lock:
                gone = tickets.pop(tid, None)
                ended.pop(tid, None)
            if gone is not None:
                gone.cancel()
            continue
        try:
            request = TextRequest.model_validate(msg["request"])
            ticket = batcher.submit(request, functools.partial(on_event, tid))
            with lock:  # unless it ended before submit returned
                if ended.get(tid, 0) in (-1, ticket.choices):
                    ended.pop(tid, None)
                else:
                    tickets[tid] = ticket
        except Exception as e:  # the proxy checked it: a refusal here is a bug, said as one
            with lock:
                pending.append([tid, *encode_event(Failed(e))])
            flush()


# --- the HTTP process's side -------------------------------------------------------------------


class _RemoteTicket(Ticket):
    def __init__(self, proxy: DecodeProcess, tid: int, on_event: Callable[[Event], object],
                 choices: int, prompt_tokens: int):
        super().__init__(on_event, choices, prompt_tokens)
        self.proxy, self.tid = proxy, tid

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.proxy._cancel(self)


class DecodeProcess:
    """A text model's batcher in a child process, behind the ``Batcher``'s interface."""

    def __init__(self, ref: str, store_url: str, tokenizer: Tokenizer, block: int | None,
                 max_batch: int = 16, max_queue: int = 32, threads: int = 1):
        self.ref, self.store_url, self.tokenizer, self.block = ref, store_url, tokenizer, block
        self.max_batch, self.max_queue, self.threads = max_batch, max_queue, threads
        self.on_step: Callable[[int], None] | None = None
        self.on_change: Callable[[int, int], None] | None = None
        self.steps = 0
        self.restarts = 0
        self.ready = threading.Event()  # the current child has loaded its model
        self._running = self._waiting = 0  # as the child last said
        self._step_s = 0.02
        self._lock = threading.Lock()
        self._tickets: dict[int, list] = {}  # id → [ticket, choices not finished]
        self._live = 0  # choices submitted and neither finished nor cancelled
        self._next = 0
        self._closed = False
        self._start()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe()
        self._process = ctx.Process(
            target=serve_decoding, name=f"genloop-decode {self.ref}", daemon=True,
            args=(theirs, self.ref, self.store_url, self.max_batch, self.max_queue, self.threads))
        self.ready.clear()
        self._process.start()
        theirs.close()  # the child's end: when it exits, our reads end
        self._conn = mine
        threading.Thread(target=self._read, args=(mine, self._process), daemon=True,
                         name=f"genloop-decode-reader {self.ref}").start()

    def submit(self, request: TextRequest, on_event: Callable[[Event], object]) -> Ticket:
        """As ``Batcher.submit``: ``InvalidInput`` or ``Busy`` now, else the choices are sent."""
        prompts, encoded = choices_of(self.tokenizer, self.block, request)
        with self._lock:
            running = min(self._live, self.max_batch)
            refusal = busy(running, self._live - running, len(prompts), self.max_batch,
                           self.max_queue, request.max_new_tokens, self._step_s)
            if refusal is not None:
                raise refusal
            self._next += 1
            ticket = _RemoteTicket(self, self._next, on_event, len(prompts),
                                   sum(len(ids) for ids in encoded.values()))
            self._tickets[ticket.tid] = [ticket, len(prompts)]
            self._live += len(prompts)
            self._send({"op": "submit", "id": ticket.tid,
                        "request": request.model_dump(mode="json")})
        return ticket

    def _send(self, msg: dict[str, Any]) -> None:
        """With ``_lock`` held (messages leave in the order they were decided)."""
        try:
            self._conn.send_bytes(json.dumps(msg).encode())
        except OSError:  # the child is gone: the reader fails the tickets and restarts it
            pass

    def _cancel(self, ticket: _RemoteTicket) -> None:
        with self._lock:
            entry = self._tickets.pop(ticket.tid, None)
            if entry is not None:
                self._live -= entry[1]
                self._send({"op": "cancel", "id": ticket.tid})

    def _read(self, conn: Connection, process: Any) -> None:
        """The reader thread: each message's events to their tickets, its batch sizes and
        counts to the callbacks; when the child is gone, fail what was in flight and restart."""
        while True:
            try:
                msg = json.loads(conn.recv_bytes())
            except (EOFError, OSError):
                break
            if msg.get("ready"):
                self.ready.set()
                continue
            for tid, *wire in msg["events"]:
                self._deliver(tid, decode_event(wire))
            self._running, self._waiting, self._step_s = msg["running"], msg["waiting"], msg["step_s"]
            for size in msg["batches"]:
                self.steps += 1
                if self.on_step is not None:
                    self.on_step(size)
            if self.on_change is not None:
                self.on_change(self._running, self._waiting)
        conn.close()
        process.join(5)
        if self._closed:
            return
        self._died(process.exitcode)

    def _deliver(self, tid: int, event: Event) -> None:
        with self._lock:
            entry = self._tickets.get(tid)
            if entry is None:
                return  # cancelled: it already left the count
            if isinstance(event, Failed):
                self._live -= entry[1]
                del self._tickets[tid]
            elif isinstance(event, Finished):
                entry[1] -= 1
                self._live -= 1
                if entry[1] == 0:
                    del self._tickets[tid]
        entry[0].deliver(event)

    def _died(self, code: int | None) -> None:
        with self._lock:
            lost = [entry[0] for entry in self._tickets.values()]
            self._tickets.clear()
            self._live = 0
            self._running = self._waiting = 0
            self.restarts += 1
            self._start()
        error = WorkerDied(f"the decoding process of {self.ref} exited (code {code}) with "
                           f"{len(lost)} requests in flight; it is restarting: retry the request")
        for ticket in lost:
            ticket.deliver(Failed(error))
        if self.on_change is not None:
            self.on_change(0, 0)

    def close(self) -> None:
        """Stop the child (its pipe closes; it exits); requests in flight get no more events."""
        self._closed = True
        with self._lock:
            self._send({"op": "stop"})
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()


_PROCS: OrderedDict[tuple, DecodeProcess] = OrderedDict()
_PROCS_LOCK = threading.Lock()


def decode_process(ref: str, store_url: str, tokenizer: Tokenizer, block: int | None,
                   max_batch: int = 16, max_queue: int = 32, threads: int = 1,
                   keep: int = 4) -> DecodeProcess:
    """The decoding process of version ``ref`` of the store at ``store_url`` with these limits,
    started on first use and shared by every app in this process (as the in-process batcher is,
    through the service's cache); the ``keep`` most recently used stay, older ones are stopped."""
    key = (store_url, ref, max_batch, max_queue, threads)
    with _PROCS_LOCK:
        proc = _PROCS.get(key)
        if proc is None:
            proc = _PROCS[key] = DecodeProcess(ref, store_url, tokenizer, block, max_batch,
                                               max_queue, threads)
        _PROCS.move_to_end(key)
        old = [_PROCS.popitem(last=False)[1] for _ in range(len(_PROCS) - keep)]
    for stopped in old:
        stopped.close()
    return proc


def decode_processes() -> list[DecodeProcess]:
    """The decoding processes running now, least recently used first."""
    with _PROCS_LOCK:
        return list(_PROCS.values())
