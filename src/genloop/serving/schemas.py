"""The HTTP bodies, in OpenAI's shapes (docs/api.md), with bounds. Unknown fields are refused.

Server limits that depend on ``ServeConfig`` (max_tokens, n, prompt length) are checked by the
routes; the bounds here are the ones no server could accept.

The responses are typed here too, so ``/openapi.json`` names the schema of every answer: the
JSON objects, the chunks of an event stream (``event_stream``) and the error object of every
other status (``errors``).
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from genloop.errors import UnicodeText as Text
from genloop.errors import check_unicode
from genloop.generation.chat import ChatMessage, unsupported
from genloop.generation.fewshot import FewShot
from genloop.generation.grounding import Fact, Grounding
from genloop.generation.text import MAX_TOP_LOGPROBS, SEED_MAX, Bias
from genloop.generation.text import check_choice_seeds as core_check_choice_seeds

# Bounded text fields; the length is checked first, so its message stays the usual one.
# (Spelled out, not built by a function: a type checker reads only literal aliases as types.)
User = Annotated[str, Field(max_length=256), BeforeValidator(check_unicode)]
ImagePrompt = Annotated[str, Field(max_length=1000), BeforeValidator(check_unicode)]
# Numbers are JSON numbers: true, false and "42" are refused (pydantic's lax mode took them);
# an integer is still a number where a float is asked.
Int = Annotated[int, Strict()]
Number = Annotated[float, Strict()]



def check_choice_seeds(seed: int | None, choices: int) -> None:
    """The core's rule (``generation.text.check_choice_seeds``: choice i is seeded seed + i, never
    wrapped past 2^63 − 1), as an error that names ``seed``."""
    try:
        core_check_choice_seeds(seed, choices)
    except ValueError as e:
        raise PydanticCustomError("seed_range", str(e), {"param": "seed"}) from None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Body):
    include_usage: bool = False


TokenId = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
TokenKey = Annotated[int, Field(ge=0, le=2**31 - 1)]  # a JSON object's key: "123"
NOT_SUPPORTED = "not supported: any value but null (or the default) is a 400"


class _TextBody(_Body):
    model: str = Field(min_length=1, max_length=80, description="'name' (newest) or 'name@N'")
    max_tokens: Int = Field(16, ge=1, le=1_000_000)
    temperature: Number = Field(1.0, ge=0.0, le=5.0, description="0 = greedy")
    top_p: Number = Field(1.0, gt=0.0, le=1.0)
    n: Int = Field(1, ge=1, le=64, description="choices; choice i is seeded with seed + i")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Text | list[Text] | None = Field(None, description="up to 4 stop strings")
    seed: Int | None = Field(None, ge=0, le=SEED_MAX, description="None = a fresh random seed")
    user: User | None = None
    top_k: Int | None = Field(None, ge=1, le=1_000_000, description="genloop extra")
    repetition_penalty: Number = Field(1.0, ge=1.0, le=10.0, description="genloop extra")
    frequency_penalty: Number | None = Field(
        None, ge=-2.0, le=2.0, description="subtracted once per time a token was generated so far")
    presence_penalty: Number | None = Field(
        None, ge=-2.0, le=2.0, description="subtracted once from every token generated so far")
    logit_bias: dict[TokenKey, Bias] | None = Field(
        None, description="token id → bias added to its logit, -100 to 100")
    # OpenAI features a plain language model cannot honour: refused with a 400 that says so
    tools: list[Any] | None = Field(None, description=NOT_SUPPORTED)
    tool_choice: Any = Field(None, description=NOT_SUPPORTED + " ('none' is accepted)")
    functions: list[Any] | None = Field(None, description=NOT_SUPPORTED)
    function_call: Any = Field(None, description=NOT_SUPPORTED + " ('none' is accepted)")
    parallel_tool_calls: bool | None = Field(None, description="accepted, ignored: no tools")

    @field_validator("tools", "functions", "tool_choice", "function_call")
    @classmethod
    def _no_tools(cls, v: Any, info: ValidationInfo) -> Any:
        if v in (None, [], "none"):
            return v
        raise unsupported(f"{info.field_name} (it calls no tools; it continues text)")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop strings")
        if any(not s or len(s) > 256 for s in stops):
            raise ValueError("stop strings must be 1 to 256 characters")
        return stops

    @model_validator(mode="after")
    def _choice_seeds(self) -> _TextBody:
        prompts = getattr(self, "prompt", None)  # chat: one transcript
        per_prompt = max(self.n, getattr(self, "best_of", None) or 0)  # best_of: its candidates
        check_choice_seeds(self.seed, per_prompt * (len(prompts) if isinstance(prompts, list) else 1))
        return self


class CompletionBody(_TextBody):
    prompt: (Text | Annotated[list[Text], Field(min_length=1)]
             | Annotated[list[TokenId], Field(min_length=1)]
             | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)]) = Field(
        "", description="one prompt or a list of prompts; as text, or as token ids of the "
                        "model's tokenizer (one list, or a list of lists)")
    logprobs: Int | None = Field(None, ge=0, le=5, description="return each token's "
                                 "log-probability and this many most likely alternatives")
    echo: bool = Field(False, description="the prompt comes back before each completion")
    suffix: Text | None = Field(None, description=NOT_SUPPORTED + " ('' is accepted)")
    best_of: Int | None = Field(None, ge=1, le=64,
                                description="candidates per prompt, of which the n best are "
                                            "returned (by reward_model, else by mean token "
                                            "log-prob); above n, not with stream")
    reward_model: str | None = Field(None, min_length=1, max_length=80,
                                     description="genloop extra: the reward model (name or "
                                                 "name@N) that ranks the best_of candidates")
    few_shot: FewShot | None = Field(None, description="genloop extra: k examples drawn (seeded) "
                                                       "from a registered pairs dataset, put "
                                                       "before each prompt; recorded")
    num_beams: Int = Field(1, ge=1, le=16,
                           description="genloop extra: beam search over this many hypotheses, "
                                       "one (deterministic) text per prompt; above 1, n must be 1 "
                                       "and not with stream")
    grounding: Grounding | None = Field(None, description="genloop extra: triples retrieved from "
                                                          "a knowledge graph for each prompt, put "
                                                          "before it; recorded")

    @field_validator("num_beams")
    @classmethod
    def _beams_do_not_stream(cls, v: int, info: ValidationInfo) -> int:
        if v > 1 and info.data.get("stream"):
            raise ValueError("cannot be used with stream (the best beam is known only once the "
                             "search has finished)")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: str | None) -> str | None:
        if v:
            raise unsupported("suffix (it continues text; it does not fill in the middle)")
        return v

    @field_validator("best_of")
    @classmethod
    def _best_of_at_least_n(cls, v: int | None, info: ValidationInfo) -> int | None:
        n = info.data.get("n", 1)
        if v is not None and v < n:
            raise ValueError(f"must be at least n ({n})")
        if v is not None and v > n and info.data.get("stream"):
            raise ValueError("cannot be used with stream (the best are known only once every "
                             "candidate has finished)")
        return v

    @field_validator("reward_model")
    @classmethod
    def _ranks_best_of(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("stream"):
            raise ValueError("cannot be used with stream (it ranks finished candidates)")
        if v is not None and info.data.get("best_of") is None:
            raise ValueError("ranks best_of candidates: give best_of too")
        return v


class ChatBody(_TextBody):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_completion_tokens: Int | None = Field(None, ge=1, le=1_000_000,
                                              description="OpenAI's newer name of max_tokens")
    logprobs: bool | None = Field(False, description="return each token's log-probability")
    top_logprobs: Int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                     description="and this many most likely alternatives")
    response_format: dict[str, Any] | None = Field(
        None, description='{"type": "text"} only: ' + NOT_SUPPORTED)
    grounding: Grounding | None = Field(None, description="genloop extra: triples retrieved from "
                                                          "a knowledge graph for the user's "
                                                          "messages (or grounding.query), put "
                                                          "before the transcript; recorded")
    num_beams: Int = Field(1, ge=1, le=16, description="genloop extra, captioners: beam search "
                                                        "over this many hypotheses (one caption)")

    @field_validator("num_beams")
    @classmethod
    def _chat_beams_do_not_stream(cls, v: int, info: ValidationInfo) -> int:
        if v > 1 and info.data.get("stream"):
            raise ValueError("cannot be used with stream (the best beam is known only once the "
                             "search has finished)")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and not info.data.get("logprobs"):
            raise ValueError("needs logprobs: true")
        return v

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and v != {"type": "text"}:
            raise unsupported(f"response_format {v.get('type')!r} (it writes free text only)")
        return v


class ImageBody(_Body):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(min_length=1, max_length=80)
    prompt: ImagePrompt = Field("", description="a text-conditioned model: the sentence it draws; "
                                "a class-conditional one: a class name picks the class")
    n: Int = Field(1, ge=1, le=64)
    size: str | None = Field(None, pattern=r"^\d{1,5}x\d{1,5}$", description="'WxH', the model's size")
    response_format: Literal["url", "b64_json"] = "url"
    seed: Int | None = Field(None, ge=0, le=SEED_MAX)
    user: User | None = None
    class_: Int | Text | None = Field(None, alias="class", description="genloop extra: class name or index")
    # the core's name; ``guidance`` (the name before 0.2) is still read
    guidance_scale: Number | None = Field(None, ge=0.0, le=20.0,
                                         validation_alias=AliasChoices("guidance_scale", "guidance"),
                                         description="genloop extra: classifier-free guidance scale")
    steps: Int | None = Field(None, ge=1, le=1000, description="genloop extra")
    sampler: Literal["ddim", "ddpm", "dpmpp_2m"] = "ddim"

    @model_validator(mode="after")
    def _choice_seeds(self) -> ImageBody:
        check_choice_seeds(self.seed, self.n)  # image i: seed + i, as text's choices
        return self


# --- responses ------------------------------------------------------------------------------------


class _Reply(BaseModel):
    """A response object: every field is on the wire, those with defaults too."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class _Partial(BaseModel):
    """A response object whose fields with a default are left out when not set (dumped with
    ``exclude_unset``): the chunks of a stream, an image's ``url`` | ``b64_json``."""


class ErrorDetail(_Reply):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Reply):
    error: ErrorDetail


FinishReason = Literal["stop", "length", "content_filter"]  # content_filter: moderation withheld it


class CompletionLogprobs(_Reply):
    """OpenAI's legacy logprobs of a completion choice: per token, its text, its log-probability,
    its most likely alternatives (text → log-probability) and its character offset."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class TopLogprob(_Reply):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(_Reply):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob] = Field(description="most likely first")


class ChatChoiceLogprobs(_Reply):
    content: list[ChatTokenLogprob] | None
    refusal: None = None


class CompletionUsage(_Reply):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChoiceGrounding(_Reply):
    """The facts a grounded choice was given (``generation/grounding.py``)."""

    graph: str
    graph_hash: str | None
    entities: list[str] = Field(description="the graph's entities the text linked to")
    triples: list[Fact] = Field(description="the triples put before the prompt")


GROUNDING_EXTRA = "genloop extra: the facts a grounded request's choice was given"


class CompletionChoice(_Reply):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason
    generation_id: str = Field(description="genloop extra: the record of this choice")
    grounding: ChoiceGrounding | None = Field(None, description=GROUNDING_EXTRA)


class Completion(_Reply):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str = Field(description="'name@N'")
    choices: list[CompletionChoice]
    usage: CompletionUsage


class ChatCompletionMessage(_Reply):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatCompletionChoice(_Reply):
    index: int
    message: ChatCompletionMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: FinishReason
    generation_id: str = Field(description="genloop extra: the record of this choice")
    grounding: ChoiceGrounding | None = Field(None, description=GROUNDING_EXTRA)


class ChatCompletion(_Reply):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="'name@N'")
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage


class CompletionChunkChoice(_Partial):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason | None
    generation_id: str | None = Field(None, description="genloop extra: on a choice's last chunk")
    grounding: ChoiceGrounding | None = Field(None, description=GROUNDING_EXTRA
                                              + ", on its last chunk")


class CompletionChunk(_Partial):
    """A piece of a streamed completion; with ``include_usage`` a last chunk has no choices
    and the usage."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: CompletionUsage | None = None


class ChatCompletionDelta(_Partial):
    role: Literal["assistant"] | None = Field(None, description="on a choice's first chunk")
    content: str | None = None


class ChatCompletionChunkChoice(_Partial):
    index: int
    delta: ChatCompletionDelta
    logprobs: ChatChoiceLogprobs | None = Field(None, description="with logprobs: true")
    finish_reason: FinishReason | None
    generation_id: str | None = Field(None, description="genloop extra: on a choice's last chunk")
    grounding: ChoiceGrounding | None = Field(None, description=GROUNDING_EXTRA
                                              + ", on its last chunk")


class ChatCompletionChunk(_Partial):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    usage: CompletionUsage | None = None


class Image(_Partial):
    """One generated image: ``url`` (response_format "url") or ``b64_json``, never both."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    revised_prompt: str
    generation_id: str = Field(description="genloop extra: the record of this image")
    class_: str | None = Field(alias="class", description="genloop extra: the class drawn")
    b64_json: str | None = Field(None, description="the PNG, base64")
    url: str | None = Field(None, description="the PNG (GET it with the key)")


class ImagesResponse(_Reply):
    created: int
    model: str = Field(description="genloop extra: 'name@N'")
    data: list[Image]
    unknown_words: list[str] | None = Field(
        None, description="genloop extra: a text-conditioned model's prompt words outside its "
                          "vocabulary (read as its unknown token); null for a class model")


class Decoding(_Reply):
    model: str
    ready: bool = Field(description="its decoding process has loaded the model")
    restarts: int = Field(description="times its decoding process died and was started again")


class Health(_Reply):
    status: Literal["ok"] = "ok"
    version: str
    auth: bool = Field(description="false: the server was started with --no-auth")
    decoding: list[Decoding] = Field(default_factory=list, description=(
        "the text models' decoding processes (--decode process)"))


class ModelObject(_Reply):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "genloop"
    name: str
    version: int
    family: str
    modality: Literal["text", "image"]
    generative: bool = True  # False: a feature classifier behind FID, not a generator
    conditioning: Literal["none", "class", "text", "image"] = Field(
        "none", description="genloop extra: what its generation reads besides a seed: a class, "
                            "a sentence (text → image) or an image (a captioner)")
    latest: bool
    parent: str | None = Field(None, description="genloop extra: the version this one was tuned from")
    metrics: dict[str, Any]
    classes: list[str] | None = None
    image_size: int | None = None
    chat_template: dict[str, Any] | None = None
    card: str | None = None


class ModelList(_Reply):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class FeedbackObject(_Reply):
    id: str
    object: Literal["feedback"] = "feedback"
    kind: str
    generation_id: str
    other_generation_id: str | None
    value: int
    comment: str | None
    created: int


class GenerationObject(_Reply):
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
    safety: dict[str, Any] | None = Field(None, description=(
        "the moderation verdicts: prompt and output (action, categories, reason, spans), and "
        "whether the output was withheld"))
    feedback: list[FeedbackObject] = Field(default_factory=list)


class GenerationList(_Reply):
    object: Literal["list"] = "list"
    data: list[GenerationObject]
    has_more: bool


class FeedbackCounts(_Reply):
    ratings: int
    thumbs_up: int
    thumbs_down: int
    preferences: int


class FeedbackSummary(_Reply):
    """How much feedback a model has and what each tuning objective gets from it
    (``genloop.feedback.datasets.feedback_summary``)."""

    object: Literal["feedback.summary"] = "feedback.summary"
    model: str
    generations: int = Field(description="outputs of the model the caller sees")
    threshold: int = Field(description="ratings at or above it are liked")
    owner: str | None = Field(description="whose feedback is counted (null: everyone's)")
    feedback: FeedbackCounts
    usable: dict[str, int] = Field(description="records each objective (sft, dpo, reward, kto) "
                                               "would get")
    min_records: dict[str, int]
    needed: dict[str, int] = Field(description="how many more records each objective needs")
    sources: dict[str, int] = Field(description="preferences and rating pairs (dpo), desirable "
                                                "and undesirable outputs (kto)")
    skipped: dict[str, int] = Field(description="feedback left out, by reason")


# --- the OpenAPI of responses that FastAPI cannot infer -----------------------------------------

IDEMPOTENT_REPLAYED = {"Idempotent-Replayed": {
    "description": "'true' when this is the kept response of an earlier request with the same "
                   "Idempotency-Key", "schema": {"type": "string", "enum": ["true"]}}}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                               "schema": {"type": "integer", "minimum": 1}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error object under each of ``statuses`` (429 and 503 with Retry-After), and as the
    ``default`` response: every status a route may give besides its success (413 for a large
    body, 500 for a bug) carries it. FastAPI's 422 is never sent (validation errors are 400)."""
    documented: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorResponse, **({"headers": RETRY_AFTER} if s in (429, 503) else {})}
        for s in statuses}
    documented["default"] = {"model": ErrorResponse, "description": "an error (docs/api.md)"}
    return documented


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` written in place of each ``$ref`` (the models have no cycles)."""
    definitions = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = copy.deepcopy(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return walk({**target, **{k: v for k, v in node.items() if k != "$ref"}})
        return {k: walk(v) for k, v in node.items()}

    return walk(schema)


def event_stream(chunk: type[BaseModel]) -> dict[str, Any]:
    """The ``text/event-stream`` content of a streamed response, for ``responses=``: one event
    ``data: {chunk}`` per piece, ``data: {"error": ...}`` if it fails, ``data: [DONE]`` at the end
    (in OpenAPI 3.1 the schema of an event stream describes one event). The chunk's schema is
    written inline: FastAPI collects into components only the models of JSON responses."""
    either: Any = Union[chunk, ErrorResponse]  # noqa: UP007  (of a class known at run time: no static type)
    data = _inlined(TypeAdapter(either).json_schema(mode="serialization"))
    return {"text/event-stream": {"schema": {
        "title": f"{chunk.__name__} event", "type": "object", "required": ["data"],
        "properties": {"data": {
            "type": "string", "description": f"a {chunk.__name__} or an error object as JSON, "
            "or '[DONE]' after the last chunk",
            "if": {"const": "[DONE]"},
            "else": {"contentMediaType": "application/json", "contentSchema": data}}}}}}
