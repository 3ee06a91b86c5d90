"""``/v1/fine_tuning/jobs``: create (from an uploaded file, or the genloop extra ``from_feedback``),
list, retrieve, cancel, and a job's events and checkpoints, in OpenAI's shapes.

Creating validates the whole job and writes a queued row (``serving/tuning.py``); a separate
``genloop worker`` process claims and runs it. Serving never trains.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from genloop.serving.deps import CallerDep, StateDep, WriterDep
from genloop.serving.schemas import errors
from genloop.serving.tuning import (
    FineTuningJobBody,
    FineTuningJobCheckpointList,
    FineTuningJobEventList,
    FineTuningJobList,
    FineTuningJobObject,
    checkpoint_object,
    create_job,
    event_object,
    job_object,
)

router = APIRouter(prefix="/v1/fine_tuning", tags=["fine-tuning"],
                   responses=errors(400, 401, 403, 404, 429))

JobId = Annotated[str, Path(pattern=r"^ftjob-[0-9a-f]{1,64}$", description="a job's id")]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post("/jobs", summary="Create a fine-tuning job (OpenAI-compatible)")
async def create(body: FineTuningJobBody, state: StateDep, caller: WriterDep) -> FineTuningJobObject:
    return job_object(await run_in_threadpool(create_job, state.store, body, caller))


@router.get("/jobs", summary="Fine-tuning jobs, newest first")
async def list_jobs(state: StateDep, caller: CallerDep, limit: Limit = 20,
                    after: str | None = Query(None, max_length=64)) -> FineTuningJobList:
    rows = await run_in_threadpool(state.store.list_jobs, caller.visible_to, limit + 1, after)
    return FineTuningJobList(data=[job_object(j) for j in rows[:limit]], has_more=len(rows) > limit)


@router.get("/jobs/{job_id}", summary="One fine-tuning job")
async def retrieve(job_id: JobId, state: StateDep, caller: CallerDep) -> FineTuningJobObject:
    return job_object(await run_in_threadpool(state.store.get_job, job_id, caller.visible_to))


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job (a running one stops within one "
             "evaluation interval)")
async def cancel(job_id: JobId, state: StateDep, caller: WriterDep) -> FineTuningJobObject:
    return job_object(await run_in_threadpool(state.store.cancel_job, job_id, caller.visible_to))


@router.get("/jobs/{job_id}/events", summary="A job's events, newest first")
async def events(job_id: JobId, state: StateDep, caller: CallerDep, limit: Limit = 20,
                 after: str | None = Query(None, max_length=64)) -> FineTuningJobEventList:
    rows = await run_in_threadpool(state.store.list_job_events, job_id, caller.visible_to,
                                   limit + 1, after)
    return FineTuningJobEventList(data=[event_object(e) for e in rows[:limit]],
                                  has_more=len(rows) > limit)


@router.get("/jobs/{job_id}/checkpoints", summary="A job's checkpoints, newest first")
async def checkpoints(job_id: JobId, state: StateDep, caller: CallerDep, limit: Limit = 10,
                      after: str | None = Query(None, max_length=64)) -> FineTuningJobCheckpointList:
    rows = await run_in_threadpool(state.store.list_job_checkpoints, job_id, caller.visible_to,
                                   limit + 1, after)
    data = [checkpoint_object(c) for c in rows[:limit]]
    return FineTuningJobCheckpointList(data=data, has_more=len(rows) > limit,
                                       first_id=data[0].id if data else None,
                                       last_id=data[-1].id if data else None)
