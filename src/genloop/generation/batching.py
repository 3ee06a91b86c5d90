"""Continuous batching: one decoding loop per text model, shared by every concurrent request.

A request becomes one *sequence* per choice. Sequences wait in a bounded queue, take a slot of the
family's ``SlotDecoder`` when one is free (their prompt is prefilled alone), and from then on
advance together: each step feeds every running sequence's last token in one forward pass, so
eight streams cost little more than one on a CPU where a small model's step is mostly overhead.
Sequences leave between steps when they finish, hit a stop string, or are cancelled (a client
that went away), and waiting ones take their slots (Yu et al. 2022, "Orca", iteration-level
scheduling).

Each sequence samples with its own ``torch.Generator`` seeded from its seed, consumed exactly as
``family.sample`` does for a batch of one, so a choice's text depends only on (model, prompt,
settings, seed), never on which requests it happened to share steps with.

Events go to the ticket's ``on_event`` callback from the decoding thread; faces turn them into
what they need (the HTTP face hands them to its event loop).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from genloop.errors import GenloopError, InvalidInput
from genloop.generation.text import (
    TextOutput,
    TextRequest,
    TextRow,
    TokenLogprob,
    check_request,
    choice_seed,
    content_hash,
    encode_prompt,
)
from genloop.models.family import Family, SlotDecoder
from genloop.models.sampling import next_token_probs, sample_next, token_logprobs
from genloop.tokenizers import Tokenizer, end_ids


class Busy(GenloopError):
    """Every slot and queue place is taken; try again after ``retry_after`` seconds."""

    http_status = 503

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Piece:
    """New text of choice ``index``; with ``logprobs`` requested, those of the tokens decoded
    since the last piece (text held back for a stop string comes with a later piece)."""

    index: int
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Finished:
    """Choice ``index`` is complete."""

    index: int
    output: TextOutput


@dataclass
class Failed:
    """Generation failed; no more events follow for this ticket."""

    error: Exception


Event = Piece | Finished | Failed


def choices_of(tokenizer: Tokenizer, block: int | None, request: TextRequest,
               ) -> tuple[list[str], dict[str, list[int]]]:
    """Every choice's prompt of ``request`` (its prompts × num_samples; choice i is seeded
    ``choice_seed(seed, i)``) and each distinct prompt's ids, or ``InvalidInput`` for a request
    the batcher cannot take (the checks of ``Batcher.submit``, shared by its proxies)."""
    if request.seed is None:
        raise InvalidInput("seed: the batcher needs a resolved seed")
    if request.best_of is not None:
        raise InvalidInput("best_of: submit the request's candidates(); the service ranks them")
    if request.num_beams > 1:
        raise InvalidInput("num_beams: a beam search is one search, not independent "
                           "sequences: the service runs it (TextModel.search)")
    check_request(tokenizer, request)
    prompts = [p for p in request.prompts for _ in range(request.num_samples)]
    encoded = {p: encode_prompt(tokenizer, request.model_prompt(p), block) for p in set(prompts)}
    return prompts, encoded


def busy(running: int, waiting: int, choices: int, max_batch: int, max_queue: int,
         max_new_tokens: int, step_s: float) -> Busy | None:
    """The refusal of ``choices`` more sequences beside ``running`` + ``waiting`` live ones, or
    None when the queue has room for all of them (``running`` never exceeds ``max_batch``)."""
    if waiting + choices <= max_queue + max(max_batch - running, 0):
        return None
    ahead = waiting + running
    wait = min(60.0, max(1.0, ahead / max_batch * max_new_tokens * step_s))
    return Busy(f"model busy: {running} sequences running and {waiting} waiting "
                f"(limit {max_batch} + {max_queue}); retry later", retry_after=round(wait))


class Ticket:
    """One submitted request: its choices' events arrive at ``on_event``; ``cancel()`` stops it."""

    def __init__(self, on_event: Callable[[Event], object], choices: int, prompt_tokens: int = 0):
        self.on_event = on_event
        self.choices = choices
        self.prompt_tokens = prompt_tokens  # of the distinct prompts, once each (usage)
        self.cancelled = False
        self.submitted = time.perf_counter()

    def cancel(self) -> None:
        """Stop generating for this ticket; its slots are freed before the next decoding step."""
        self.cancelled = True

    def deliver(self, event: Event) -> None:
        """Hand ``event`` to ``on_event`` unless cancelled; a consumer that raises is cancelled,
        so one consumer's bug never stops everyone else's decoding."""
        if self.cancelled:
            return
        try:
            self.on_event(event)
        except Exception:
            self.cancel()


@dataclass
class _Sequence:
    ticket: Ticket
    index: int
    request: TextRequest  # single prompt, num_samples=1, seed set
    prompt_ids: list[int]
    row: TextRow
    generator: torch.Generator
    slot: int = -1
    ids: list[int] = field(default_factory=list)  # prompt + generated, for repetition penalty
    logprobs: list[TokenLogprob] = field(default_factory=list)  # when the request asks for them
    logprobs_sent: int = 0  # of ``logprobs``, already in a Piece
    next_token: int = -1
    generated: int = 0
    first_token_s: float | None = None
    started: float = 0.0
    admitted: bool = False  # in ``_running`` (set just after it is put there)


class Batcher:
    """The decoding loop of one text model; ``submit`` is thread-safe and never blocks."""

    def __init__(self, family: Family, network: torch.nn.Module, tokenizer: Tokenizer,
                 max_batch: int = 16, max_queue: int = 32, idle_exit_s: float = 30.0):
        if family.slot_decoder is None:
            raise InvalidInput(f"model family {family.name!r} has no slot decoder for serving")
        self.family, self.network, self.tokenizer = family, network, tokenizer
        self.max_batch, self.max_queue, self.idle_exit_s = max_batch, max_queue, idle_exit_s
        self.block = getattr(network.config, "block_size", None) if family.kv_cache else None
        self._decoder: SlotDecoder | None = None
        self._waiting: deque[_Sequence] = deque()
        self._running: dict[int, _Sequence] = {}
        self._admitting: list[_Sequence] = []  # taken from the queue, being prefilled
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.steps = 0  # decoding steps taken (metrics, tests)
        self.on_step: Callable[[int], None] | None = None  # called with the batch size of each step
        # called with (running, waiting) live sequences after every submit, admission, step and
        # cancellation's removal: gauges follow the loop itself, not the requests that finish
        self.on_change: Callable[[int, int], None] | None = None
        # called after each turn of the loop (admission and one step) and before it idles: the
        # events of that turn are out (a decoding process sends them as one message)
        self.on_flush: Callable[[], None] | None = None
        self._step_s = 0.02  # running mean of a step's time, for Retry-After

    # --- the caller's side ------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Sequences decoding or being prefilled, not counting cancelled ones (they hold no
        place: they leave before the next step)."""
        running = [s for s in list(self._running.values()) if not s.ticket.cancelled]
        return len(running) + sum(not s.admitted and not s.ticket.cancelled
                                  for s in list(self._admitting))

    @property
    def step_s(self) -> float:
        """A running mean of one decoding step's time (what Retry-After is estimated from)."""
        return self._step_s

    @property
    def waiting(self) -> int:
        """Sequences waiting for a slot, not counting cancelled ones."""
        return sum(not s.ticket.cancelled for s in list(self._waiting))

    def _changed(self) -> None:
        """Tell ``on_change`` the live counts (called with ``_cond`` held, so in order)."""
        if self.on_change is not None:
            try:
                self.on_change(self.running, self.waiting)
            except Exception:  # a metrics bug must not stop decoding
                self.on_change = None

    def submit(self, request: TextRequest, on_event: Callable[[Event], object]) -> Ticket:
        """Queue every choice of ``request`` (its prompts × num_samples; choice i is seeded
        ``choice_seed(seed, i)``, as on every face).

        Raises ``InvalidInput`` for a prompt the model cannot take and ``Busy`` when the queue has
        no room for all the choices; nothing is queued then.
        """
        prompts, encoded = choices_of(self.tokenizer, self.block, request)
        ticket = Ticket(on_event, len(prompts), sum(len(ids) for ids in encoded.values()))
        seqs = []
        for i, prompt in enumerate(prompts):
            seed = choice_seed(request.seed or 0, i)
            one = request.model_copy(update={"prompt": prompt, "num_samples": 1, "seed": seed})
            seqs.append(_Sequence(ticket, i, one, encoded[prompt], TextRow(prompt, request.stop),
                                  torch.Generator().manual_seed(seed)))
        with self._cond:
            refusal = busy(self.running, self.waiting, len(seqs), self.max_batch, self.max_queue,
                           request.max_new_tokens, self._step_s)
            if refusal is not None:
                raise refusal
            self._waiting.extend(seqs)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="genloop-batcher",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
            self._changed()
        return ticket

    # --- the decoding thread ----------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    self._drop_cancelled()
                    if not self._running and not self._waiting:
                        self._changed()
                        self._flush()
                        if not self._cond.wait(self.idle_exit_s) and not self._waiting:
                            self._thread = None
                            return
                        continue
                    admit: list[_Sequence] = []
                    while self._waiting and len(self._running) + len(admit) < self.max_batch:
                        admit.append(self._waiting.popleft())
                    self._admitting = admit  # still counted while they are prefilled
                    self._changed()
                try:
                    self._admit(admit)
                    self._step()
                except Exception as e:  # fail every sequence in flight; the loop goes on
                    self._fail_all(admit, e)
                finally:
                    with self._cond:
                        self._admitting = []
                        self._changed()
                    self._flush()

    def _flush(self) -> None:
        if self.on_flush is not None:
            self.on_flush()

    def _drop_cancelled(self) -> None:
        for slot, seq in list(self._running.items()):
            if seq.ticket.cancelled:
                del self._running[slot]
                self._decoder_().free(slot)
        if any(s.ticket.cancelled for s in self._waiting):
            self._waiting = deque(s for s in self._waiting if not s.ticket.cancelled)

    def _decoder_(self) -> SlotDecoder:
        if self._decoder is None:
            make = self.family.slot_decoder
            assert make is not None  # __init__ refuses a family without one
            self._decoder = make(self.network, self.max_batch)
        return self._decoder

    def _admit(self, seqs: list[_Sequence]) -> None:
        """Prefill each new sequence into a free slot and choose its first token."""
        decoder = self._decoder_()
        for seq in seqs:
            if seq.ticket.cancelled:
                continue
            seq.slot = next(s for s in range(self.max_batch) if s not in self._running)
            seq.started = time.perf_counter()
            seq.ids = list(seq.prompt_ids)
            logits = decoder.prefill(seq.slot, torch.tensor(seq.prompt_ids, dtype=torch.long))
            self._running[seq.slot] = seq
            seq.admitted = True
            token = self._choose([seq], logits[None])[0]
            self._logprobs([seq], logits[None], [token])
            self._advance(seq, token)

    def _step(self) -> None:
        """One forward pass for every running sequence, then each chooses its next token."""
        live = [s for s in self._running.values() if s.next_token >= 0]
        if not live:
            return
        t0 = time.perf_counter()
        tokens = torch.tensor([s.next_token for s in live], dtype=torch.long)
        logits = self._decoder_().step([s.slot for s in live], tokens)
        chosen = self._choose(live, logits)
        self._logprobs(live, logits, chosen)
        for seq, token in zip(live, chosen, strict=True):
            self._advance(seq, token)
        self.steps += 1
        self._step_s = 0.9 * self._step_s + 0.1 * (time.perf_counter() - t0)
        if self.on_step is not None:
            self.on_step(len(live))

    @staticmethod
    def _choose(seqs: list[_Sequence], logits: torch.Tensor) -> list[int]:
        """The next token of each sequence from its row of ``logits`` (B, V).

        Rows with the same settings share one filtered softmax; each row is then drawn with its
        sequence's own generator, exactly as ``sample_next`` would draw it alone.
        """
        tokens = [0] * len(seqs)
        groups: dict[tuple, list[int]] = {}
        for j, seq in enumerate(seqs):
            r = seq.request
            if (r.repetition_penalty != 1.0 or r.frequency_penalty or r.presence_penalty
                    or r.logit_bias):  # depend on each row's history or bias: one at a time
                history = torch.tensor([seq.ids], dtype=torch.long)
                generated = history[:, len(seq.prompt_ids):]
                tokens[j] = int(sample_next(logits[j : j + 1], seq.generator,
                                            temperature=r.temperature, top_k=r.top_k,
                                            top_p=r.top_p, repetition_penalty=r.repetition_penalty,
                                            history=history, frequency_penalty=r.frequency_penalty,
                                            presence_penalty=r.presence_penalty,
                                            generated=generated, logit_bias=r.logit_bias)[0])
            else:
                groups.setdefault((r.temperature, r.top_k, r.top_p), []).append(j)
        for (temperature, top_k, top_p), rows in groups.items():
            # every row in one group (the usual case): the logits as they are, no gathered copy
            these = logits if len(rows) == len(seqs) else logits[rows]
            if temperature <= 0:
                picked = these.argmax(dim=-1).tolist()
                for j, token in zip(rows, picked, strict=True):
                    tokens[j] = token
                continue
            probs = next_token_probs(these, temperature=temperature, top_k=top_k, top_p=top_p)
            for i, j in enumerate(rows):
                tokens[j] = int(torch.multinomial(probs[i : i + 1], 1, generator=seqs[j].generator))
        return tokens

    def _logprobs(self, seqs: list[_Sequence], logits: torch.Tensor, chosen: list[int]) -> None:
        """Keep each asking sequence's log-probability of its chosen token and its top
        alternatives: the model's own log-softmax at this step (``token_logprobs``). End-of-text
        ends the text and is not one of its tokens, so it gets none."""
        ends = end_ids(self.tokenizer)
        rows = [j for j, s in enumerate(seqs)
                if s.request.logprobs is not None and chosen[j] not in ends]
        if not rows:
            return
        top = max(int(seqs[j].request.logprobs or 0) for j in rows)
        picked, ids, values = token_logprobs(logits[rows], torch.tensor([chosen[j] for j in rows]),
                                             top)
        for i, j in enumerate(rows):
            k = int(seqs[j].request.logprobs or 0)
            seqs[j].logprobs.append(TokenLogprob(
                chosen[j], float(picked[i]),
                list(zip(ids[i, :k].tolist(), values[i, :k].tolist(), strict=True))))

    def _advance(self, seq: _Sequence, token: int) -> None:
        """Append ``token`` to ``seq``; emit its new text; finish it if it is done."""
        seq.generated += 1
        seq.ids.append(token)
        seq.first_token_s = seq.first_token_s or time.perf_counter() - seq.ticket.submitted
        piece = seq.row.add(token, self.tokenizer)
        if seq.row.done is None and seq.generated >= seq.request.max_new_tokens:
            seq.row.done = "length"
            piece += seq.row.flush()
        if piece:
            seq.ticket.deliver(Piece(seq.index, piece, seq.logprobs[seq.logprobs_sent:]))
            seq.logprobs_sent = len(seq.logprobs)
        if seq.row.done is not None:
            self._finish(seq)
        else:
            seq.next_token = token

    def _finish(self, seq: _Sequence) -> None:
        del self._running[seq.slot]
        self._decoder_().free(seq.slot)
        now = time.perf_counter()
        timings = {"queued_s": seq.started - seq.ticket.submitted,
                   "first_token_s": seq.first_token_s or 0.0,
                   "total_s": now - seq.ticket.submitted}
        out = TextOutput(prompt=seq.row.prompt, text=seq.row.text, tokens=len(seq.row.ids),
                         finish_reason=seq.row.done or "length", seed=int(seq.request.seed or 0),
                         content_hash=content_hash(seq.row.text), timings=timings,
                         logprobs=seq.logprobs if seq.request.logprobs is not None else None)
        seq.ticket.deliver(Finished(seq.index, out))

    def _fail_all(self, admitted: list[_Sequence], error: Exception) -> None:
        tickets = {id(s.ticket): s.ticket for s in [*self._running.values(), *admitted]}
        self._running.clear()
        self._decoder = None  # its state may be half-written: start from a fresh one
        for ticket in tickets.values():
            ticket.deliver(Failed(error))
            ticket.cancel()
