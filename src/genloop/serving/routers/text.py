"""``POST /v1/completions`` and ``POST /v1/chat/completions``: OpenAI's text routes on the model's
continuous-batching loop (``TextModel.batcher``), plain or streamed as server-sent events.

OpenAI names map onto genloop's here and only here: ``max_tokens`` → ``max_new_tokens``,
``n`` → ``num_samples``. Every finished choice is recorded before the client is told its
``generation_id``, so an acknowledged generation is in the store.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from genloop.errors import InvalidInput, validation_message
from genloop.generation import grounding
from genloop.generation.batching import Batcher, Event, Failed, Finished, Piece, Ticket
from genloop.generation.chat import moderated_messages
from genloop.generation.decode_worker import DecodeProcess, decode_process
from genloop.generation.grounding import Grounding
from genloop.generation.service import TextModel, load, load_reward
from genloop.generation.text import TextOutput, TextRequest, resolve_seed
from genloop.safety.moderator import Moderator
from genloop.safety.stream import StreamGuard
from genloop.serving import compat
from genloop.serving.auth import Forbidden
from genloop.serving.captions import vision_chat
from genloop.serving.deps import CallerDep, ServerState, StateDep, WriterDep, run_idempotent
from genloop.serving.schemas import (
    IDEMPOTENT_REPLAYED,
    ChatBody,
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChoiceGrounding,
    Completion,
    CompletionBody,
    CompletionChoice,
    CompletionChunk,
    CompletionUsage,
    errors,
    event_stream,
)
from genloop.serving.settings import ServeConfig

router = APIRouter(prefix="/v1", tags=["text"], responses=errors(400, 401, 403, 404, 409, 429, 503))


async def load_text_model(state: ServerState, ref: str) -> TextModel:
    model = await run_in_threadpool(load, ref, state.store, state.config.models_loaded)
    if not isinstance(model, TextModel):
        raise InvalidInput(f"model {ref!r} generates images: use /v1/images/generations")
    if model.family.embed is not None:
        raise InvalidInput(f"model {model.ref} is an embedder: it maps text to vectors, it does "
                           "not generate text (use /v1/embeddings)")
    if not model.family.generative:
        raise InvalidInput(f"model {model.ref} is a {model.family.name} model: it scores text, it "
                           "does not generate it (name it as a completion's reward_model)")
    return model


def batcher_of(state: ServerState, model: TextModel) -> Batcher | DecodeProcess:
    """The model's decoding loop as the server's ``decode`` setting places it: its batcher in a
    child process (``generation/decode_worker.py``) or on a thread of this one."""
    return decoding_loop(state.config, state.store.url, model)


def decoding_loop(c: ServeConfig, store_url: str, model: TextModel) -> Batcher | DecodeProcess:
    """``batcher_of`` for a config and a store (``genloop serve --preload`` starts them early)."""
    if c.decode == "thread":
        return model.batcher(c.max_batch, c.max_queue)
    if model.family.slot_decoder is None:
        raise InvalidInput(f"model family {model.family.name!r} has no slot decoder for serving")
    block = getattr(model.network.config, "block_size", None) if model.family.kv_cache else None
    return decode_process(model.ref, store_url, model.tokenizer, block, c.max_batch,
                          c.max_queue, c.threads, c.models_loaded)


def _check_limits(state: ServerState, body: CompletionBody | ChatBody, prompts: list[str]) -> None:
    c = state.config
    if body.max_tokens > c.max_tokens:
        raise InvalidInput(f"max_tokens: at most {c.max_tokens} on this server")
    if body.n > c.max_n:
        raise InvalidInput(f"n: at most {c.max_n} on this server")
    best_of = getattr(body, "best_of", None) or 0  # chat has none
    if best_of > c.max_n:
        raise InvalidInput(f"best_of: at most {c.max_n} on this server")
    if len(prompts) * max(body.n, best_of) > c.max_batch + c.max_queue:
        what = "best_of" if best_of > body.n else "n"
        raise InvalidInput(f"prompt × {what}: at most {c.max_batch + c.max_queue} choices per request")
    if not isinstance(body, ChatBody) and sum(len(p) for p in prompts) > c.max_prompt_chars:
        raise InvalidInput(f"prompt: at most {c.max_prompt_chars} characters on this server")


def _check_chat_chars(state: ServerState, body: ChatBody) -> None:
    """The messages as received, before any turn is dropped: what a request may make us fit and
    store."""
    limit = state.config.max_chat_chars
    if sum(len(m.content) for m in body.messages) > limit:
        raise InvalidInput(f"messages: at most {limit} characters in all on this server")


async def _fit_chat(state: ServerState, model: TextModel, body: ChatBody, reserve: int = 0) -> str:
    """The transcript fitted to the model's context (less ``reserve`` tokens: the facts put
    before it), off the event loop (linear in its length, but a long one still takes a while)."""
    block = batcher_of(state, model).block
    return await run_in_threadpool(
        model.chat_template.render_within, body.messages,
        lambda p: len(model.tokenizer.encode(p)), None if block is None else block - 1 - reserve)


class _Run:
    """One request on a model's batcher: its ticket, and its events as an asyncio queue."""

    def __init__(self, state: ServerState, model: TextModel, checked: _Checked,
                 owner: str | None = None):
        # moderation first (``_Run.start``): a blocked prompt is a 400 before anything is queued
        self.moderator, self.prompt_safety = checked.moderator, checked.prompt_safety
        request, extra = checked.request, checked.extra
        self.state, self.model, self.request, self.extra = state, model, request, extra
        self.owner = owner  # the calling key's, stamped on each choice's record
        self.events: asyncio.Queue = asyncio.Queue()
        self.last_sent = time.monotonic()  # for keep-alive comments
        loop = asyncio.get_running_loop()
        batcher = batcher_of(state, model)
        if batcher.on_step is None:
            batcher.on_step = state.metrics.batch.observe
        if batcher.on_change is None:
            batcher.on_change = _gauges(state, model.ref)
        self.batcher = batcher
        self.ticket: Ticket = batcher.submit(
            request, lambda ev: loop.call_soon_threadsafe(self.events.put_nowait, ev))

    @classmethod
    async def start(cls, state: ServerState, model: TextModel, request: TextRequest,
                    extra: dict[str, Any], owner: str | None = None) -> _Run:
        """The request's prompts (and a chat's messages) checked off the event loop — a check may
        be slow, a classifier's first load slower — then submitted to the batcher."""
        return cls(state, model, await run_in_threadpool(_checked, model, request, extra), owner)

    async def finish(self, event: Finished) -> str:
        """Record a finished choice, moderated (``event.output`` becomes what may be shown:
        redacted, or withheld with finish_reason "content_filter"); its generation id."""
        event.output = await run_in_threadpool(
            self.model.moderated, event.output, self.prompt_safety.get(event.output.prompt),
            self.moderator)
        out = event.output
        ref = self.model.ref
        self.state.metrics.tokens.labels(ref).inc(out.tokens)
        self.state.metrics.first_token.labels(ref).observe(out.timings.get("first_token_s", 0.0))
        one = self.request.model_copy(update={"prompt": out.prompt})
        record = await run_in_threadpool(self.model.record, one, out, self.extra, self.owner)
        return record.id


@dataclass
class _Checked:
    """A request as moderation lets it through, with the verdicts its records keep."""

    moderator: Moderator
    request: TextRequest
    prompt_safety: dict[str, dict[str, Any]]
    extra: dict[str, Any]


def _checked(model: TextModel, request: TextRequest, extra: dict[str, Any]) -> _Checked:
    """The workspace's policy on the request's prompts and a chat's recorded messages (blocked:
    ``ContentBlocked``; redacted: replaced); blocking I/O and CPU, so run in a thread."""
    moderator = model.moderator()
    request, prompt_safety = model.moderate_prompts(request, moderator)
    return _Checked(moderator, request, prompt_safety, moderated_messages(moderator, extra))


def _gauges(state: ServerState, ref: str) -> Callable[[int, int], None]:
    """The batcher's ``on_change``: its live sequences onto the model's queue gauges."""
    running, waiting = state.metrics.running.labels(ref), state.metrics.waiting.labels(ref)

    def update(r: int, w: int) -> None:
        running.set(r)
        waiting.set(w)

    return update


def _text_request(state: ServerState, body: CompletionBody | ChatBody, prompt: str | list[str],
                  stops: list[str], grounded: Grounding | None = None) -> TextRequest:
    """OpenAI's names onto genloop's, in this one place (max_tokens → max_new_tokens, n →
    num_samples); whatever the core refuses is the client's 400, never a 500. ``best_of`` equal
    to n with no reward model is n (every choice is returned, in order, as before)."""
    best_of, reward_model = getattr(body, "best_of", None), getattr(body, "reward_model", None)
    if best_of is not None and best_of <= body.n and reward_model is None:
        best_of = None
    try:
        return TextRequest(prompt=prompt, max_new_tokens=body.max_tokens,
                           temperature=body.temperature,
                           top_p=body.top_p if body.top_p < 1.0 else None, top_k=body.top_k,
                           repetition_penalty=body.repetition_penalty, stop=stops,
                           seed=resolve_seed(body.seed, max(body.n, best_of or 0)
                                             * (len(prompt) if isinstance(prompt, list) else 1)),
                           num_samples=body.n, best_of=best_of, reward_model=reward_model,
                           few_shot=getattr(body, "few_shot", None),  # chat has none
                           num_beams=getattr(body, "num_beams", 1),
                           grounding=grounded or body.grounding,
                           **compat.sampling_fields(body))
    except ValueError as e:  # pydantic's ValidationError
        raise InvalidInput(validation_message(e)) from None


async def _chat_facts(state: ServerState, model: TextModel, body: ChatBody) -> Grounding | None:
    """A grounded chat's facts, retrieved before the transcript is fitted (they take room in
    the context): the graph is linked to the user's messages (not the whole transcript, whose
    speaker names and the assistant's own words are no question to the graph) unless the
    grounding names its own query. Keyed to the fitted transcript by ``keyed``."""
    spec = body.grounding
    if spec is None:
        return None
    grounding.check_from_client(spec)
    if spec.query is None:
        said = "\n".join(m.content for m in body.messages if m.speaker == "user")
        spec = spec.model_copy(update={"query": said})
    return await run_in_threadpool(grounding.retrieve, spec, [""], state.store)


def _choice_grounding(request: TextRequest, prompt: str) -> dict[str, Any]:
    """The ``grounding`` extra of a choice of ``prompt``: the facts it was given (none: {})."""
    spec = request.grounding
    if spec is None or spec.retrieved is None:
        return {}
    facts = spec.facts(prompt)
    return {"grounding": ChoiceGrounding(graph=spec.graph, graph_hash=spec.graph_hash,
                                         entities=facts.entities, triples=facts.triples)}


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def _error_payload(error: Exception) -> dict[str, Any]:
    return {"error": {"message": str(error) or type(error).__name__, "type": "server_error",
                      "param": None, "code": None}}


async def _respond(state: StateDep, caller: CallerDep, request: Request,
                   body: CompletionBody | ChatBody, chat: bool) -> Response:
    model = await load_text_model(state, body.model)
    body = compat.normalized(body)
    stops = list(body.stop or [])  # the validator has made a list of it
    prompt: str | list[str]
    if chat:
        assert isinstance(body, ChatBody)
        _check_chat_chars(state, body)
        grounded = await _chat_facts(state, model, body)
        reserve = 0 if grounded is None else len(model.tokenizer.encode(grounded.prefix("")))
        prompt = await _fit_chat(state, model, body, reserve)
        grounded = None if grounded is None else grounding.keyed(grounded, "", prompt)
        stops += [s for s in model.chat_template.stop if s not in stops]
        extra = {"api": "chat", "messages": [m.model_dump(exclude_none=True) for m in body.messages]}
        prompts = [prompt]
    else:
        assert isinstance(body, CompletionBody)
        grounded = None
        prompt = compat.completion_prompt(body, model.tokenizer)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        extra = {"api": "completions"}
    if body.user:
        extra["user"] = body.user
    _check_limits(state, body, prompts)
    treq = _text_request(state, body, prompt, stops, grounded)
    if treq.few_shot is not None:  # drawn from the store, checked against the context
        if caller.access != "admin":  # datasets are the workspace's, not a key owner's
            raise Forbidden(f"few_shot: API key {caller.name!r} has scope {caller.access!r}; "
                            "drawing from the workspace's datasets takes an admin key")
        treq = await run_in_threadpool(model.with_examples, treq, from_client=True)
    if treq.grounding is not None:  # retrieved from the workspace's graph, checked, recorded
        treq = await run_in_threadpool(model.with_grounding, treq, from_client=not chat)
    echo = isinstance(body, CompletionBody) and body.echo
    kind = "chat.completion" if chat else "text_completion"
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex  # per response (seed: records)
    created = int(time.time())

    if body.stream:
        if request.headers.get("idempotency-key"):
            raise InvalidInput("Idempotency-Key: streaming requests do not take one")
        run = await _Run.start(state, model, treq, extra, caller.owner)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(run, rid, created, kind, chat, include_usage, state.config.keepalive_s, echo),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def work() -> tuple[int, dict[str, Any]]:
        if treq.best_of is not None:
            return await _best_of(state, caller, model, treq, extra, rid, created, echo)
        if treq.num_beams > 1:
            return await _beams(state, caller, model, treq, extra, rid, created, echo)
        run = await _Run.start(state, model, treq, extra, caller.owner)
        choices: dict[int, CompletionChoice | ChatCompletionChoice] = {}
        completion = 0
        try:
            while len(choices) < run.ticket.choices:
                event = await run.events.get()
                if isinstance(event, Failed):
                    raise event.error
                if isinstance(event, Finished):
                    gid = await run.finish(event)
                    completion += event.output.tokens
                    choices[event.index] = _choice(model, event, gid, chat, echo, treq)
        finally:
            run.ticket.cancel()
        usage = CompletionUsage(prompt_tokens=run.ticket.prompt_tokens, completion_tokens=completion,
                                total_tokens=run.ticket.prompt_tokens + completion)
        reply = (ChatCompletion if chat else Completion)(
            id=rid, created=created, model=model.ref, usage=usage,
            choices=[choices[i] for i in sorted(choices)])
        return 200, reply.model_dump(mode="json")

    return await run_idempotent(state, caller, request, body, work)


async def _best_of(state: ServerState, caller: Any, model: TextModel, treq: TextRequest,
                   extra: dict[str, Any], rid: str, created: int,
                   echo: bool) -> tuple[int, dict[str, Any]]:
    """``best_of`` candidates per prompt on the batcher (the choices of ``treq.candidates()``,
    each seeded as such), ranked by the reward model or by mean token log-prob
    (``TextModel.rank``); the ``n`` best of each prompt are recorded, with their ranking, and
    returned best first. Usage counts every candidate's tokens (they were all generated)."""
    reward = None
    if treq.reward_model is not None:  # before generating: an unknown one is a 400 at once
        reward = await run_in_threadpool(load_reward, treq.reward_model, state.store,
                                         state.config.models_loaded)
    run = await _Run.start(state, model, treq.candidates(), extra, caller.owner)
    outputs: dict[int, TextOutput] = {}
    try:
        while len(outputs) < run.ticket.choices:
            event = await run.events.get()
            if isinstance(event, Failed):
                raise event.error
            if isinstance(event, Finished):
                state.metrics.tokens.labels(model.ref).inc(event.output.tokens)
                outputs[event.index] = event.output
    finally:
        run.ticket.cancel()
    candidates = [outputs[i] for i in sorted(outputs)]
    picked = await run_in_threadpool(model.rank, treq, candidates, reward)
    choices = []
    for index, (out, ranking) in enumerate(picked):
        out = await run_in_threadpool(model.moderated, out, run.prompt_safety.get(out.prompt),
                                      run.moderator)
        record = await run_in_threadpool(model.record, treq, out, extra, caller.owner, ranking)
        choices.append(_choice(model, Finished(index, out), record.id, False, echo, treq))
    completion = sum(c.tokens for c in candidates)
    usage = CompletionUsage(prompt_tokens=run.ticket.prompt_tokens, completion_tokens=completion,
                            total_tokens=run.ticket.prompt_tokens + completion)
    reply = Completion(id=rid, created=created, model=model.ref, usage=usage, choices=choices)
    return 200, reply.model_dump(mode="json")


async def _beams(state: ServerState, caller: Any, model: TextModel, treq: TextRequest,
                 extra: dict[str, Any], rid: str, created: int,
                 echo: bool) -> tuple[int, dict[str, Any]]:
    """Beam search (``num_beams`` > 1): not stepped by the batcher (its beams are one search, not
    independent sequences) but by the service, as the CLI and Python face run it; each prompt's
    best beam is recorded and returned, moderated as the batcher's are."""
    checked = await run_in_threadpool(_checked, model, treq, extra)
    treq, extra = checked.request, checked.extra
    outputs = await run_in_threadpool(model.search, treq)
    choices = []
    for index, out in enumerate(outputs):
        state.metrics.tokens.labels(model.ref).inc(out.tokens)
        out = await run_in_threadpool(model.moderated, out, checked.prompt_safety.get(out.prompt),
                                      checked.moderator)
        record = await run_in_threadpool(model.record, treq, out, extra, caller.owner)
        choices.append(_choice(model, Finished(index, out), record.id, False, echo, treq))
    prompt_tokens = sum(len(model.tokenizer.encode(treq.model_prompt(p))) for p in treq.prompts)
    completion = sum(out.tokens for out in outputs)
    usage = CompletionUsage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                            total_tokens=prompt_tokens + completion)
    reply = Completion(id=rid, created=created, model=model.ref, usage=usage, choices=choices)
    return 200, reply.model_dump(mode="json")


def _choice(model: TextModel, event: Finished, gid: str, chat: bool,
            echo: bool, request: TextRequest) -> CompletionChoice | ChatCompletionChoice:
    """A finished choice of a plain (not streamed) answer, with its logprobs if asked for and
    the facts it was given if grounded."""
    out, tok = event.output, model.tokenizer
    grounded = _choice_grounding(request, out.prompt)
    if chat:
        logprobs = None if out.logprobs is None else compat.chat_logprobs(tok, out.logprobs)
        return ChatCompletionChoice.model_validate({
            "index": event.index, "finish_reason": out.finish_reason, "generation_id": gid,
            "message": ChatCompletionMessage(content=out.text), "logprobs": logprobs, **grounded})
    legacy = (None if out.logprobs is None
              else compat.completion_logprobs(tok, out.logprobs, [], len(out.prompt)))
    return CompletionChoice.model_validate({
        "index": event.index, "text": out.prompt + out.text if echo else out.text,
        "finish_reason": out.finish_reason, "generation_id": gid, "logprobs": legacy, **grounded})


KEEPALIVE = object()  # queued by the timer when no event came for keepalive_s


async def _keepalive(run: _Run, every_s: float) -> None:
    """Queue a KEEPALIVE whenever the stream has sent nothing for ``every_s``."""
    while True:
        await asyncio.sleep(max(0.0, run.last_sent + every_s - time.monotonic()))
        if time.monotonic() - run.last_sent >= every_s and run.events.empty():
            run.events.put_nowait(KEEPALIVE)
            run.last_sent = time.monotonic()


def _coalesced(first: Event, queue: asyncio.Queue) -> list[Event]:
    """``first`` and whatever else is already queued, with consecutive pieces of one choice
    joined: when the event loop falls behind the decoder, it sends fewer, larger chunks."""
    events = [first]
    while not queue.empty():
        event = queue.get_nowait()
        last = events[-1]
        if event is KEEPALIVE:
            continue  # events are flowing: no need
        if isinstance(event, Piece) and isinstance(last, Piece) and last.index == event.index:
            events[-1] = Piece(event.index, last.text + event.text, last.logprobs + event.logprobs)
        else:
            events.append(event)
    return events


async def _stream(run: _Run, rid: str, created: int, kind: str, chat: bool, include_usage: bool,
                  keepalive_s: float, echo: bool = False) -> AsyncIterator[str]:
    """SSE chunks until every choice has finished, then ``[DONE]``; an error ends the stream
    with an error event. Cancelled (client gone): the ticket is cancelled in ``finally``.

    The chunks are built as plain dicts, once per piece of text: ``CompletionChunk`` and
    ``ChatCompletionChunk`` are their schema (tests/serving/test_openapi.py holds them to it)."""
    chunk_kind = "chat.completion.chunk" if chat else "text_completion"
    model = run.model.ref

    def chunk(index: int, text: str | None, finish: str | None = None, **extra: Any) -> str:
        if chat:
            delta: dict[str, Any] = {} if text is None else {"content": text}
            choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        choice.update(extra)
        return _sse({"id": rid, "object": chunk_kind, "created": created, "model": model,
                     "choices": [choice]})

    logprobs = _StreamLogprobs(run, chat)
    guards = _Guards(run)
    finished, completion = 0, 0
    # a timer rather than a timeout on every get(): asyncio.wait_for costs a task per token
    keepalive = asyncio.create_task(_keepalive(run, keepalive_s))
    try:
        if chat:
            for i in range(run.ticket.choices):
                yield _sse({"id": rid, "object": chunk_kind, "created": created, "model": model,
                            "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None}]})
        elif echo:  # each choice's prompt first (choice i: prompt i // n)
            prompts = run.request.prompts
            for i in range(run.ticket.choices):
                yield chunk(i, prompts[i // run.request.num_samples])
        while finished < run.ticket.choices:
            first = await run.events.get()
            run.last_sent = time.monotonic()
            for event in _coalesced(first, run.events):
                if event is KEEPALIVE:
                    yield ": keep-alive\n\n"
                elif isinstance(event, Piece):
                    if text := guards.feed(event.index, event.text):
                        yield chunk(event.index, text, **({} if guards.active else
                                                          logprobs.of(event.index, event.logprobs)))
                elif isinstance(event, Finished):
                    tail = guards.finish(event.index, event.output.text)  # before finish redacts
                    gid = await run.finish(event)
                    finished += 1
                    completion += event.output.tokens
                    if tail:
                        yield chunk(event.index, tail)
                    rest = logprobs.rest(event.index, event.output.logprobs)
                    grounded = _choice_grounding(run.request, event.output.prompt)
                    yield chunk(event.index, None, event.output.finish_reason, generation_id=gid,
                                **rest, **{k: v.model_dump(mode="json") for k, v in grounded.items()})
                else:
                    yield _sse(_error_payload(event.error))
                    return
        if include_usage:
            yield _sse({"id": rid, "object": chunk_kind, "created": created, "model": model,
                        "choices": [], "usage": {"prompt_tokens": run.ticket.prompt_tokens,
                                                 "completion_tokens": completion,
                                                 "total_tokens": run.ticket.prompt_tokens + completion}})
        yield _sse("[DONE]")
    except Exception as e:  # recording failed: tell the client, never leave it hanging
        yield _sse(_error_payload(e))
    finally:
        keepalive.cancel()
        run.ticket.cancel()


# The JSON answer is the model; "stream": true answers the event stream of its chunks instead.
@router.post("/completions", summary="Complete text (OpenAI-compatible)", response_model=Completion,
             responses={200: {"headers": IDEMPOTENT_REPLAYED, "content": event_stream(CompletionChunk)}})
async def completions(body: CompletionBody, state: StateDep, caller: WriterDep,
                      request: Request) -> Response:
    return await _respond(state, caller, request, body, chat=False)


@router.post("/chat/completions", summary="Chat (OpenAI-compatible), via the model's chat template",
             response_model=ChatCompletion,
             responses={200: {"headers": IDEMPOTENT_REPLAYED,
                              "content": event_stream(ChatCompletionChunk)}})
async def chat_completions(body: ChatBody, state: StateDep, caller: WriterDep,
                           request: Request) -> Response:
    # a captioner answers an image content part with its caption (serving/captions.py)
    if (answered := await vision_chat(state, caller, request, body)) is not None:
        return answered
    return await _respond(state, caller, request, body, chat=True)


class _StreamLogprobs:
    """The logprobs of each streamed chunk: those of the tokens the chunk's piece came from, and
    on a choice's last chunk those not sent yet (tokens whose text a stop string cut)."""

    def __init__(self, run: _Run, chat: bool):
        self.tokenizer, self.chat = run.model.tokenizer, chat
        self.asked = run.request.logprobs is not None
        prompts = run.request.prompts
        self.offsets = [len(prompts[i // run.request.num_samples])
                        for i in range(run.ticket.choices)]
        self.sent: dict[int, list[int]] = {}  # choice → token ids whose logprobs were sent

    def of(self, index: int, entries: list) -> dict[str, Any]:
        if not self.asked:
            return {}
        before = self.sent.setdefault(index, [])
        if self.chat:
            out = compat.chat_logprobs(self.tokenizer, entries)
        else:
            out = compat.completion_logprobs(self.tokenizer, entries, before, self.offsets[index])
        before.extend(e.token for e in entries)
        return {"logprobs": out}

    def rest(self, index: int, entries: list | None) -> dict[str, Any]:
        if not self.asked or entries is None:
            return {}
        return self.of(index, entries[len(self.sent.get(index, [])):])


class _Guards:
    """Each streamed choice's moderation hold-back (``safety.stream``): text leaves only once
    checked, and a choice that trips a blocking rule sends nothing more. With moderation on,
    logprobs come with a choice's last chunk (they name the tokens of text still held back)."""

    def __init__(self, run: _Run):
        self.moderator = run.moderator
        self.active = run.moderator.policy.active
        self.guards: dict[int, StreamGuard] = {}

    def feed(self, index: int, text: str) -> str:
        if not self.active:
            return text
        return self.guards.setdefault(index, StreamGuard(self.moderator)).feed(text)

    def finish(self, index: int, text: str) -> str:
        if not self.active:
            return ""
        return self.guards.setdefault(index, StreamGuard(self.moderator)).finish(text)[0]
