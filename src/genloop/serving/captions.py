"""``POST /v1/chat/completions`` with an image: OpenAI's vision content parts on a captioner.

A chat whose model is a captioner (a family with ``conditioning="image"``) answers the image of
its last ``image_url`` part with its caption as the assistant's message: each of the ``n``
captions recorded (``CaptionModel.generate``) with the image it read, before the client is told
its ``generation_id``. OpenAI's names map onto the captioner's here: ``max_tokens`` →
``max_new_tokens``, ``n`` → ``num_samples``; ``temperature`` left out is the captioner's own
default (greedy), not chat's 1. An image sent to a model that reads text only is a 400 that says
so; the text model's chat goes on as before (``routers/text.py``).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from genloop.errors import InvalidInput
from genloop.generation.caption import input_pixels
from genloop.generation.chat import moderated_messages
from genloop.generation.service import CaptionModel, TextModel, load
from genloop.safety.moderator import workspace_moderator
from genloop.serving.deps import ServerState, run_idempotent
from genloop.serving.schemas import (
    ChatBody,
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionMessage,
    CompletionUsage,
)

# chat fields a captioner cannot honour: a 400 naming the field when one is set to anything else
_TEXT_ONLY: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False), "top_logprobs": (None,), "grounding": (None,),
    "frequency_penalty": (None, 0.0), "presence_penalty": (None, 0.0), "logit_bias": (None,),
    "stop": (None, []), "repetition_penalty": (1.0,), "response_format": (None, {"type": "text"})}


def _error(message: str, param: str | None = None) -> InvalidInput:
    error = InvalidInput(message)
    error.param = param  # type: ignore[attr-defined]  # the face's error object names it
    return error


def _image_of(body: ChatBody, ref: str) -> tuple[bytes, str]:
    """The image a captioner reads: the last image part of the messages, and where it was."""
    found = [(image, f"messages.{i}.content") for i, m in enumerate(body.messages)
             for image in m.images]
    if not found:
        raise _error(f"messages: model {ref} captions images: send one as an image_url content "
                     "part (a data: URL)", "messages")
    return found[-1]


def _decoded(image: bytes, where: str) -> Any:
    """The image's pixels; one that is not an image, truncated or too large is a 400 naming
    the message it came in."""
    try:
        return input_pixels(image)
    except InvalidInput as e:
        raise _error(f"{where}: {e}", where) from None


def _params(body: ChatBody, ref: str) -> dict[str, Any]:
    """The captioner's request, in its names, from the chat body's."""
    for name, allowed in _TEXT_ONLY.items():
        if getattr(body, name) not in allowed:
            raise _error(f"{name}: model {ref} is a captioner and does not support it", name)
    if body.stream:
        raise _error(f"stream: model {ref} is a captioner: its captions are not streamed", "stream")
    given = body.model_fields_set
    params: dict[str, Any] = {"num_samples": body.n, "seed": body.seed, "num_beams": body.num_beams}
    if "temperature" in given:
        params["temperature"] = body.temperature
    if given & {"max_tokens", "max_completion_tokens"}:
        params["max_new_tokens"] = body.max_completion_tokens or body.max_tokens
    if body.top_p < 1.0:
        params["top_p"] = body.top_p
    if body.top_k is not None:
        params["top_k"] = body.top_k
    return params


async def vision_chat(state: ServerState, caller: Any, request: Request,
                      body: ChatBody) -> Response | None:
    """A chat for a captioner, answered here; a text model's chat with an image part refused;
    None: a text model's plain chat, for the text route."""
    model = await run_in_threadpool(load, body.model, state.store, state.config.models_loaded)
    if not isinstance(model, CaptionModel):
        if isinstance(model, TextModel):
            for i, m in enumerate(body.messages):
                if m.images:
                    raise _error(f"messages.{i}.content: model {model.ref} reads text only, not "
                                 "images: send image_url parts to a captioner",
                                 f"messages.{i}.content")
            if body.num_beams > 1:
                raise _error(f"num_beams: chat with text model {model.ref} does not search "
                             "beams (/v1/completions does)", "num_beams")
        return None
    image, where = _image_of(body, model.ref)
    params = _params(body, model.ref)
    if body.n > state.config.max_n:
        raise _error(f"n: at most {state.config.max_n} on this server", "n")
    gen_request = model.request(**params)  # validated before the image is decoded
    pixels = await run_in_threadpool(_decoded, image, where)  # a bad one: a 400 naming it
    extra: dict[str, Any] = {"api": "chat",
                             "messages": [m.model_dump(exclude_none=True) for m in body.messages]}
    if body.user:
        extra["user"] = body.user
    # the messages' text is recorded: checked (and redacted) as a text chat's are
    extra = await run_in_threadpool(
        lambda: moderated_messages(workspace_moderator(state.store), extra))
    rid, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())

    async def work() -> tuple[int, dict[str, Any]]:
        async with state.images:  # a captioner runs a network on an image, as image models do
            captions = await run_in_threadpool(model.caption, pixels, gen_request, extra,
                                               caller.owner)
        choices, completion = [], 0
        for index, (out, record) in enumerate(captions):
            state.metrics.tokens.labels(model.ref).inc(out.tokens)
            completion += out.tokens
            choices.append(ChatCompletionChoice(
                index=index, message=ChatCompletionMessage(content=out.text),
                finish_reason=out.finish_reason, generation_id=record.id))
        usage = CompletionUsage(prompt_tokens=0, completion_tokens=completion,
                                total_tokens=completion)
        reply = ChatCompletion(id=rid, created=created, model=model.ref, usage=usage,
                               choices=choices)
        return 200, reply.model_dump(mode="json")

    return await run_idempotent(state, caller, request, _identity(body), work)


def _identity(body: ChatBody) -> dict[str, Any]:
    """What an Idempotency-Key stands for: the body, its images included (a message's dump holds
    its text only), so the same key with another image is a 409, not the first one's caption."""
    return {**body.model_dump(mode="json", by_alias=True), "images": [
        hashlib.sha256(image).hexdigest() for m in body.messages for image in m.images]}
