"""Records and feedback: ``/v1/generations`` (list, one, its content, the image a caption read,
its signed provenance),
ratings and thumbs on a generation, and preferences between two. Feedback writes are idempotent
in one transaction with their ``Idempotency-Key`` record (``genloop.feedback``)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from genloop.feedback.collect import PreferenceIn, RatingIn, record_feedback, record_preference
from genloop.generation.provenance import signed_record
from genloop.generation.service import image_png
from genloop.safety.provenance import SignedRecord
from genloop.serving.deps import CallerDep, StateDep, WriterDep, get_state, idempotency_key, request_hash
from genloop.serving.schemas import (
    IDEMPOTENT_REPLAYED,
    ErrorResponse,
    FeedbackObject,
    GenerationList,
    GenerationObject,
    errors,
)
from genloop.store import GenerationRecord

router = APIRouter(prefix="/v1", tags=["generations"], responses=errors(400, 401, 403, 404, 429))

GENERATION_ID = r"^[0-9a-f]{1,64}$"
GenerationId = Annotated[str, Path(pattern=GENERATION_ID, description="a generation's id")]


# a write takes an Idempotency-Key: 409 for one reused with another body or still in flight
WRITE: dict[int | str, dict] = {201: {"headers": IDEMPOTENT_REPLAYED}, 409: {"model": ErrorResponse}}


def feedback_object(f) -> FeedbackObject:  # noqa: ANN001 - a store FeedbackRecord
    return FeedbackObject(id=f.id, kind=f.kind, generation_id=f.generation_id,
                          other_generation_id=f.other_generation_id, value=f.value,
                          comment=f.comment, created=int(f.created_at.timestamp()))


def generation_object(g: GenerationRecord, base_url: str, feedback: list | None = None) -> GenerationObject:
    return GenerationObject(
        id=g.id, model=g.model, kind=g.kind, request=g.request, seed=g.seed, output=g.output,
        content_hash=g.content_hash, timings=g.timings, created=int(g.created_at.timestamp()),
        safety=g.safety,
        url=f"{base_url}/v1/generations/{g.id}/content" if g.file else None,
        feedback=[feedback_object(f) for f in feedback or []],
    )


def _base(request: Request) -> str:
    """What content URLs start with: the server's configured base URL, never the Host header."""
    return get_state(request).config.base_url()


@router.get("/generations", summary="Generations, newest first")
async def list_generations(
    state: StateDep, caller: CallerDep, request: Request,
    limit: int = Query(50, ge=1, le=500),
    before: str | None = Query(None, pattern=GENERATION_ID, description="page after this id"),
    model: str | None = Query(None, max_length=80),
    kind: Literal["text", "image"] | None = None,
) -> GenerationList:
    def page() -> GenerationList:
        mine = caller.visible_to
        rows = state.store.list_generations(model, limit=limit + 1, before=before, kind=kind,
                                            visible_to=mine)
        feedback = state.store.feedback_for([g.id for g in rows[:limit]], visible_to=mine)
        return GenerationList(
            data=[generation_object(g, _base(request), feedback.get(g.id)) for g in rows[:limit]],
            has_more=len(rows) > limit)

    return await run_in_threadpool(page)


@router.get("/generations/{generation_id}", summary="One generation: request, seed, output, feedback")
async def get_generation(generation_id: GenerationId, state: StateDep, caller: CallerDep,
                         request: Request) -> GenerationObject:
    def one() -> GenerationObject:
        g = state.store.get_generation(generation_id, visible_to=caller.visible_to)
        return generation_object(g, _base(request), state.store.list_feedback(
            generation_id=g.id, visible_to=caller.visible_to))

    return await run_in_threadpool(one)


@router.get("/generations/{generation_id}/content", summary="The text, or the PNG with provenance",
            response_class=Response,
            responses={200: {"content": {
                "text/plain": {"schema": {"type": "string", "description": "a text generation"}},
                "image/png": {"schema": {"type": "string", "format": "binary",
                                         "description": "an image, its provenance in text chunks"}}}}})
async def get_content(generation_id: GenerationId, state: StateDep, caller: CallerDep) -> Response:
    g = await run_in_threadpool(state.store.get_generation, generation_id, caller.visible_to)
    if g.file is None:
        return PlainTextResponse(g.output or "")
    # the stored pixels (shared by every generation that drew them) with this one's provenance
    png = await run_in_threadpool(image_png, g, state.store)
    return Response(png, media_type="image/png",
                    headers={"Content-Disposition": f'attachment; filename="{g.id}.png"'})


def input_png(g: GenerationRecord) -> bytes:
    """The image a caption generation read (its request's ``image``, stored once by content
    like every image), as a PNG; a 400 for a generation that read none."""
    from genloop.errors import InvalidInput
    from genloop.generation.caption import stored_input
    from genloop.generation.image import png_bytes

    image = (g.request or {}).get("image")
    digest = image.get("content_hash") if isinstance(image, dict) else None
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InvalidInput(f"generation {g.id!r} read no image (a captioner's generations do)")
    return png_bytes(stored_input(digest))


@router.get("/generations/{generation_id}/input", summary="The image a caption generation read",
            response_class=Response,
            responses={200: {"content": {"image/png": {"schema": {
                "type": "string", "format": "binary",
                "description": "the image as it was read, by its content hash"}}}}})
async def get_input(generation_id: GenerationId, state: StateDep, caller: CallerDep) -> Response:
    g = await run_in_threadpool(state.store.get_generation, generation_id, caller.visible_to)
    return Response(await run_in_threadpool(input_png, g), media_type="image/png")


@router.get("/generations/{generation_id}/provenance",
            summary="The generation's record as signed when it was made (ES256, with its CA chain)")
async def get_provenance(generation_id: GenerationId, state: StateDep,
                         caller: CallerDep) -> SignedRecord:
    """Its model, seed, request hash, dataset hash, content hash, id and time, signed by the
    workspace as it was recorded (``"signed": "at generation"``; a generation made before
    generation-time signing is signed now: ``"on request"``); a third party checks it with
    ``genloop verify FILE --trust CA.pem``."""
    def signed() -> SignedRecord:
        g = state.store.get_generation(generation_id, visible_to=caller.visible_to)
        return signed_record(g, state.store)

    return await run_in_threadpool(signed)


async def _write_feedback(state: StateDep, caller: CallerDep, request: Request, response: Response,
                          body, write) -> FeedbackObject:  # noqa: ANN001
    key = idempotency_key(request)
    idem = (caller.scope, key, request_hash(request.url.path, body)) if key else None
    record, replayed = await run_in_threadpool(write, idem)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return feedback_object(record)


@router.post("/generations/{generation_id}/feedback", status_code=201,
             summary="Rate a generation 1–5, or thumbs up/down",
             responses=WRITE)
async def add_feedback(generation_id: GenerationId, body: RatingIn, state: StateDep, caller: WriterDep,
                       request: Request, response: Response) -> FeedbackObject:
    return await _write_feedback(
        state, caller, request, response, body,
        lambda idem: record_feedback(state.store, generation_id, body, caller.key_id, idem,
                                     owner=caller.owner, visible_to=caller.visible_to))


@router.post("/preferences", status_code=201, summary="Prefer one generation over another",
             responses=WRITE)
async def add_preference(body: PreferenceIn, state: StateDep, caller: WriterDep,
                         request: Request, response: Response) -> FeedbackObject:
    return await _write_feedback(
        state, caller, request, response, body,
        lambda idem: record_preference(state.store, body, caller.key_id, idem,
                                       owner=caller.owner, visible_to=caller.visible_to))
