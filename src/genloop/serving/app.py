"""The HTTP face: ``create_app`` assembles the routers, the error mapping and three small ASGI
middlewares (per-route metrics, a body-size limit, and inside both the catch-all for bugs).
``genloop serve`` runs it with uvicorn.

Every error leaves as OpenAI's error object with the status its client expects (docs/api.md):
``GenloopError`` subclasses carry their status; FastAPI's validation errors become 400 naming
the field; 401 responses invite the browser to ask for the key (HTTP Basic) unless it was sent
as a Bearer token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genloop.errors import GenloopError, readable_errors
from genloop.safety.moderator import workspace_moderator
from genloop.serving.auth import challenge
from genloop.serving.deps import ServerState
from genloop.serving.routers import (
    embeddings,
    feedback,
    files,
    fine_tuning,
    generations,
    images,
    models,
    moderations,
    system,
    text,
)
from genloop.serving.settings import ServeConfig
from genloop.store import Store
from genloop.version import __version__

log = logging.getLogger("genloop.serving")

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
               413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
               503: "overloaded_error"}


def error_response(status: int, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}},
                        status_code=status, headers=headers)


def validation_response(errors: Sequence[Any]) -> JSONResponse:
    """400 naming the fields at fault in words; ``param`` is the first, or null for the body as
    a whole (not JSON, not an object, missing)."""
    found: list[tuple[str, str]] = []
    rest = []
    for e in errors:
        if e["type"] == "json_invalid":  # FastAPI: loc ('body', position)
            reason = (e.get("ctx") or {}).get("error")
            found.append(("", "not valid JSON" + (f" ({reason})" if reason else "")))
        elif e["type"] == "missing" and tuple(e["loc"]) == ("body",):
            found.append(("", "a JSON object is required"))
        else:
            rest.append(e)
    found += readable_errors(rest, skip=("body",))
    message = "; ".join(f"{loc or 'body'}: {msg}" for loc, msg in found)
    return error_response(400, message, param=(found[0][0] or None) if found else None)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GenloopError)
    async def genloop_error(request: Request, exc: GenloopError) -> JSONResponse:
        headers: dict[str, str] = {}
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, round(retry_after)))
            request.app.state.genloop.metrics.rejected.labels(str(exc.http_status)).inc()
        if exc.http_status == 401:
            headers["WWW-Authenticate"] = challenge(request.headers.get("authorization"))
        if exc.http_status >= 500 and retry_after is None:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(exc.http_status, str(exc), param=getattr(exc, "param", None),
                              headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        # reached only by a failure in the middlewares; the routes' bugs are answered by Crashes
        return bug_response(request.method, request.url.path, exc)


def bug_response(method: str, path: str, exc: BaseException) -> JSONResponse:
    log.error("unhandled error in %s %s", method, path, exc_info=exc)
    return error_response(500, f"internal error ({type(exc).__name__}); see the server log")


class Crashes:
    """500 for an exception no handler took, answered inside the metrics (Starlette's own
    catch-all sits outside every middleware, so its 500s were never counted). A response that
    has started cannot be replaced: the error is logged and the connection closed."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            await bug_response(scope["method"], scope["path"], exc)(scope, receive, send)


class BodyLimit:
    """413 for a body over ``limit`` bytes, by its Content-Length or by counting what arrives.

    The body is read here, before the app (a chunked body has no length to check): an error
    raised while the app reads it would become FastAPI's 400 "error parsing the body". The app
    then receives it in one message, and what follows (the client's disconnect) as it comes.
    Uploads (``streamed``: method and path) are left to their route, which counts them against
    their own limit as they stream in (``routers/files.py``)."""

    def __init__(self, app: ASGIApp, limit: int, streamed: tuple[tuple[str, str], ...] = ()):
        self.app, self.limit, self.streamed = app, limit, streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.streamed:
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = f"request body is larger than the limit of {self.limit} bytes"
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await error_response(413, too_big)(scope, receive, send)
        body, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return await error_response(413, too_big)(scope, receive, send)
            body.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(body), "more_body": False}

        async def replayed() -> Message:
            nonlocal whole
            if whole is None:
                return await receive()
            message, whole = whole, None
            return message

        await self.app(scope, replayed, send)


class RequestMetrics:
    """Count every response by route template and status; time to its headers."""

    def __init__(self, app: ASGIApp, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                m = self.state.metrics
                m.requests.labels(scope["method"], path, str(message["status"])).inc()
                m.latency.labels(path).observe(time.perf_counter() - t0)
            await send(message)

        await self.app(scope, receive, observed)


def create_app(config: ServeConfig | None = None, store: Store | None = None) -> FastAPI:
    """The API and studio for the workspace's store (``store``: tests pass their own)."""
    config = config or ServeConfig()
    state = ServerState(config, store or Store())
    # the moderation policy is checked before serving: a bad file refuses to start (one line)
    workspace_moderator(state.store).preload()
    app = FastAPI(
        title="genloop", version=__version__,
        description="OpenAI-compatible API for the models of a genloop workspace (docs/api.md).",
        openapi_url=None, docs_url=None, redoc_url=None,  # served by system.router, behind the key
    )
    app.state.genloop = state
    _install_error_handlers(app)
    app.include_router(system.public)
    for router in (models.router, text.router, images.router, generations.router, feedback.router,
                   files.router, fine_tuning.router, embeddings.router, moderations.router,
                   system.router):
        app.include_router(router)
    # added innermost first: the metrics count every answer (the body limit's 413s and the
    # catch-all's 500s too); the body limit reads the raw request before anything else does
    app.add_middleware(Crashes)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes, streamed=(("POST", "/v1/files"),))
    app.add_middleware(RequestMetrics, state=state)
    return app


def run(config: ServeConfig, log_level: str = "info", **uvicorn_options: Any) -> None:
    """Serve until interrupted (``genloop serve``)."""
    import torch
    import uvicorn

    torch.set_num_threads(config.threads)
    if not config.auth:
        log.warning("AUTH IS OFF: anyone who can reach %s:%d can use every model and read every "
                    "generation", config.host, config.port)
    # keep idle connections longer than clients' own pools do (httpx, openai: 5 s), so a client
    # never sends on a connection the server is closing at that moment
    uvicorn_options.setdefault("timeout_keep_alive", 30)
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level=log_level,
                **uvicorn_options)
