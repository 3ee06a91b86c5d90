"""Uploaded files and fine-tuning jobs: rows a server writes and a separate worker claims.

- **Files** (``file-…``) are JSON Lines uploads for tuning; the row names the stored copy.
- **Jobs** (``ftjob-…``) hold everything a worker needs to run one: the base model version, the
  objective, the hyperparameters and the recipe data section their records became. Status goes
  ``queued → running → succeeded | failed | cancelled`` (``validating_files`` is the moment
  before the row exists: the server validates the files before it writes the job).
- **Claiming** is atomic: in one write transaction the oldest claimable job (queued, or running
  with a heartbeat older than ``stale_after_s``: its worker died) is read with its row locked and
  marked running by the claimer. On SQLite ``BEGIN IMMEDIATE`` serializes the transaction; on
  PostgreSQL ``SELECT … FOR UPDATE SKIP LOCKED`` makes a concurrent claimer skip the row. Every
  later write of the worker (heartbeat, run id, events, finish) names it and changes the job only
  while it still holds it, so a worker that was presumed dead can never overwrite its
  replacement's work.
- **Events and checkpoints** are appended by the worker and listed newest first, as OpenAI's
  API lists them.

Records are pydantic models, detached from any session, as everywhere in the store.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from genloop.errors import Conflict, InvalidInput, NotFound
from genloop.store.db import Base, Database, JSONType, UTCDateTime, _Record, new_id, utcnow
from genloop.store.paths import WorkspacePath, stored_path

JOB_STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
FILE_PURPOSES = ("fine-tune",)
STALE_AFTER_S = 60.0  # a running job whose worker has not beaten for this long is reclaimed


# --- tables ---------------------------------------------------------------------------------


class FileRow(Base):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_owner_created", "owner", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FineTuningJobRow(Base):
    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (Index("ix_fine_tuning_jobs_status_created", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(80))  # the base version, name@N
    status: Mapped[str] = mapped_column(String(24))
    objective: Mapped[str] = mapped_column(String(16))  # sft | dpo | kto (training/tune.py)
    method: Mapped[dict[str, Any]] = mapped_column(JSONType)  # OpenAI's method object
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the recipe's data section
    training_file: Mapped[str | None] = mapped_column(String(32), nullable=True)
    validation_file: Mapped[str | None] = mapped_column(String(32), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(80), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FineTuningEventRow(Base):
    __tablename__ = "fine_tuning_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id"), index=True)
    level: Mapped[str] = mapped_column(String(8))  # info | warn | error
    type: Mapped[str] = mapped_column(String(8))  # message | metrics
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FineTuningCheckpointRow(Base):
    __tablename__ = "fine_tuning_checkpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id"), index=True)
    run_id: Mapped[str] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- records --------------------------------------------------------------------------------


class FileRecord(_Record):
    id: str
    purpose: str
    filename: str
    bytes: int
    lines: int
    path: WorkspacePath
    owner: str | None
    created_at: datetime


class JobRecord(_Record):
    id: str
    model: str
    status: str
    objective: str
    method: dict[str, Any]
    hyperparameters: dict[str, Any]
    data: dict[str, Any]
    training_file: str | None
    validation_file: str | None
    suffix: str | None
    seed: int
    fine_tuned_model: str | None
    trained_tokens: int | None
    run_id: str | None
    worker: str | None
    attempts: int
    heartbeat_at: datetime | None
    error: str | None
    cancel_requested: bool
    owner: str | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class EventRecord(_Record):
    id: str
    job_id: str
    level: str
    type: str
    message: str
    data: dict[str, Any] | None
    created_at: datetime


class CheckpointRecord(_Record):
    id: str
    job_id: str
    run_id: str
    step: int
    metrics: dict[str, Any]
    path: str
    created_at: datetime


def _visible(row: Any, visible_to: str | None) -> bool:
    return row is not None and (visible_to is None or row.owner == visible_to)


def _event(s: Session, job_id: str, message: str, *, level: str = "info", type: str = "message",
           data: dict[str, Any] | None = None) -> FineTuningEventRow:
    row = FineTuningEventRow(id=f"ftevent-{new_id(24)}", job_id=job_id, level=level, type=type,
                             message=message, data=data, created_at=utcnow())
    s.add(row)
    return row


def _page(q: Any, model: Any, s: Session, after: str | None, what: str) -> Any:
    """Newest first, after the row with id ``after`` (a cursor from the previous page)."""
    if after is not None:
        anchor = s.scalar(select(model).where(model.id == after))
        if anchor is None:
            raise NotFound(f"no {what} with id {after!r} to list after")
        q = q.where(model.seq < anchor.seq)
    return q.order_by(model.seq.desc())


class JobRecords(Database):
    """Files, fine-tuning jobs, their events and checkpoints; :class:`genloop.store.Store`
    inherits these."""

    # --- files ------------------------------------------------------------------------------

    def add_file(self, *, file_id: str, purpose: str, filename: str, size: int, lines: int,
                 path: str, owner: str | None = None) -> FileRecord:
        """Record an uploaded file already written to ``path`` (``file_id``: the name it was
        written under, ``new_file_id()``)."""
        if purpose not in FILE_PURPOSES:
            raise InvalidInput(f"purpose {purpose!r} is invalid: use one of {', '.join(FILE_PURPOSES)}")
        with self.write() as s:
            row = FileRow(id=file_id, purpose=purpose, filename=filename, bytes=size, lines=lines,
                          path=stored_path(path), owner=owner, created_at=utcnow())
            s.add(row)
            s.flush()
            return FileRecord.model_validate(row)

    def get_file(self, file_id: str, visible_to: str | None = None) -> FileRecord:
        with self.read() as s:
            row = s.get(FileRow, file_id)
            if not _visible(row, visible_to):
                raise NotFound(f"no file with id {file_id!r}")
            return FileRecord.model_validate(row)

    def list_files(self, visible_to: str | None = None, purpose: str | None = None,
                   limit: int = 10_000) -> list[FileRecord]:
        """Newest first."""
        q = select(FileRow)
        if visible_to is not None:
            q = q.where(FileRow.owner == visible_to)
        if purpose is not None:
            q = q.where(FileRow.purpose == purpose)
        q = q.order_by(FileRow.created_at.desc(), FileRow.id).limit(limit)
        with self.read() as s:
            return [FileRecord.model_validate(r) for r in s.scalars(q)]

    def delete_file(self, file_id: str, visible_to: str | None = None) -> FileRecord:
        """Forget a file (the caller removes its bytes); jobs keep the records made from it."""
        with self.write() as s:
            row = s.get(FileRow, file_id, with_for_update=True)
            if not _visible(row, visible_to):
                raise NotFound(f"no file with id {file_id!r}")
            record = FileRecord.model_validate(row)
            s.delete(row)
            return record

    # --- jobs -------------------------------------------------------------------------------

    def create_job(self, *, model: str, objective: str, method: dict[str, Any],
                   hyperparameters: dict[str, Any], data: dict[str, Any], seed: int,
                   training_file: str | None = None, validation_file: str | None = None,
                   suffix: str | None = None, owner: str | None = None,
                   events: tuple[str, ...] = ()) -> JobRecord:
        """A queued job (its files already validated), with ``events`` before "queued"."""
        with self.write() as s:
            row = FineTuningJobRow(
                id=f"ftjob-{new_id(24)}", model=model, status="queued", objective=objective,
                method=method, hyperparameters=hyperparameters, data=data, seed=seed,
                training_file=training_file, validation_file=validation_file, suffix=suffix,
                owner=owner, attempts=0, cancel_requested=False, created_at=utcnow())
            s.add(row)
            s.flush()
            for message in (*events, "Job enqueued"):
                _event(s, row.id, message)
            s.flush()
            return JobRecord.model_validate(row)

    def get_job(self, job_id: str, visible_to: str | None = None) -> JobRecord:
        with self.read() as s:
            row = s.get(FineTuningJobRow, job_id)
            if not _visible(row, visible_to):
                raise NotFound(f"no fine-tuning job with id {job_id!r}")
            return JobRecord.model_validate(row)

    def list_jobs(self, visible_to: str | None = None, limit: int = 20,
                  after: str | None = None) -> list[JobRecord]:
        """Newest first; ``after``: only the jobs listed after that job id."""
        q = select(FineTuningJobRow)
        if visible_to is not None:
            q = q.where(FineTuningJobRow.owner == visible_to)
        with self.read() as s:
            if after is not None:
                anchor = s.get(FineTuningJobRow, after)
                if not _visible(anchor, visible_to):
                    raise NotFound(f"no fine-tuning job with id {after!r} to list after")
                assert anchor is not None
                q = q.where(or_(FineTuningJobRow.created_at < anchor.created_at,
                                and_(FineTuningJobRow.created_at == anchor.created_at,
                                     FineTuningJobRow.id > anchor.id)))
            q = q.order_by(FineTuningJobRow.created_at.desc(), FineTuningJobRow.id).limit(limit)
            return [JobRecord.model_validate(r) for r in s.scalars(q)]

    def cancel_job(self, job_id: str, visible_to: str | None = None) -> JobRecord:
        """A queued job is cancelled at once; a running one is asked to stop (its worker stops
        it within one evaluation interval); a finished one is a 400."""
        with self.write() as s:
            row = s.get(FineTuningJobRow, job_id, with_for_update=True)
            if not _visible(row, visible_to):
                raise NotFound(f"no fine-tuning job with id {job_id!r}")
            assert row is not None
            if row.status in FINISHED:
                raise InvalidInput(f"fine-tuning job {job_id} is already {row.status}; only a "
                                   "queued or running job can be cancelled")
            if row.status == "running":
                if not row.cancel_requested:
                    row.cancel_requested = True
                    _event(s, row.id, "Cancellation requested")
            else:
                row.status, row.finished_at, row.cancel_requested = "cancelled", utcnow(), True
                _event(s, row.id, "Job cancelled")
            s.flush()
            return JobRecord.model_validate(row)

    # --- the worker's side ------------------------------------------------------------------

    def claim_job(self, worker: str, *, stale_after_s: float = STALE_AFTER_S) -> JobRecord | None:
        """The oldest queued job, or a running one whose worker stopped beating, now running
        for ``worker``; None when there is none. Exactly one of concurrent claimers gets a job."""
        while True:
            with self.write() as s:
                now = utcnow()
                stale = now - timedelta(seconds=stale_after_s)
                row = s.scalar(
                    select(FineTuningJobRow)
                    .where(or_(FineTuningJobRow.status == "queued",
                               and_(FineTuningJobRow.status == "running",
                                    FineTuningJobRow.heartbeat_at < stale)))
                    .order_by(FineTuningJobRow.created_at, FineTuningJobRow.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
                if row is None:
                    return None
                if row.cancel_requested:  # its worker died while asked to stop
                    row.status, row.finished_at = "cancelled", now
                    _event(s, row.id, "Job cancelled")
                    continue
                if row.status == "running":
                    _event(s, row.id, f"Worker {row.worker} stopped responding; job reclaimed",
                           level="warn")
                row.status, row.worker, row.heartbeat_at = "running", worker, now
                row.attempts = (row.attempts or 0) + 1
                _event(s, row.id, f"Fine-tuning job started by worker {worker}"
                       + (f" (attempt {row.attempts}, resuming run {row.run_id})"
                          if row.run_id else ""))
                s.flush()
                return JobRecord.model_validate(row)

    def _held(self, s: Session, job_id: str, worker: str) -> FineTuningJobRow:
        """The job, locked, if ``worker`` still runs it; Conflict otherwise."""
        row = s.get(FineTuningJobRow, job_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no fine-tuning job with id {job_id!r}")
        if row.status != "running" or row.worker != worker:
            raise Conflict(f"fine-tuning job {job_id} is no longer run by worker {worker} "
                           f"(status {row.status}, worker {row.worker})")
        return row

    def heartbeat_job(self, job_id: str, worker: str) -> JobRecord:
        """Mark ``worker`` alive on its job; the record says whether a cancel was asked.
        Conflict when the job was taken from it (it was presumed dead) or finished."""
        with self.write() as s:
            row = self._held(s, job_id, worker)
            row.heartbeat_at = utcnow()
            s.flush()
            return JobRecord.model_validate(row)

    def set_job_run(self, job_id: str, worker: str, run_id: str) -> JobRecord:
        """The run that trains the job, recorded before it starts (a replacement resumes it)."""
        with self.write() as s:
            row = self._held(s, job_id, worker)
            row.run_id = run_id
            s.flush()
            return JobRecord.model_validate(row)

    def add_job_event(self, job_id: str, worker: str, message: str, *, level: str = "info",
                      type: str = "message", data: dict[str, Any] | None = None) -> EventRecord:
        with self.write() as s:
            self._held(s, job_id, worker)
            row = _event(s, job_id, message, level=level, type=type, data=data)
            s.flush()
            return EventRecord.model_validate(row)

    def add_job_checkpoint(self, job_id: str, worker: str, *, run_id: str, step: int,
                           metrics: dict[str, Any], path: str) -> CheckpointRecord:
        with self.write() as s:
            self._held(s, job_id, worker)
            row = FineTuningCheckpointRow(id=f"ftckpt-{new_id(24)}", job_id=job_id, run_id=run_id,
                                          step=step, metrics=metrics, path=path, created_at=utcnow())
            s.add(row)
            _event(s, job_id, f"Checkpoint saved at step {step}")
            s.flush()
            return CheckpointRecord.model_validate(row)

    def finish_job(self, job_id: str, worker: str, status: str, *, fine_tuned_model: str | None = None,
                   error: str | None = None, trained_tokens: int | None = None,
                   message: str | None = None) -> JobRecord:
        """``status`` succeeded, failed or cancelled, with its last event."""
        if status not in FINISHED:
            raise InvalidInput(f"a job finishes as one of {', '.join(FINISHED)}, not {status!r}")
        with self.write() as s:
            row = self._held(s, job_id, worker)
            row.status, row.finished_at = status, utcnow()
            row.fine_tuned_model, row.error, row.trained_tokens = fine_tuned_model, error, trained_tokens
            default = {"succeeded": "The job has successfully completed",
                       "cancelled": "Job cancelled",
                       "failed": f"Job failed: {error}"}[status]
            _event(s, job_id, message or default, level="error" if status == "failed" else "info")
            s.flush()
            return JobRecord.model_validate(row)

    def release_job(self, job_id: str, worker: str) -> JobRecord:
        """Put a job its worker is leaving (shut down) back in the queue, keeping its run."""
        with self.write() as s:
            row = self._held(s, job_id, worker)
            row.status, row.worker, row.heartbeat_at = "queued", None, None
            _event(s, job_id, f"Worker {worker} shut down; job back in the queue", level="warn")
            s.flush()
            return JobRecord.model_validate(row)

    def list_job_events(self, job_id: str, visible_to: str | None = None, limit: int = 20,
                        after: str | None = None) -> list[EventRecord]:
        """Newest first; ``after``: only the events listed after that event id."""
        self.get_job(job_id, visible_to)
        with self.read() as s:
            q = select(FineTuningEventRow).where(FineTuningEventRow.job_id == job_id)
            q = _page(q, FineTuningEventRow, s, after, "event").limit(limit)
            return [EventRecord.model_validate(r) for r in s.scalars(q)]

    def list_job_checkpoints(self, job_id: str, visible_to: str | None = None, limit: int = 10,
                             after: str | None = None) -> list[CheckpointRecord]:
        """Newest first; ``after``: only the checkpoints listed after that checkpoint id."""
        self.get_job(job_id, visible_to)
        with self.read() as s:
            q = select(FineTuningCheckpointRow).where(FineTuningCheckpointRow.job_id == job_id)
            q = _page(q, FineTuningCheckpointRow, s, after, "checkpoint").limit(limit)
            return [CheckpointRecord.model_validate(r) for r in s.scalars(q)]


def new_file_id() -> str:
    return f"file-{new_id(24)}"
