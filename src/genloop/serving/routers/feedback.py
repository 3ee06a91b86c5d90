"""``GET /v1/models/{model}/feedback``: how much feedback a model has, and what each tuning
objective would get from it (``genloop.feedback.datasets``); a key sees its owner's only."""

from __future__ import annotations

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from genloop.feedback.datasets import DEFAULT_THRESHOLD, feedback_summary
from genloop.serving.deps import CallerDep, StateDep
from genloop.serving.schemas import FeedbackSummary, errors

router = APIRouter(prefix="/v1", tags=["feedback"], responses=errors(400, 401, 404, 429))


@router.get("/models/{model}/feedback",
            summary="The feedback on a model ('name': all its versions, 'name@N': one) and the "
                    "records each tuning objective gets from it")
async def model_feedback(
    model: str, state: StateDep, caller: CallerDep,
    threshold: int = Query(DEFAULT_THRESHOLD, ge=1, le=5,
                           description="ratings at or above it are liked"),
) -> FeedbackSummary:
    summary = await run_in_threadpool(feedback_summary, state.store, model, caller.visible_to,
                                      threshold=threshold)
    return FeedbackSummary.model_validate(summary)
