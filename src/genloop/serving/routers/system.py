"""The service itself: ``/health`` (GET or HEAD; the only route without a key), ``/metrics`` for Prometheus,
and the studio's static files (``/`` and ``/studio/...``), which need the key like every other
route: the browser asks for it once (HTTP Basic, the key as password) and sends it after."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from genloop.errors import NotFound
from genloop.generation.decode_worker import decode_processes
from genloop.generation.service import loaded
from genloop.serving.deps import CallerDep, StateDep
from genloop.serving.schemas import Decoding, Health, errors
from genloop.version import __version__

STUDIO = Path(__file__).resolve().parent.parent / "studio"
MEDIA = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
         ".png": "image/png", ".ico": "image/x-icon"}

public = APIRouter(tags=["service"], responses=errors())
router = APIRouter(tags=["service"], responses=errors(401, 429))


@public.get("/health", summary="Liveness; the only route that needs no key")
async def health(state: StateDep) -> Health:
    return Health(version=__version__, auth=state.config.auth, decoding=[
        Decoding(model=p.ref, ready=p.ready.is_set(), restarts=p.restarts)
        for p in decode_processes() if p.store_url == state.store.url])


@public.head("/health", include_in_schema=False)
async def health_head() -> Response:
    """Liveness for probes that send HEAD: the status alone."""
    return Response(status_code=200)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {
                "type": "string", "description": "Prometheus text format 0.0.4"}}}}})
async def metrics(state: StateDep, caller: CallerDep) -> Response:
    state.metrics.loaded.set(len(await run_in_threadpool(loaded)))
    for proc in decode_processes():
        if proc.store_url == state.store.url:
            state.metrics.decode_restarts.labels(proc.ref).set(proc.restarts)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/openapi.json", summary="This API's OpenAPI document", include_in_schema=False)
async def openapi(request: Request, caller: CallerDep) -> JSONResponse:
    return JSONResponse(request.app.openapi())


def _studio_file(name: str) -> FileResponse:
    path = (STUDIO / name).resolve()
    if not path.is_relative_to(STUDIO) or not path.is_file() or path.suffix not in MEDIA:
        raise NotFound(f"no studio file {name!r}")
    return FileResponse(path, media_type=MEDIA[path.suffix],
                        headers={"Cache-Control": "no-cache",
                                 "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                 "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'"})


@router.get("/", summary="The studio", response_class=FileResponse, include_in_schema=False)
async def studio_index(caller: CallerDep) -> FileResponse:
    return _studio_file("index.html")


@router.get("/studio/{name:path}", summary="The studio's files", response_class=FileResponse,
            include_in_schema=False)
async def studio_file(name: str, caller: CallerDep) -> FileResponse:
    return _studio_file(name)
