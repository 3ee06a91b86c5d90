"""``POST /v1/moderations``: the workspace's moderation policy on texts, in OpenAI's shape.

Each input gets a result with ``flagged``, ``categories`` and ``category_scores`` over OpenAI's
thirteen categories (a policy's blocklist or pattern named like one of them — ``violence``,
``self-harm`` — fills it) and the policy's own (``email``, ``phone``, ``card``, the blocklists',
patterns' and classifier's categories). A finding of any action flags the input; genloop's
extras on each result say what the policy would do (``action``: allow | flag | redact | block),
why (``reason``) and the text as it would pass (``redacted``: "" when blocked). A check that
raises is a 503, as on every other route: nothing is reported as clean unchecked.
"""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from genloop.errors import InvalidInput, UnicodeText
from genloop.safety.moderator import Verdict, workspace_moderator
from genloop.serving.deps import CallerDep, StateDep
from genloop.serving.schemas import errors

router = APIRouter(prefix="/v1", tags=["moderations"], responses=errors(400, 401, 403, 429, 503))

OPENAI_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening",
                     "illicit", "illicit/violent", "self-harm", "self-harm/instructions",
                     "self-harm/intent", "sexual", "sexual/minors", "violence", "violence/graphic")
MAX_INPUTS = 32
MODEL = "genloop-moderation"


class TextInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: UnicodeText


class ModerationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: UnicodeText | list[UnicodeText] | list[TextInput] = Field(
        description="a text, a list of texts, or text parts ({type: text, text})")
    model: str | None = Field(None, max_length=80, description="ignored: the workspace's policy "
                                                              "moderates")


class ModerationResult(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    action: Literal["allow", "flag", "redact", "block"]
    reason: str
    redacted: str


class ModerationResponse(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    id: str
    model: str
    results: list[ModerationResult]
    policy: str = Field(description="the digest of the policy that judged")


def result(verdict: Verdict, policy_categories: list[str]) -> ModerationResult:
    names = list(dict.fromkeys([*OPENAI_CATEGORIES, *policy_categories, *verdict.categories]))
    hit = set(verdict.categories)
    return ModerationResult(
        flagged=bool(hit), categories={c: c in hit for c in names},
        category_scores={c: float(verdict.scores.get(c, 0.0)) for c in names},
        category_applied_input_types={c: ["text"] if c in hit else [] for c in names},
        action=verdict.action,
        reason=verdict.reason(), redacted=verdict.text)


@router.post("/moderations", summary="Moderate texts with the workspace's policy "
                                      "(OpenAI-compatible)", response_model=ModerationResponse)
async def moderations(body: ModerationBody, state: StateDep,
                      caller: CallerDep) -> ModerationResponse:
    if isinstance(body.input, str):
        texts = [body.input]
    else:
        texts = [t if isinstance(t, str) else t.text for t in body.input]
    if not 1 <= len(texts) <= MAX_INPUTS:
        raise InvalidInput(f"input: give between 1 and {MAX_INPUTS} texts")
    limit = state.config.max_prompt_chars
    if any(len(t) > limit for t in texts):
        raise InvalidInput(f"input: at most {limit} characters per text on this server")
    moderator = await run_in_threadpool(workspace_moderator, state.store)
    verdicts = [await run_in_threadpool(moderator.check, t, "prompt", always=True) for t in texts]
    return ModerationResponse(id="modr-" + uuid.uuid4().hex, model=MODEL,
                              results=[result(v, moderator.categories) for v in verdicts],
                              policy=moderator.policy.digest)
