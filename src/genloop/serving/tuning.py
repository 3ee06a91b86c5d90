"""Files and fine-tuning jobs in OpenAI's shapes, and how a job is made: the request bodies, the
objects the routes answer with, and ``create_job``, which validates everything a worker will
need before a row is written.

A job is validated whole at creation, so a bad one is a 400 and nothing is written: the base
model exists and its family can take the objective (a text family that scores completions); the
training file exists, belongs to the caller, has purpose ``fine-tune`` and every line is a
record of the method's form whose prompt fits the model's context (``data.formats``). Its
records are then written as a content-hashed JSON Lines file, and the job row carries the recipe
data section that names it. With the genloop extra ``from_feedback`` the records come from the
model's own feedback (``feedback.datasets``) instead of a file. The worker (``genloop worker``)
does the rest; serving never trains.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genloop.config import settings
from genloop.data.formats import read_tuning_records, write_records
from genloop.errors import InvalidInput, NotFound, validation_message
from genloop.feedback.datasets import feedback_data
from genloop.generation.chat import ChatMessage, load_chat_template
from genloop.models.modeldir import ModelDir
from genloop.models.registry import get_family
from genloop.serving.auth import Caller
from genloop.store import CheckpointRecord, EventRecord, FileRecord, JobRecord, ModelVersion, Store
from genloop.store.registry import validate_model_name

# method type → (the tune objective, the records' form, the data section's shape)
METHODS: dict[str, tuple[str, str, dict[str, str]]] = {
    "supervised": ("sft", "pairs", {"kind": "pairs"}),
    "dpo": ("dpo", "paired", {"kind": "preferences", "form": "paired"}),
    "kto": ("kto", "unpaired", {"kind": "preferences", "form": "unpaired"}),
}
OBJECTIVE_METHOD = {objective: method for method, (objective, _, _) in METHODS.items()}


class BadField(InvalidInput):
    """A 400 whose error object names the body field at fault in ``param``."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


# --- request bodies -------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


Auto = Literal["auto"]


class Hyperparameters(_Body):
    """OpenAI's (each "auto" or a value), plus genloop's step counts."""

    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"
    n_epochs: Auto | Annotated[int, Field(ge=1, le=100)] = "auto"
    beta: Auto | Annotated[float, Field(gt=0, le=100)] = Field("auto", description="dpo, kto")
    sft_weight: float | None = Field(None, ge=0, le=100, description=(
        "genloop extra, dpo: weight of the chosen completions' NLL added to the loss (RPO)"))
    steps: int | None = Field(None, ge=1, le=1_000_000, description="genloop extra: optimizer "
                              "steps (instead of n_epochs)")
    eval_every: int | None = Field(None, ge=1, le=1_000_000, description=(
        "genloop extra: steps between evaluations; a cancel stops the job within one"))
    checkpoint_every: int | None = Field(None, ge=1, le=1_000_000, description=(
        "genloop extra: steps between checkpoints; a replaced worker resumes from the last"))


class MethodParams(_Body):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(_Body):
    type: Literal["supervised", "dpo", "kto"] = Field(description="kto: genloop extra")
    supervised: MethodParams | None = None
    dpo: MethodParams | None = None
    kto: MethodParams | None = None

    def params(self) -> Hyperparameters:
        chosen = getattr(self, self.type)
        return chosen.hyperparameters if chosen is not None else Hyperparameters()


class FromFeedback(_Body):
    objective: Literal["sft", "dpo", "kto"]
    threshold: int = Field(4, ge=1, le=5, description="ratings at or above it are liked")


class FineTuningJobBody(_Body):
    model: str = Field(min_length=1, max_length=80, description="the base: 'name' or 'name@N'")
    training_file: str | None = Field(None, max_length=64)
    validation_file: str | None = Field(None, max_length=64, description=(
        "validated like the training file and kept on the job; the loop validates on the "
        "held-out split of the training records"))
    hyperparameters: Hyperparameters | None = Field(None, description="OpenAI's older form: the "
                                                    "supervised method's")
    method: Method | None = None
    suffix: str | None = Field(None, min_length=1, max_length=40, description=(
        "the tuned model is registered as '<base name>-<suffix>' (else a new version of the base)"))
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    from_feedback: FromFeedback | None = Field(None, description=(
        "genloop extra, instead of training_file: tune on the model's own feedback"))


# --- the objects answered -------------------------------------------------------------------


class _Reply(BaseModel):
    pass


class FileObject(_Reply):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = None
    lines: int = Field(description="genloop extra: JSON Lines records")


class FileList(_Reply):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False


class FileDeleted(_Reply):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class JobError(_Reply):
    code: str
    message: str
    param: str | None = None


class FineTuningJobObject(_Reply):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None = Field(description="the registered version, name@N")
    finished_at: int | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    model: str
    organization_id: str = "genloop"
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None
    training_file: str | None
    validation_file: str | None
    user_provided_suffix: str | None
    estimated_finish: int | None = None
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None = None
    run_id: str | None = Field(description="genloop extra: the training run (`genloop train "
                               "--resume` takes it)")
    data: dict[str, Any] = Field(description="genloop extra: the recipe data section it tunes on")


class FineTuningJobList(_Reply):
    object: Literal["list"] = "list"
    data: list[FineTuningJobObject]
    has_more: bool


class FineTuningJobEvent(_Reply):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"]


class FineTuningJobEventList(_Reply):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool


class FineTuningJobCheckpoint(_Reply):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str = Field(description="'<run id>:step-<N>': the run's "
                                             "checkpoint at that step")
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int


class FineTuningJobCheckpointList(_Reply):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


def file_object(f: FileRecord) -> FileObject:
    return FileObject(id=f.id, bytes=f.bytes, created_at=int(f.created_at.timestamp()),
                      filename=f.filename, purpose=f.purpose, lines=f.lines)


def job_object(j: JobRecord) -> FineTuningJobObject:
    error = None
    if j.status == "failed":
        error = JobError(code="job_failed", message=j.error or "the job failed")
    method_type = j.method.get("type", OBJECTIVE_METHOD.get(j.objective, "supervised"))
    return FineTuningJobObject(
        id=j.id, created_at=int(j.created_at.timestamp()), error=error,
        fine_tuned_model=j.fine_tuned_model,
        finished_at=int(j.finished_at.timestamp()) if j.finished_at else None,
        hyperparameters=j.hyperparameters,
        method={"type": method_type, method_type: {"hyperparameters": j.hyperparameters}},
        model=j.model, seed=j.seed, status=j.status, trained_tokens=j.trained_tokens,
        training_file=j.training_file, validation_file=j.validation_file,
        user_provided_suffix=j.suffix, run_id=j.run_id, data=j.data)


def event_object(e: EventRecord) -> FineTuningJobEvent:
    return FineTuningJobEvent(id=e.id, created_at=int(e.created_at.timestamp()),
                              level=e.level, message=e.message, data=e.data, type=e.type)


def checkpoint_object(c: CheckpointRecord) -> FineTuningJobCheckpoint:
    return FineTuningJobCheckpoint(
        id=c.id, created_at=int(c.created_at.timestamp()),
        fine_tuned_model_checkpoint=f"{c.run_id}:step-{c.step}", fine_tuning_job_id=c.job_id,
        metrics={"step": c.step, **c.metrics}, step_number=c.step)


# --- making a job ---------------------------------------------------------------------------


def records_dir() -> Path:
    """Where the records of tuning jobs are written (content-hashed, so shared by equal jobs,
    beside the ones made from feedback)."""
    return settings().home / "records"


def _base(store: Store, ref: str) -> ModelVersion:
    try:
        return store.resolve(ref)
    except NotFound as e:
        raise BadField("model", str(e)) from None


def _check_family(version: ModelVersion, method: str) -> None:
    """The base's family must train on the method's records and score completions."""
    objective, _, shape = METHODS[method]
    kind = shape["kind"]
    family = get_family(version.family)
    if kind not in family.kinds or family.log_probs is None or family.train_step is not None:
        raise BadField("method.type", f"{method!r} tunes a text model on {kind} records; "
                       f"{version.ref} is a {family.name} model, which cannot take objective "
                       f"{objective!r} (it trains on {', '.join(family.kinds)} data)")


def _records(store: Store, caller: Caller, version: ModelVersion, file_id: str, param: str,
             form: str) -> list[dict[str, Any]]:
    """The canonical records of one uploaded file, each line checked for the base model."""
    try:
        f = store.get_file(file_id, visible_to=caller.visible_to)
    except NotFound as e:
        raise BadField(param, str(e)) from None
    if f.purpose != "fine-tune":
        raise BadField(param, f"file {file_id} has purpose {f.purpose!r}; tuning takes files "
                       "uploaded with purpose 'fine-tune'")
    directory = ModelDir(Path(version.path))
    _, config = directory.family_config()
    template = load_chat_template(directory)

    def render(messages: list[dict[str, Any]]) -> str:
        try:
            return template.render([ChatMessage.model_validate(m) for m in messages])
        except ValidationError as e:
            raise InvalidInput(validation_message(e, prefix="messages.")) from None

    try:
        return read_tuning_records(Path(f.path), form, render=render,
                                   max_prompt_tokens=getattr(config, "block_size", None),
                                   tokenizer=directory.tokenizer())
    except InvalidInput as e:
        raise BadField(param, f"file {file_id}: {e}") from None


def _hyperparameters(body: FineTuningJobBody, method: str) -> Hyperparameters:
    if body.method is not None:
        if body.hyperparameters is not None:
            raise BadField("hyperparameters", "give the hyperparameters in method."
                           f"{body.method.type}.hyperparameters, not both")
        return body.method.params()
    return body.hyperparameters or Hyperparameters()


def create_job(store: Store, body: FineTuningJobBody, caller: Caller) -> JobRecord:
    """Validate ``body`` whole, write its records, then the queued job (nothing on a 400)."""
    # 1. the method: from `method`, from `from_feedback`, or supervised (OpenAI's default)
    if (body.training_file is None) == (body.from_feedback is None):
        raise BadField("training_file", "give a training_file (an uploaded file id) or, "
                       "genloop extra, from_feedback; exactly one")
    method: str = body.method.type if body.method else "supervised"
    if body.from_feedback is not None:
        wanted = OBJECTIVE_METHOD[body.from_feedback.objective]
        if body.method is not None and body.method.type != wanted:
            raise BadField("method.type", f"{body.method.type!r} does not match from_feedback."
                           f"objective {body.from_feedback.objective!r} (method {wanted!r})")
        method = wanted
    objective, form, shape = METHODS[method]
    params = _hyperparameters(body, method)
    if params.beta != "auto" and method == "supervised":
        raise BadField("method.supervised.hyperparameters.beta", "beta is a preference "
                       "objective's (dpo, kto); supervised tuning has none")
    if params.sft_weight is not None and method != "dpo":
        raise BadField(f"method.{method}.hyperparameters.sft_weight", "sft_weight is dpo's "
                       f"(the chosen completions' NLL added to its loss); {method} has none")
    # 2. the base model, its family, the name the tuned version gets
    version = _base(store, body.model)
    _check_family(version, method)
    if body.suffix is not None:
        try:
            validate_model_name(f"{version.name}-{body.suffix}")
        except InvalidInput as e:
            raise BadField("suffix", str(e)) from None
    # 3. the records: each file validated whole before anything is written
    events: list[str] = []
    if body.from_feedback is not None:
        try:
            built = feedback_data(store, body.model, objective,
                                  threshold=body.from_feedback.threshold, visible_to=caller.visible_to)
        except InvalidInput as e:
            raise BadField("from_feedback", str(e)) from None
        data = dict(built.data)
        events.append(f"Built {objective} records from the feedback on {version.ref}")
    else:
        assert body.training_file is not None
        events.append(f"Validating training file: {body.training_file}")
        records = _records(store, caller, version, body.training_file, "training_file", form)
        if body.validation_file is not None:
            events.append(f"Validating validation file: {body.validation_file}")
            _records(store, caller, version, body.validation_file, "validation_file", form)
        path = write_records(records, records_dir())
        data = {**shape, "source": str(path.absolute()),
                "origin": {"training_file": body.training_file, "records": len(records),
                           "method": method}}
        events.append(f"Files validated: {len(records)} records")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    return store.create_job(
        model=version.ref, objective=objective, method={"type": method},
        hyperparameters=params.model_dump(exclude_none=True,
                                          exclude={"beta"} if method == "supervised" else None),
        data=data, seed=seed,
        training_file=body.training_file, validation_file=body.validation_file,
        suffix=body.suffix, owner=caller.owner, events=tuple(events))
