"""The HTTP face: ``create_app`` assembles the routers, the error mapping and two small ASGI
middlewares (a body-size limit and per-route metrics). ``genloop serve`` runs it with uvicorn.

Every error leaves as OpenAI's error object with the status its client expects (docs/api.md):
``GenloopError`` subclasses carry their status; FastAPI's validation errors become 400 naming
the field; 401 responses invite the browser to ask for the key (HTTP Basic) when none was sent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genloop.errors import GenloopError
from genloop.serving.deps import ServerState
from genloop.serving.routers import generations, images, models, system, text
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


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GenloopError)
    async def genloop_error(request: Request, exc: GenloopError) -> JSONResponse:
        headers: dict[str, str] = {}
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, round(retry_after)))
            request.app.state.genloop.metrics.rejected.labels(str(exc.http_status)).inc()
        if exc.http_status == 401 and not request.headers.get("authorization"):
            headers["WWW-Authenticate"] = 'Basic realm="genloop", charset="UTF-8"'
        elif exc.http_status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if exc.http_status >= 500 and retry_after is None:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(exc.http_status, str(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        locs = [".".join(str(x) for x in e["loc"] if x != "body") for e in errors]
        parts = []
        for e, loc in zip(errors, locs, strict=True):
            msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
            parts.append(f"{loc or 'body'}: {msg}")
        return error_response(400, "; ".join(parts), param=locs[0] if locs else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")


class BodyLimit:
    """413 for a body over ``limit`` bytes, by its Content-Length or by counting what arrives."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = f"request body is larger than the limit of {self.limit} bytes"
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await error_response(413, too_big)(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(too_big)
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge as e:
            await error_response(413, str(e))(scope, receive, send)


class _TooLarge(GenloopError):
    http_status = 413


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
    app = FastAPI(
        title="genloop", version=__version__,
        description="OpenAI-compatible API for the models of a genloop workspace (docs/api.md).",
        openapi_url=None, docs_url=None, redoc_url=None,  # served by system.router, behind the key
    )
    app.state.genloop = state
    _install_error_handlers(app)
    app.include_router(system.public)
    for router in (models.router, text.router, images.router, generations.router, system.router):
        app.include_router(router)
    # outermost first: the body limit sees the raw request before anything reads it
    app.add_middleware(RequestMetrics, state=state)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
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
