"""The workspace's records: datasets, runs, model versions and generations.

``Store`` is the one object the loop and the faces talk to. Registering a model version is the
delicate part: the version number, the directory rename and the row must agree even when several
processes register the same name at once, and a crash must never leave a row without its files
or a visible directory without its row. See :meth:`Store.register_model`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from genloop.atomic import atomic_write_json, fsync_dir
from genloop.config import settings
from genloop.errors import InvalidInput, NotFound
from genloop.models.modeldir import ModelDir
from genloop.store.access import AccessRecords, is_visible
from genloop.store.db import (
    RUN_STATUSES,
    Database,
    DatasetRecord,
    DatasetRow,
    FeedbackRecord,
    FeedbackRow,
    GenerationRecord,
    GenerationRow,
    ModelVersion,
    ModelVersionRow,
    RequestRow,
    RunRecord,
    RunRow,
    json_safe,
    new_id,
    utcnow,
)
from genloop.store.jobs import JobRecords
from genloop.store.kg import KGRecords
from genloop.store.paths import stored_path, workspace_path

MODEL_NAME_RULE = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_MODEL_NAME = re.compile(MODEL_NAME_RULE)
MAX_VERSION = 2**31 - 1  # the largest INTEGER of PostgreSQL; SQLite's holds 2**63 - 1
_MODEL_REF = re.compile(r"^(?P<name>[^@\s:]+)(?:@(?P<version>[0-9]+))?(?::(?P<variant>[^:\s]*))?$")
VARIANT_RULE = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_VARIANT = re.compile(VARIANT_RULE)


def validate_model_name(name: str) -> str:
    """Names become directory names and URL segments, so they are kept to a safe alphabet."""
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise InvalidInput(
            f"model name {name!r} is invalid: it must match {MODEL_NAME_RULE} "
            "(lowercase letters, digits, '.', '_', '-'; starting with a letter or digit; "
            "at most 64 characters)"
        )
    return name


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """'name' -> (name, None); 'name@N' -> (name, N), N written one way (no leading zero) and
    within what a version column holds on every database (a 32-bit integer on PostgreSQL).
    A servable variant's suffix (``name@N:int8``, ``split_variant``) is accepted and left out."""
    m = _MODEL_REF.match(ref) if isinstance(ref, str) else None
    if m is None or not _MODEL_NAME.match(m["name"]):
        raise InvalidInput(
            f"model reference {ref!r} is invalid: use 'name' (newest version) or 'name@N' "
            f"(optionally ':variant', e.g. 'name@N:int8') with a name matching {MODEL_NAME_RULE}"
        )
    if m["variant"] is not None and not _VARIANT.match(m["variant"]):
        raise InvalidInput(f"model reference {ref!r} is invalid: in 'name@N:variant', the "
                           f"variant must match {VARIANT_RULE}")
    digits = m["version"]
    if digits is None:
        return m["name"], None
    if digits.startswith("0"):
        first = "N starts at 1" if not digits.strip("0") else f"write {digits.lstrip('0')}, " \
            f"not {digits}"
        raise InvalidInput(f"model reference {ref!r} is invalid: in 'name@N', {first}")
    if len(digits) > len(str(MAX_VERSION)) or int(digits) > MAX_VERSION:
        raise InvalidInput(f"model reference {ref!r} is invalid: in 'name@N', N is at most "
                           f"{MAX_VERSION}")
    return m["name"], int(digits)


def split_variant(ref: str) -> tuple[str, str | None]:
    """'name@N:int8' -> ('name@N', 'int8'); a reference without a variant -> (ref, None)."""
    parse_model_ref(ref)
    base, _, variant = ref.partition(":")
    return base, variant or None


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key per name (Python's hash() differs between processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _version_select(name: str, version: int | None) -> Select[ModelVersionRow]:  # SQLAlchemy 2.1 form
    """Version N of ``name``, or its newest when N is None."""
    q = select(ModelVersionRow).where(ModelVersionRow.name == name)
    if version is None:
        return q.order_by(ModelVersionRow.version.desc()).limit(1)
    return q.where(ModelVersionRow.version == version)


class Store(AccessRecords, JobRecords, KGRecords, Database):
    """Datasets, runs, model versions and generations of one workspace; API keys, feedback and
    idempotency keys come from :class:`AccessRecords`, files and fine-tuning jobs from
    :class:`JobRecords`."""

    # --- datasets ---------------------------------------------------------------------------

    def add_dataset(
        self, name: str, hash: str, kind: str, path: Path | str, meta: dict[str, Any] | None = None
    ) -> DatasetRecord:
        """Record a dataset; the same content (hash) added twice returns the first record."""
        try:
            with self.write() as s:
                row = s.scalar(select(DatasetRow).where(DatasetRow.hash == hash))
                if row is None:
                    row = DatasetRow(
                        name=name, hash=hash, kind=kind, path=stored_path(path), meta=meta or {}
                    )
                    s.add(row)
                    s.flush()
                return DatasetRecord.model_validate(row)
        except IntegrityError:
            # Lost a race on PostgreSQL (SQLite serializes writers): the winner's row is it.
            return self.get_dataset(hash)

    def get_dataset(self, hash: str) -> DatasetRecord:
        """A dataset by content hash."""
        with self.read() as s:
            row = s.scalar(select(DatasetRow).where(DatasetRow.hash == hash))
            if row is None:
                raise NotFound(f"no dataset with hash {hash!r}; see `genloop data list`")
            return DatasetRecord.model_validate(row)

    def list_datasets(self) -> list[DatasetRecord]:
        """All datasets, newest first."""
        with self.read() as s:
            rows = s.scalars(select(DatasetRow).order_by(DatasetRow.id.desc()))
            return [DatasetRecord.model_validate(r) for r in rows]

    # --- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        recipe: dict[str, Any],
        recipe_hash: str,
        dataset_hash: str,
        family: str,
        model_name: str,
        path: Path | str,
        run_id: str | None = None,
    ) -> RunRecord:
        """Start a run in status 'running' (``run_id`` lets the caller name its run dir first)."""
        with self.write() as s:
            row = RunRow(
                id=run_id or new_id(12),
                status="running",
                recipe=recipe,
                recipe_hash=recipe_hash,
                dataset_hash=dataset_hash,
                family=family,
                model_name=model_name,
                step=0,
                metrics={},
                path=stored_path(path),
            )
            s.add(row)
            s.flush()
            return RunRecord.model_validate(row)

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        step: int | None = None,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> RunRecord:
        """Change a run's status, step, metrics (merged into the old ones) or error."""
        if status is not None and status not in RUN_STATUSES:
            raise InvalidInput(f"run status {status!r} is invalid: use one of {RUN_STATUSES}")
        with self.write() as s:
            row = self._run_row(s, run_id, lock=True)  # merged below: no concurrent merge lost
            if status is not None:
                row.status = status
            if step is not None:
                row.step = step
            if metrics is not None:
                row.metrics = {**row.metrics, **metrics}  # a new dict, so the change is seen
            if error is not None:
                row.error = error
            s.flush()
            return RunRecord.model_validate(row)

    def get_run(self, run_id: str) -> RunRecord:
        """One run by id."""
        with self.read() as s:
            return RunRecord.model_validate(self._run_row(s, run_id))

    def list_runs(self) -> list[RunRecord]:
        """All runs, newest first."""
        with self.read() as s:
            rows = s.scalars(select(RunRow).order_by(RunRow.created_at.desc(), RunRow.id))
            return [RunRecord.model_validate(r) for r in rows]

    @staticmethod
    def _run_row(s: Session, run_id: str, lock: bool = False) -> RunRow:
        """The run, locked until the transaction ends if ``lock`` (SQLite: already, by BEGIN
        IMMEDIATE)."""
        row = s.get(RunRow, run_id, with_for_update=lock)
        if row is None:
            raise NotFound(f"no run with id {run_id!r}; see `genloop runs`")
        return row

    # --- models -----------------------------------------------------------------------------

    def register_model(
        self,
        name: str,
        staged_dir: Path | str,
        *,
        family: str,
        dataset_hash: str | None = None,
        recipe_hash: str | None = None,
        parent: str | None = None,
        run_id: str | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Move a complete ``staged_dir`` to ``models/<name>/<N>`` and record version N.

        1. In one write transaction (``BEGIN IMMEDIATE`` on SQLite, an advisory lock per name
           on PostgreSQL) read N = max(version) + 1 — no other writer can read the same N.
        2. Rename ``staged_dir`` into place (same filesystem, so one atomic rename).
        3. Insert the row and commit. If that fails the directory is renamed back, so no
           version directory is ever visible without its row.
        A crash between 2 and 3 leaves a directory without a row; the next registration of
        that version moves it aside to ``models/<name>/.orphan-N-*`` instead of failing.
        """
        validate_model_name(name)
        if parent is not None:
            parse_model_ref(parent)
        staged = Path(staged_dir).absolute()
        if not staged.is_dir():
            raise InvalidInput(f"staged model directory {str(staged)!r} does not exist")
        metrics = json_safe(dict(metrics or {}))  # the file says what the row will
        atomic_write_json(ModelDir(staged).metrics_file, metrics)
        name_dir = settings().models_dir / name
        name_dir.mkdir(parents=True, exist_ok=True)

        dest: Path | None = None
        try:
            with self.write() as s:
                if self.dialect == "postgresql":
                    s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _advisory_key(name)})
                latest = s.scalar(
                    select(func.max(ModelVersionRow.version)).where(ModelVersionRow.name == name)
                )
                version = (latest or 0) + 1
                dest = name_dir / str(version)
                if dest.exists():
                    os.replace(dest, name_dir / f".orphan-{version}-{uuid.uuid4().hex[:8]}")
                try:
                    os.replace(staged, dest)
                except OSError as e:
                    dest = None
                    raise InvalidInput(
                        f"cannot move {str(staged)!r} into {str(name_dir)!r}: {e}; stage the "
                        "model on the same filesystem as GENLOOP_HOME"
                    ) from e
                fsync_dir(name_dir)
                fsync_dir(staged.parent)
                row = ModelVersionRow(
                    name=name,
                    version=version,
                    family=family,
                    path=stored_path(dest),
                    dataset_hash=dataset_hash,
                    recipe_hash=recipe_hash,
                    parent=parent,
                    run_id=run_id,
                    metrics=metrics,
                )
                s.add(row)
                s.flush()
                record = ModelVersion.model_validate(row)
            # the context above committed
            return record
        except BaseException as exc:
            if dest is not None and dest.exists() and not staged.exists():
                os.replace(dest, staged)
                fsync_dir(name_dir)
            if isinstance(exc, IntegrityError) and run_id is not None:
                with self.read() as s:
                    if s.get(RunRow, run_id) is None:
                        raise NotFound(
                            f"cannot register {name}: run {run_id!r} does not exist"
                        ) from exc
            raise

    def resolve(self, ref: str) -> ModelVersion:
        """'name' -> its newest version; 'name@N' -> version N; 'name@N:int8' -> version N's
        servable variant ``int8`` (``ModelDir.variants``), NotFound listing them if it has none."""
        name, version = parse_model_ref(ref)
        variant = split_variant(ref)[1]
        with self.read() as s:
            row = s.scalar(_version_select(name, version))
            if row is not None:
                found = ModelVersion.model_validate(row)
                return found if variant is None else _with_variant(found, variant)
            versions = list(
                s.scalars(
                    select(ModelVersionRow.version)
                    .where(ModelVersionRow.name == name)
                    .order_by(ModelVersionRow.version)
                )
            )
            if versions:
                listed = ", ".join(f"{name}@{v}" for v in versions)
                raise NotFound(f"model {ref!r} not found; {name} has versions: {listed}")
            names = list(
                s.scalars(select(ModelVersionRow.name).distinct().order_by(ModelVersionRow.name))
            )
        if names:
            raise NotFound(f"model {ref!r} not found; available models: {', '.join(names)}")
        raise NotFound(
            f"model {ref!r} not found; there are no models yet: run `genloop train` or "
            "`genloop quickstart`"
        )

    def list_models(self) -> list[ModelVersion]:
        """Every version of every model, by name then version."""
        with self.read() as s:
            rows = s.scalars(
                select(ModelVersionRow).order_by(ModelVersionRow.name, ModelVersionRow.version)
            )
            return [ModelVersion.model_validate(r) for r in rows]

    def update_model_metrics(self, ref: str, metrics: dict[str, Any]) -> ModelVersion:
        """Merge evaluation results into a version's metrics (row and ``metrics.json``)."""
        name, version = parse_model_ref(ref)
        with self.write() as s:
            # locked, so a concurrent merge waits for this one and then sees its keys
            row = s.scalar(_version_select(name, version).with_for_update())
            if row is None:
                self.resolve(ref)  # raises NotFound listing what exists
                raise NotFound(f"model {ref!r} not found")
            row.metrics = json_safe({**row.metrics, **metrics})
            s.flush()
            # Written inside the transaction, so concurrent merges can't interleave file writes.
            atomic_write_json(ModelDir(Path(workspace_path(row.path))).metrics_file, row.metrics)
            return ModelVersion.model_validate(row)

    # --- generations ------------------------------------------------------------------------

    def record_generation(
        self,
        *,
        model: ModelVersion,
        kind: str,
        request: dict[str, Any],
        seed: int,
        output: str | None,
        file: str | None,
        content_hash: str,
        timings: dict[str, Any],
        safety: dict[str, Any] | None = None,
        owner: str | None = None,
        shared: dict[str, Any] | None = None,
        sign: Callable[[GenerationRecord], dict[str, Any]] | None = None,
    ) -> GenerationRecord:
        """Keep every output traceable: which version, which request, which seed; ``owner``:
        the API key owner who asked (None: the workspace's own).

        ``request`` is this output's own part (its prompt, seed, index), ``shared`` what it shares
        with the other choices of its request (settings, chat messages): stored once under its
        content hash, however many generations refer to it. The record's ``request`` is both.

        ``sign``: the record as stored (id, time and whole request known) → its signature, kept
        in the row in the same transaction, so the record is signed as it was made; if it
        raises, nothing is recorded."""
        with self.write() as s:
            body = None if shared is None else self._shared_request(s, shared)
            row = GenerationRow(
                id=new_id(),
                model=model.ref,
                model_version_id=model.id,
                kind=kind,
                request=request,
                shared=body,
                request_id=None if body is None else body.id,
                created_at=utcnow(),  # known before the insert: the seal names it
                seed=seed,
                output=output,
                file=None if file is None else stored_path(file),
                content_hash=content_hash,
                safety=safety,
                timings=timings,
                owner=owner,
            )
            if sign is not None:  # the record as it is about to be written, sealed in its row
                row.signature = sign(GenerationRecord.model_validate(row))
            s.add(row)
            s.flush()
            return GenerationRecord.model_validate(row)

    def first_signed_generation(self) -> datetime | None:
        """When the oldest generation signed as it was made was made (None: none is): every
        generation since is signed, so one without a signature has lost it."""
        with self.read() as s:
            return s.scalar(select(func.min(GenerationRow.created_at))
                            .where(GenerationRow.signature.is_not(None)))

    def _shared_request(self, s: Session, body: dict[str, Any]) -> RequestRow:
        """The ``requests`` row of ``body``, inserted if no request stored it yet (a concurrent
        insert of the same body is no conflict: one row either way)."""
        body = json_safe(body)
        digest = hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).hexdigest()
        rid = f"sha256:{digest}"
        row = s.get(RequestRow, rid)
        if row is None:
            insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
            s.execute(insert(RequestRow).values(id=rid, body=body, created_at=utcnow())
                      .on_conflict_do_nothing(index_elements=["id"]))
            row = s.get(RequestRow, rid)
            assert row is not None
        return row

    def get_generation(self, generation_id: str, visible_to: str | None = None) -> GenerationRecord:
        """One generation by id; another owner's than ``visible_to`` (when given) is NotFound."""
        with self.read() as s:
            row = s.get(GenerationRow, generation_id)
            if row is None or not is_visible(row, visible_to):
                raise NotFound(f"no generation with id {generation_id!r}")
            return GenerationRecord.model_validate(row)

    def list_generations(
        self, model: str | ModelVersion | None = None, limit: int = 50,
        before: str | None = None, kind: str | None = None, visible_to: str | None = None,
    ) -> list[GenerationRecord]:
        """Newest first; ``model`` is 'name@N', a ModelVersion, or 'name' for all its versions;
        ``before`` (a generation id) pages: only the ones listed after it; ``visible_to``: only
        that owner's."""
        q = select(GenerationRow)
        if visible_to is not None:
            q = q.where(GenerationRow.owner == visible_to)
        if isinstance(model, ModelVersion):
            q = q.where(GenerationRow.model_version_id == model.id)
        elif model is not None:
            name, version = parse_model_ref(model)
            variant = split_variant(model)[1]
            if version is not None:  # a variant's outputs are recorded under its own ref
                q = q.where(GenerationRow.model == f"{name}@{version}"
                            + (f":{variant}" if variant else ""))
            else:
                q = q.join(ModelVersionRow).where(ModelVersionRow.name == name)
        if kind is not None:
            q = q.where(GenerationRow.kind == kind)
        with self.read() as s:
            if before is not None:
                anchor = s.get(GenerationRow, before)
                if anchor is None or not is_visible(anchor, visible_to):
                    raise NotFound(f"no generation with id {before!r}")
                q = q.where((GenerationRow.created_at < anchor.created_at)
                            | ((GenerationRow.created_at == anchor.created_at)
                               & (GenerationRow.id > anchor.id)))
            q = q.order_by(GenerationRow.created_at.desc(), GenerationRow.id).limit(limit)
            return [GenerationRecord.model_validate(r) for r in s.scalars(q)]

    def count_generations(self, model: str, visible_to: str | None = None) -> int:
        """How many generations ``model`` ('name': all its versions, 'name@N': that one) made;
        ``visible_to``: of that owner's."""
        q = select(func.count()).select_from(GenerationRow).where(
            GenerationRow.model_version_id.in_(_version_ids(model)))
        if visible_to is not None:
            q = q.where(GenerationRow.owner == visible_to)
        with self.read() as s:
            return int(s.scalar(q) or 0)

    def model_feedback(
        self, model: str, visible_to: str | None = None
    ) -> list[tuple[FeedbackRecord, GenerationRecord, GenerationRecord | None]]:
        """Every feedback on an output of ``model`` ('name': all its versions, 'name@N': that
        one), oldest first, in one query: each with its generation and, for a preference, the
        rejected one (a preference counts when either side is the model's). ``visible_to``:
        only that owner's feedback, on that owner's generations."""
        rated, other = aliased(GenerationRow), aliased(GenerationRow)
        versions = _version_ids(model)
        q = (select(FeedbackRow, rated, other)
             .join(rated, FeedbackRow.generation_id == rated.id)
             .outerjoin(other, FeedbackRow.other_generation_id == other.id)
             .where(or_(rated.model_version_id.in_(versions), other.model_version_id.in_(versions)))
             .order_by(FeedbackRow.created_at, FeedbackRow.id))
        if visible_to is not None:
            q = q.where(FeedbackRow.owner == visible_to, rated.owner == visible_to,
                        or_(other.id.is_(None), other.owner == visible_to))
        with self.read() as s:
            return [(FeedbackRecord.model_validate(f), GenerationRecord.model_validate(g),
                     None if o is None else GenerationRecord.model_validate(o))
                    for f, g, o in s.execute(q)]


def _with_variant(version: ModelVersion, variant: str) -> ModelVersion:
    """``version`` as its servable ``variant``, which its directory must hold."""
    have = ModelDir(Path(version.path)).variants()
    if variant not in have:
        listed = (f"{version.ref} has variants: {', '.join(f'{version.ref}:{v}' for v in have)}"
                  if have else f"{version.ref} has none (make one: `genloop models quantize "
                  f"{version.ref}`)")
        raise NotFound(f"model {version.ref}:{variant} not found; {listed}")
    return version.model_copy(update={"variant": variant})


def _version_ids(model: str) -> Select[Any]:
    """The ids of the versions 'name' (all) or 'name@N' (that one) stands for."""
    name, version = parse_model_ref(model)
    q = select(ModelVersionRow.id).where(ModelVersionRow.name == name)
    return q if version is None else q.where(ModelVersionRow.version == version)
