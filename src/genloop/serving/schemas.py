"""The HTTP bodies, in OpenAI's shapes (docs/api.md), with bounds. Unknown fields are refused.

Server limits that depend on ``ServeConfig`` (max_tokens, n, prompt length) are checked by the
routes; the bounds here are the ones no server could accept.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from genloop.errors import UnicodeText as Text
from genloop.errors import check_unicode
from genloop.generation.chat import ChatMessage


def _text(max_length: int) -> Any:
    """A bounded text field; the length is checked first, so its message stays the usual one."""
    return Annotated[str, Field(max_length=max_length), BeforeValidator(check_unicode)]


User = _text(256)
ImagePrompt = _text(1000)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Body):
    include_usage: bool = False


class _TextBody(_Body):
    model: str = Field(min_length=1, max_length=80, description="'name' (newest) or 'name@N'")
    max_tokens: int = Field(16, ge=1, le=1_000_000)
    temperature: float = Field(1.0, ge=0.0, le=5.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=64, description="choices; choice i is seeded with seed + i")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Text | list[Text] | None = Field(None, description="up to 4 stop strings")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="None = a fresh random seed")
    user: User | None = None
    top_k: int | None = Field(None, ge=1, le=1_000_000, description="genloop extra")
    repetition_penalty: float = Field(1.0, ge=1.0, le=10.0, description="genloop extra")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop strings")
        if any(not s or len(s) > 256 for s in stops):
            raise ValueError("stop strings must be 1 to 256 characters")
        return stops


class CompletionBody(_TextBody):
    prompt: Text | list[Text] = Field("", description="one prompt or a list of prompts")


class ChatBody(_TextBody):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)


class ImageBody(_Body):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(min_length=1, max_length=80)
    prompt: ImagePrompt = Field("", description="a class name of the model picks the class")
    n: int = Field(1, ge=1, le=64)
    size: str | None = Field(None, pattern=r"^\d{1,5}x\d{1,5}$", description="'WxH', the model's size")
    response_format: Literal["url", "b64_json"] = "url"
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    user: User | None = None
    class_: int | Text | None = Field(None, alias="class", description="genloop extra: class name or index")
    guidance: float | None = Field(None, ge=0.0, le=20.0, description="genloop extra")
    steps: int | None = Field(None, ge=1, le=1000, description="genloop extra")
    sampler: Literal["ddim", "ddpm"] = "ddim"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "genloop"
    name: str
    version: int
    family: str
    modality: Literal["text", "image"]
    generative: bool = True  # False: a feature classifier behind FID, not a generator
    latest: bool
    metrics: dict[str, Any]
    classes: list[str] | None = None
    image_size: int | None = None
    chat_template: dict[str, Any] | None = None
    card: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class FeedbackObject(BaseModel):
    id: str
    object: Literal["feedback"] = "feedback"
    kind: str
    generation_id: str
    other_generation_id: str | None
    value: int
    comment: str | None
    created: int


class GenerationObject(BaseModel):
    id: str
    object: Literal["generation"] = "generation"
    model: str
    kind: str
    request: dict[str, Any]
    seed: int
    output: str | None
    content_hash: str
    timings: dict[str, Any]
    created: int
    url: str | None = None
    feedback: list[FeedbackObject] = Field(default_factory=list)


class GenerationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[GenerationObject]
    has_more: bool
