"""``POST /v1/embeddings``: OpenAI's embeddings route on a registered embedder.

``input`` is one text or a list of texts (token arrays are refused: an embedder's token ids are
its own tokenizer's business); ``encoding_format`` ``float`` gives lists of numbers, ``base64``
the little-endian float32 bytes (what the official client asks for unless told otherwise);
``dimensions`` is accepted only when it equals the model's width (these encoders were not
trained to be cut). A text-generating model here is a 400, as an embedder is on the completion
routes. Nothing is recorded: an embedding is a pure function of the version and the text.
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal, cast

import numpy as np
from fastapi import APIRouter
from pydantic import BeforeValidator, Field
from starlette.concurrency import run_in_threadpool

from genloop.errors import InvalidInput, check_unicode
from genloop.generation.embeddings import Embeddings, embed_texts, load_embedder
from genloop.models.embedder import EmbedderConfig
from genloop.serving.deps import StateDep, WriterDep
from genloop.serving.schemas import User, _Body, _Reply, errors

router = APIRouter(prefix="/v1", tags=["embeddings"], responses=errors(400, 401, 403, 404, 429))

MAX_INPUTS = 2048  # OpenAI's limit on the texts of one request

EmbeddingText = Annotated[str, Field(min_length=1), BeforeValidator(check_unicode)]


class EmbeddingBody(_Body):
    model: str = Field(min_length=1, max_length=80, description="'name' (newest) or 'name@N'")
    input: EmbeddingText | Annotated[list[EmbeddingText], Field(min_length=1, max_length=MAX_INPUTS)] = \
        Field(description="a text, or a list of up to 2048 texts; none empty")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: each vector as its little-endian float32 bytes")
    dimensions: int | None = Field(None, ge=1, description="must equal the model's width")
    user: User | None = None


class Embedding(_Reply):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(_Reply):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Reply):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


def _encoded(vector: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def reply(result: Embeddings, fmt: str) -> EmbeddingList:
    return EmbeddingList(
        data=[Embedding(index=i, embedding=_encoded(v, fmt)) for i, v in enumerate(result.vectors)],
        model=result.model, usage=EmbeddingUsage(prompt_tokens=result.tokens,
                                                 total_tokens=result.tokens))


@router.post("/embeddings", summary="Embed texts (OpenAI-compatible)", response_model=EmbeddingList)
async def create_embeddings(body: EmbeddingBody, state: StateDep, caller: WriterDep) -> EmbeddingList:
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    model = await run_in_threadpool(load_embedder, body.model, state.store, state.config.models_loaded)
    width = cast(EmbedderConfig, model.config).width
    if body.dimensions is not None and body.dimensions != width:
        raise InvalidInput(f"dimensions: {model.ref} gives {width}-dimensional embeddings and cannot "
                           f"shorten them (give {width} or leave it out)")
    result = await run_in_threadpool(embed_texts, model, texts)
    return reply(result, body.encoding_format)
