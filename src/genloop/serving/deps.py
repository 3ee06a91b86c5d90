"""What every route depends on, as ``Annotated`` aliases (tests override them): the server's
state, the authenticated caller (with its rate limit), and idempotent execution of writes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from genloop.errors import Conflict, InvalidInput
from genloop.generation.batching import Busy
from genloop.serving.auth import ANONYMOUS, Caller, RateLimiter, Unauthorized, key_from_header
from genloop.serving.metrics import Metrics
from genloop.serving.settings import ServeConfig
from genloop.store import Store


class ImageGate:
    """Admission for image requests: ``slots`` at once, ``queue`` more waiting, then 503."""

    def __init__(self, slots: int, queue: int):
        self.slots, self.queue = slots, queue
        self._sem = asyncio.Semaphore(slots)
        self.waiting = 0

    async def __aenter__(self) -> None:
        if self._sem.locked() and self.waiting >= self.queue:
            raise Busy(f"image generation busy: {self.slots} running and {self.waiting} waiting; "
                       "retry later", retry_after=5)
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1

    async def __aexit__(self, *exc: object) -> None:
        self._sem.release()


@dataclass
class ServerState:
    config: ServeConfig
    store: Store
    metrics: Metrics = field(default_factory=Metrics)
    limiter: RateLimiter = None  # type: ignore[assignment]
    images: ImageGate = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.limiter = self.limiter or RateLimiter(self.config.rate_limit)
        self.images = self.images or ImageGate(self.config.image_slots, self.config.image_queue)


def get_state(request: Request) -> ServerState:
    return request.app.state.genloop


StateDep = Annotated[ServerState, Depends(get_state)]


def get_caller(request: Request, state: StateDep) -> Caller:
    """The key's owner, or 401; then one token of its rate limit, or 429."""
    if not state.config.auth:
        caller = ANONYMOUS
    else:
        secret = key_from_header(request.headers.get("authorization"))
        if secret is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' "
                               "(create one with 'genloop keys create NAME')")
        record = state.store.verify_key(secret)
        if record is None:
            raise Unauthorized("invalid or revoked API key")
        caller = Caller(record.id, record.name, record.owner, record.scope)
    state.limiter.take(caller.scope)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_writer(caller: CallerDep) -> Caller:
    """The caller, if its key's scope lets it generate and rate (else 403)."""
    caller.require_generate()
    return caller


WriterDep = Annotated[Caller, Depends(get_writer)]


def request_hash(route: str, body: Any) -> str:
    """Identity of a write for idempotency: its route and its body, canonically serialized."""
    data = body.model_dump(mode="json", by_alias=True) if hasattr(body, "model_dump") else body
    canon = json.dumps({"route": route, "body": data}, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidInput("Idempotency-Key: give 1 to 255 characters")
    return key


def replay(record: Any, digest: str) -> JSONResponse:
    """The stored response of a finished write with the same key, or 409."""
    if record.request_hash != digest:
        raise Conflict("Idempotency-Key was already used with a different request body")
    if record.status != "done":
        raise Conflict("a request with this Idempotency-Key is still in progress; retry later")
    return JSONResponse(record.response, status_code=record.response_status,
                        headers={"Idempotent-Replayed": "true"})


async def run_idempotent(state: ServerState, caller: Caller, request: Request, body: Any,
                         work: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]) -> JSONResponse:
    """Do ``work`` once per Idempotency-Key: a repeat gets the stored response.

    The key is claimed (a pending row) before the work and finished with the response after;
    if the work fails the claim is released so the client can retry.
    """
    key = idempotency_key(request)
    if key is None:
        status, payload = await work()
        return JSONResponse(payload, status_code=status)
    digest = request_hash(request.url.path, body)
    earlier = await run_in_threadpool(state.store.claim_idempotency, caller.scope, key, digest)
    if earlier is not None:
        return replay(earlier, digest)
    try:
        status, payload = await work()
    except BaseException:
        await run_in_threadpool(state.store.release_idempotency, caller.scope, key)
        raise
    await run_in_threadpool(state.store.finish_idempotency, caller.scope, key, status, payload)
    return JSONResponse(payload, status_code=status)
