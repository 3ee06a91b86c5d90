"""``POST /v1/images/generations``: OpenAI's image route on ``ImageModel.generate``.

Each image is a generation record, its pixels stored and recorded before the response names it;
its PNG (``b64_json``, or the ``url``: the configured ``public_url``, never the Host header) carries
that generation's own provenance in its text chunks and a signed C2PA manifest. The prompt may
name a class ("7", "sneaker"); the genloop extras ``class``, ``guidance_scale``, ``steps`` and
``sampler`` set the rest. A text-conditioned model (``text-diffusion``, ``text-gan``) draws what
its prompt says, any sentence: the words its tokenizer does not know are read as its unknown
token and named in the genloop extra ``unknown_words``. Concurrent requests to one model are
sampled together (``generation/image_batching.py``: one U-Net pass per step for all of them,
each image the one its seed draws alone); ``image_queue`` requests may wait, then 503.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from genloop.errors import InvalidInput
from genloop.generation.service import ImageModel, image_png, load, moderate_image_prompt
from genloop.serving.deps import StateDep, WriterDep, run_idempotent
from genloop.serving.schemas import IDEMPOTENT_REPLAYED, Image, ImageBody, ImagesResponse, errors

router = APIRouter(prefix="/v1", tags=["images"], responses=errors(400, 401, 403, 404, 409, 429, 503))


def _text_prompt(body: ImageBody, model: ImageModel) -> str:
    """A text-conditioned model's prompt: the sentence it draws (no class to pick)."""
    if body.class_ is not None:
        raise InvalidInput(f"class: model {model.ref} draws what a sentence says, it has no "
                           "classes: describe the image in prompt")
    if not body.prompt.strip():
        raise InvalidInput(f"prompt: empty: model {model.ref} draws what a sentence says "
                           "(e.g. 'a small red circle at the top left')")
    return body.prompt


def _class_of(body: ImageBody, model: ImageModel) -> int | str | None:
    """The extra ``class`` wins; else a prompt that names one of the model's classes."""
    if body.class_ is not None:
        return body.class_
    prompt = body.prompt.strip().lower()
    if prompt:
        for name in model.class_names:
            if name.lower() == prompt:
                return name
        if model.config.conditional:
            known = ", ".join(model.class_names[:20])
            raise InvalidInput(f"prompt: {body.prompt!r} is not a class of this model (classes: {known})")
    return None


@router.post("/images/generations", summary="Generate images (OpenAI-compatible)",
             response_model=ImagesResponse, responses={200: {"headers": IDEMPOTENT_REPLAYED}})
async def generate_images(body: ImageBody, state: StateDep, caller: WriterDep,
                          request: Request) -> Response:
    model = await run_in_threadpool(load, body.model, state.store, state.config.models_loaded)
    if not isinstance(model, ImageModel):
        raise InvalidInput(f"model {body.model!r} generates text: use /v1/completions")
    c = state.config
    if body.n > c.max_images:
        raise InvalidInput(f"n: at most {c.max_images} images on this server")
    if body.steps is not None and body.steps > c.max_image_steps:
        raise InvalidInput(f"steps: at most {c.max_image_steps} on this server")
    size = f"{model.config.image_size}x{model.config.image_size}"
    if body.size is not None and body.size != size:
        raise InvalidInput(f"size: this model draws {size} images, not {body.size}")
    await run_in_threadpool(moderate_image_prompt, body.prompt, state.store)  # blocked: 400
    text = model.family.reads == "prompt"
    params: dict[str, Any] = {"num_samples": body.n, "seed": body.seed, "sampler": body.sampler}
    if text:
        params["prompt"] = _text_prompt(body, model)
    else:
        params["class_label"] = _class_of(body, model)
    if body.guidance_scale is not None:
        params["guidance_scale"] = body.guidance_scale
    if body.steps is not None:
        params["steps"] = body.steps
    gen_request = model.request(**params)  # validated before waiting for a slot
    # concurrent requests to this model share its sampling runs; a full queue is Busy (503)
    model.batcher(max_batch=max(c.image_batch, c.max_images), max_queue=c.image_queue)

    async def work() -> tuple[int, dict[str, Any]]:
        result = await run_in_threadpool(model.generate, request=gen_request, owner=caller.owner,
                                         batched=True)
        state.metrics.images.labels(model.ref).inc(len(result.records))
        base = c.base_url()  # configured, never the request's Host header
        data = []
        for record in result.records:
            if body.response_format == "b64_json":  # signed now; a url's PNG when it is fetched
                png = await run_in_threadpool(image_png, record, state.store)
                file = {"b64_json": base64.b64encode(png).decode()}
            else:
                file = {"url": f"{base}/v1/generations/{record.id}/content"}
            if text:
                data.append(Image(revised_prompt=body.prompt, generation_id=record.id, class_=None,
                                  **file))
            else:
                data.append(Image(revised_prompt=record.output or "", generation_id=record.id,
                                  class_=record.output, **file))
        unknown = list(getattr(result.output, "unknown_words", None) or []) if text else None
        reply = ImagesResponse(created=int(time.time()), model=model.ref, data=data,
                               unknown_words=unknown)
        return 200, reply.model_dump(mode="json", by_alias=True, exclude_unset=True)

    return await run_idempotent(state, caller, request, body, work)
