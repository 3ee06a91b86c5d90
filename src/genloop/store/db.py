"""Tables, typed records and the engine: one database per workspace, SQLite or PostgreSQL.

SQLite is made safe for several processes (CLI, API workers, trainers) sharing one file: WAL so
readers never block the writer, a 30 s busy timeout instead of instant "database is locked", and
``BEGIN IMMEDIATE`` for every write transaction, so a writer takes the write lock *before* it
reads (e.g. ``max(version)``) and two writers can never both read the same value. This is
SQLAlchemy's documented pysqlite recipe: the driver's own transaction handling is switched off
(``isolation_level = None``) and the ``begin`` event emits the BEGIN we want. Reads go through a
second engine that emits a plain deferred ``BEGIN``. Nothing here is SQLite-only outside the
``sqlite`` branch, so the same code runs on PostgreSQL (``postgresql+psycopg://...``), where
read-modify-write paths lock their row (``SELECT ... FOR UPDATE``; SQLite ignores it) and model
registration takes an advisory lock per name. The column types keep values the same on both:
JSON as written (PostgreSQL's ``json``, not ``jsonb``, which reorders keys and refuses ``\u0000``),
non-finite floats as null (JSON has no NaN), datetimes aware and in UTC, seeds 64-bit.

Functions return the record types below (pydantic, detached from any session), never ORM rows.
"""

from __future__ import annotations

import math
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

from genloop.config import settings
from genloop.store.paths import WorkspacePath

RUN_STATUSES = ("running", "completed", "stopped", "failed", "diverged")
FEEDBACK_KINDS = ("rating", "thumbs", "preference")
# What an API key may do: admin (everything), generate (generate; read and rate its owner's
# records), read (read its owner's records). A key made before scopes existed is an admin.
KEY_SCOPES = ("admin", "generate", "read")

# Any constant works: it only has to be the same in every process that creates the schema.
_SCHEMA_LOCK_KEY = 0x67656E6C6F6F70  # "genloop"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(length: int = 32) -> str:
    """Random hex id; runs use 12 characters so they are easy to type."""
    return uuid.uuid4().hex[:length]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset on its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)  # PostgreSQL answers in the session's time zone


def json_safe(value: Any) -> Any:
    """``value`` as JSON can hold it: non-finite floats (NaN, ±inf) become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class JSONType(TypeDecorator[Any]):
    """JSON kept as written on every backend: SQLite's text, PostgreSQL's ``json`` (``jsonb``
    would reorder keys, so a replayed response would differ, and refuses ``\u0000``). NaN and
    ±inf are stored as null: PostgreSQL rejects them, and no JSON reader takes them."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return json_safe(value)


# --- tables ---------------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class DatasetRow(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    hash: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id(12))
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    recipe: Mapped[dict[str, Any]] = mapped_column(JSONType)
    recipe_hash: Mapped[str] = mapped_column(String(128))
    dataset_hash: Mapped[str] = mapped_column(String(128))
    family: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    family: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    dataset_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    recipe_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    parent: Mapped[str | None] = mapped_column(String(80), nullable=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RequestRow(Base):
    """What the choices of one request share (settings, chat messages), stored once under its
    content hash however many choices, or requests, carry it."""

    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)  # "sha256:<hex>" of the JSON
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GenerationRow(Base):
    __tablename__ = "generations"
    __table_args__ = (Index("ix_generations_owner_created", "owner", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model: Mapped[str] = mapped_column(String(80), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # this choice's own fields (prompt, seed, index); the rest is in ``requests`` (request_id),
    # or, in rows written before that table, all of it here
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    request_id: Mapped[str | None] = mapped_column(ForeignKey("requests.id"), nullable=True,
                                                   index=True)
    shared: Mapped[RequestRow | None] = relationship(lazy="joined")
    seed: Mapped[int] = mapped_column(BigInteger)  # 64-bit seeds fit on PostgreSQL too
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    file: Mapped[str | None] = mapped_column(Text, nullable=True)
    content_hash: Mapped[str] = mapped_column(String(128))
    safety: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    timings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # the owner of the API key that asked for it; None: the workspace's (CLI, Python, auth off)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # the record's provenance, signed as it was written (the generation layer's ``sign``: the
    # claims, ES256 and the signer's fingerprint); None: a row from before generation-time signing
    signature: Mapped[dict[str, Any] | None] = mapped_column(JSONType(none_as_null=True), nullable=True)


class ApiKeyRow(Base):
    """An API key: only the SHA-256 of the secret is kept, so a copied database grants nothing."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    owner: Mapped[str] = mapped_column(String(64))  # whose records the key sees and makes
    scope: Mapped[str] = mapped_column(String(16))  # one of KEY_SCOPES


class FeedbackRow(Base):
    """A rating or thumbs on one generation, or a preference (generation = chosen, other =
    rejected)."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_kind_created", "kind", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"), index=True)
    other_generation_id: Mapped[str | None] = mapped_column(
        ForeignKey("generations.id"), nullable=True, index=True
    )
    value: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)  # as a generation's


class IdempotencyRow(Base):
    """One Idempotency-Key per scope (an API key id, or "-" with auth off) and its kept answer."""

    __tablename__ = "idempotency"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response: Mapped[Any] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- records (what the store hands out) -----------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)

    @field_validator("*")
    @classmethod
    def _as_stored(cls, value: Any) -> Any:
        """A record made from a row just written shows JSON as it was stored (NaN as None)."""
        return json_safe(value) if isinstance(value, dict | list) else value


class DatasetRecord(_Record):
    id: int
    name: str
    hash: str
    kind: str
    path: WorkspacePath
    meta: dict[str, Any]
    created_at: datetime


class RunRecord(_Record):
    id: str
    status: str
    recipe: dict[str, Any]
    recipe_hash: str
    dataset_hash: str
    family: str
    model_name: str
    step: int
    metrics: dict[str, Any]
    error: str | None
    path: WorkspacePath
    created_at: datetime
    updated_at: datetime


class ModelVersion(_Record):
    id: int
    name: str
    version: int
    family: str
    path: WorkspacePath
    dataset_hash: str | None
    recipe_hash: str | None
    parent: str | None
    run_id: str | None
    metrics: dict[str, Any]
    created_at: datetime
    variant: str | None = None  # a servable variant of the version (``name@N:int8``), not a row

    @property
    def ref(self) -> str:
        """The reference users type: ``name@N`` (``name@N:variant`` for a variant)."""
        return f"{self.name}@{self.version}" + (f":{self.variant}" if self.variant else "")


class GenerationRecord(_Record):
    """``request`` is the whole request of this one choice: the shared part (``request_id``,
    stored once) with the choice's own fields over it."""

    id: str
    model: str
    model_version_id: int
    kind: str
    request: dict[str, Any]
    request_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _whole_request(cls, data: Any) -> Any:
        """From a row: its shared request (if any) with the choice's own fields over it."""
        if not isinstance(data, GenerationRow):
            return data
        fields = {name: getattr(data, name) for name in cls.model_fields}
        if data.shared is not None:
            fields["request"] = {**data.shared.body, **data.request}
        return fields
    seed: int
    output: str | None
    file: WorkspacePath | None
    content_hash: str
    safety: dict[str, Any] | None
    timings: dict[str, Any]
    created_at: datetime
    owner: str | None = None
    signature: dict[str, Any] | None = None  # made with the row (``record_generation``'s sign)


class ApiKeyRecord(_Record):
    """A key as lists show it: never its secret, nor the secret's hash."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    owner: str
    scope: str

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class FeedbackRecord(_Record):
    id: str
    kind: str
    generation_id: str
    other_generation_id: str | None
    value: int
    comment: str | None
    key_id: str | None
    created_at: datetime
    owner: str | None = None


class IdempotencyRecord(_Record):
    scope: str
    key: str
    request_hash: str
    status: str
    response_status: int | None
    response: Any
    created_at: datetime
    updated_at: datetime


# --- engine ---------------------------------------------------------------------------------


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL once; it is persistent, so later opens only read the mode.

    Changing the mode needs an exclusive lock and SQLite does not apply the busy timeout to
    it, so processes opening a fresh workspace at the same moment retry here for up to 30 s.
    """
    deadline = time.monotonic() + 30
    while True:
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] in ("wal", "memory"):
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Hand transaction control to the "begin" event below (SQLAlchemy pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL, much faster
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


# How rows that existed before a column was added get its value (the column's SQL expression);
# a key made before owners and scopes existed is an admin owned by its name.
BACKFILL = {("api_keys", "owner"): "name", ("api_keys", "scope"): "'admin'"}


def _add_missing_columns(conn: Any) -> None:
    """Bring a database made by an older genloop up to the tables above, additively (inside the
    schema transaction, so concurrent first opens add them once): a column a table lacks is
    added, with its index; one that may not be null gets its ``BACKFILL`` value in the rows that
    were there. Nothing is ever dropped or changed."""
    inspector = inspect(conn)
    for table in Base.metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c for c in table.columns if c.name not in present]
        for column in missing:
            fill = BACKFILL.get((table.name, column.name))
            if not column.nullable and fill is None:
                raise RuntimeError(f"table {table.name!r} lacks column {column.name!r}, which "
                                   "cannot be added to existing rows")
            kind = column.type.compile(dialect=conn.dialect)
            refs = "".join(f" REFERENCES {fk.column.table.name} ({fk.column.name})"
                           for fk in column.foreign_keys)
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}{refs}"))
            if fill is not None:
                conn.execute(text(f"UPDATE {table.name} SET {column.name} = {fill}"))
        added = {c.name for c in missing}
        for index in table.indexes:
            if added & {c.name for c in index.columns}:
                index.create(conn, checkfirst=True)


class Database:
    """Engines and sessions for one workspace database; the schema is created on open.

    ``write()`` and ``read()`` are the only ways in: a write session commits on success and rolls
    back on an exception; a read session never commits.
    """

    def __init__(self, url: str | None = None) -> None:
        s = settings()
        self.url = url or s.db_url
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                s.home.mkdir(parents=True, exist_ok=True)
            self._write_engine = _sqlite_engine(self.url, "BEGIN IMMEDIATE")
            self._read_engine = _sqlite_engine(self.url, "BEGIN")
        else:
            self._write_engine = create_engine(self.url, pool_pre_ping=True)
            self._read_engine = self._write_engine
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        self._create_schema()

    def _create_schema(self) -> None:
        with self._write_engine.begin() as conn:
            if self.dialect == "postgresql":
                # Serialize concurrent first opens (several API workers starting at once).
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            Base.metadata.create_all(conn)
            _add_missing_columns(conn)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        with self._write_sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session; under WAL it never waits for a writer."""
        with self._read_sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    def close(self) -> None:
        """Release pooled connections (tests, and processes that fork)."""
        self._write_engine.dispose()
        if self._read_engine is not self._write_engine:
            self._read_engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
