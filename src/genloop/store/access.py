"""The HTTP API's records: API keys, feedback on generations, and idempotency keys.

- **Keys.** A secret is ``gl_<id>_<token>`` (token: 32 random bytes, URL-safe). Only its SHA-256
  is stored, so a copied database or backup grants nothing; the secret is shown once, by
  :meth:`AccessRecords.create_key`. Verifying parses the id out of the secret and reads that one
  row by primary key, so it costs one indexed read whatever the number of keys, and compares the
  digests in constant time.
- **Idempotency.** A key claims a row ``(scope, key)`` in one write transaction; the primary key
  decides who owns it, so of two concurrent claims exactly one wins (``BEGIN IMMEDIATE`` on
  SQLite; on PostgreSQL the loser's insert fails and it reads the winner's row).
- **Owners.** A key has an ``owner`` (by default its name) and a ``scope`` (``KEY_SCOPES``):
  generations and feedback made with it are stamped with its owner, and the read and write
  methods here and in :class:`genloop.store.Store` take ``visible_to``: an owner whose records
  alone are seen (None: every record, as the CLI and admin keys see them). A record another
  owner holds is NotFound, exactly as one that does not exist, so ids don't reveal existence.
- **Feedback** can be written together with its idempotency row in one transaction, so a crash
  never leaves a rating without the record of its key (a retry would add it twice) or a key whose
  rating was never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from genloop.errors import Conflict, InvalidInput, NotFound
from genloop.store.db import (
    FEEDBACK_KINDS,
    KEY_SCOPES,
    ApiKeyRecord,
    ApiKeyRow,
    Database,
    FeedbackRecord,
    FeedbackRow,
    GenerationRecord,
    GenerationRow,
    IdempotencyRecord,
    IdempotencyRow,
    new_id,
    utcnow,
)

KEY_NAME_RULE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_KEY_NAME = re.compile(KEY_NAME_RULE)
_KEY_ID = re.compile(r"^[0-9a-f]{12}$")
# token_urlsafe(32) is 43 characters; the bound keeps hashing of junk input cheap
_SECRET = re.compile(r"^gl_(?P<id>[0-9a-f]{12})_[A-Za-z0-9_-]{20,100}$")
PREFIX_LENGTH = 10
MAX_IDEMPOTENCY_KEY = 255
MAX_COMMENT = 2000
STALE_AFTER_S = 600.0
_FEEDBACK_VALUES = {"rating": range(1, 6), "thumbs": (1, -1), "preference": (1,)}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def validate_key_name(name: str) -> str:
    """Names are typed on command lines; a 12-hex name would read as another key's id."""
    if not isinstance(name, str) or not _KEY_NAME.match(name) or _KEY_ID.match(name):
        raise InvalidInput(
            f"key name {name!r} is invalid: it must match {KEY_NAME_RULE} (letters, digits, "
            "'.', '_', '-'; at most 64 characters) and not look like a 12-hex key id"
        )
    return name


def validate_owner(owner: str) -> str:
    """Owners are named like keys (a 12-hex owner is fine: it is never looked up as an id)."""
    if not isinstance(owner, str) or not _KEY_NAME.match(owner):
        raise InvalidInput(f"owner {owner!r} is invalid: it must match {KEY_NAME_RULE}")
    return owner


def validate_scope(scope: str) -> str:
    if scope not in KEY_SCOPES:
        raise InvalidInput(f"key scope {scope!r} is invalid: use one of {', '.join(KEY_SCOPES)}")
    return scope


def is_visible(row: GenerationRow | None, visible_to: str | None) -> bool:
    return row is not None and (visible_to is None or row.owner == visible_to)


def _check_idempotency_key(scope: str, key: str) -> None:
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidInput(
            f"idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY} characters, got {len(key)}"
        )
    if not scope or len(scope) > 32:
        raise InvalidInput(f"idempotency scope {scope!r} is invalid: an API key id or '-'")


def _is_stale(row: IdempotencyRow, stale_after_s: float) -> bool:
    """A pending row this old belongs to a request that died; a new one may take it over."""
    return row.status == "pending" and utcnow() - row.updated_at > timedelta(seconds=stale_after_s)


def _idempotency_row(s: Session, scope: str, key: str) -> IdempotencyRow | None:
    """The row, locked until the transaction ends (SQLite: already, by BEGIN IMMEDIATE)."""
    return s.scalar(
        select(IdempotencyRow)
        .where(IdempotencyRow.scope == scope, IdempotencyRow.key == key)
        .with_for_update()
    )


def _replayed_feedback(row: IdempotencyRow, request_hash: str) -> FeedbackRecord:
    """The feedback an earlier request with this key stored, or Conflict if it can't be replayed."""
    if row.status == "pending":
        raise Conflict(
            f"a request with idempotency key {row.key!r} is still in progress; retry later"
        )
    if row.request_hash == request_hash:
        try:
            return FeedbackRecord.model_validate(row.response)
        except ValidationError:
            pass  # the key answered another kind of request
    raise Conflict(
        f"idempotency key {row.key!r} was already used for a different request; send a new key"
    )


def _check_feedback(
    kind: str, generation_id: str, value: int, other_generation_id: str | None, comment: str | None
) -> None:
    if kind not in FEEDBACK_KINDS:
        raise InvalidInput(f"feedback kind {kind!r} is invalid: use one of {FEEDBACK_KINDS}")
    allowed = _FEEDBACK_VALUES[kind]
    if isinstance(value, bool) or value not in allowed:
        raise InvalidInput(
            f"{kind} value {value!r} is invalid: use one of {', '.join(map(str, allowed))}"
        )
    if (kind == "preference") != (other_generation_id is not None):
        raise InvalidInput(
            "other_generation_id (the rejected generation) is required for a preference and "
            "only for one"
        )
    if other_generation_id == generation_id:
        raise InvalidInput(
            f"a preference needs two different generations; both are {generation_id!r}"
        )
    if comment is not None and len(comment) > MAX_COMMENT:
        raise InvalidInput(
            f"comment is {len(comment)} characters; the limit is {MAX_COMMENT}"
        )


class AccessRecords(Database):
    """API keys, feedback and idempotency keys; :class:`genloop.store.Store` inherits these."""

    # --- API keys ---------------------------------------------------------------------------

    def create_key(self, name: str, *, scope: str = "generate",
                   owner: str | None = None) -> tuple[ApiKeyRecord, str]:
        """A new key and its secret; the secret exists only in this return value. The key sees
        and makes records of ``owner`` (default: its name) as its ``scope`` allows."""
        validate_key_name(name)
        validate_scope(scope)
        owner = validate_owner(name if owner is None else owner)
        key_id = new_id(12)
        secret = f"gl_{key_id}_{secrets.token_urlsafe(32)}"
        taken = InvalidInput(
            f"an API key named {name!r} already exists (revoked keys keep their names); "
            "choose another name, see `genloop keys list`"
        )
        try:
            with self.write() as s:
                if s.scalar(select(ApiKeyRow.id).where(ApiKeyRow.name == name)) is not None:
                    raise taken
                row = ApiKeyRow(
                    id=key_id, name=name, prefix=secret[:PREFIX_LENGTH], hash=_digest(secret),
                    owner=owner, scope=scope,
                )
                s.add(row)
                s.flush()
                record = ApiKeyRecord.model_validate(row)
        except IntegrityError:
            raise taken from None  # lost a race for the name on PostgreSQL
        return record, secret

    def list_keys(self, include_revoked: bool = True) -> list[ApiKeyRecord]:
        """Keys, newest first."""
        q = select(ApiKeyRow).order_by(ApiKeyRow.created_at.desc(), ApiKeyRow.id)
        if not include_revoked:
            q = q.where(ApiKeyRow.revoked_at.is_(None))
        with self.read() as s:
            return [ApiKeyRecord.model_validate(r) for r in s.scalars(q)]

    def revoke_key(self, id_or_name: str) -> ApiKeyRecord:
        """Revoke a key by id or name from now on; revoking it again keeps the first time."""
        with self.write() as s:  # the row locked: of concurrent revokes, the first time stays
            row = (s.get(ApiKeyRow, id_or_name, with_for_update=True)
                   if _KEY_ID.match(id_or_name) else None)
            if row is None:
                row = s.scalar(
                    select(ApiKeyRow).where(ApiKeyRow.name == id_or_name).with_for_update())
            if row is None:
                raise NotFound(f"no API key with id or name {id_or_name!r}; see `genloop keys list`")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                s.flush()
            return ApiKeyRecord.model_validate(row)

    def verify_key(self, secret: str) -> ApiKeyRecord | None:
        """The live key this secret belongs to; None if it is malformed, unknown or revoked."""
        m = _SECRET.match(secret) if isinstance(secret, str) else None
        if m is None:
            return None
        digest = _digest(secret)
        with self.read() as s:
            row = s.get(ApiKeyRow, m["id"])
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.hash, digest):
                return None
            return ApiKeyRecord.model_validate(row)

    # --- idempotency ------------------------------------------------------------------------

    def claim_idempotency(
        self, scope: str, key: str, request_hash: str, *, stale_after_s: float = STALE_AFTER_S
    ) -> IdempotencyRecord | None:
        """None: the key is new and now yours (a pending row holds it) — do the work, then
        :meth:`finish_idempotency` or :meth:`release_idempotency`. Otherwise the earlier row:
        done with the same ``request_hash`` → replay its response; a different hash, or still
        pending → conflict. A pending row older than ``stale_after_s`` is taken over."""
        _check_idempotency_key(scope, key)
        for _ in range(3):
            try:
                with self.write() as s:
                    row = _idempotency_row(s, scope, key)
                    if row is not None and not _is_stale(row, stale_after_s):
                        return IdempotencyRecord.model_validate(row)
                    now = utcnow()
                    if row is None:
                        row = IdempotencyRow(scope=scope, key=key)
                        s.add(row)
                    row.request_hash, row.status = request_hash, "pending"
                    row.response_status, row.response = None, None
                    row.created_at, row.updated_at = now, now
                    s.flush()
                    return None
            except IntegrityError:
                continue  # PostgreSQL: a concurrent claim inserted it first; read theirs
        raise Conflict(f"idempotency key {key!r} is contended; retry later")

    def finish_idempotency(
        self, scope: str, key: str, status: int, response: Any
    ) -> IdempotencyRecord:
        """Keep the answer to a claimed key: HTTP ``status`` and the JSON ``response`` body."""
        with self.write() as s:
            row = _idempotency_row(s, scope, key)
            if row is None:
                raise NotFound(
                    f"idempotency key {key!r} in scope {scope!r} is not claimed; claim it first"
                )
            row.status, row.response_status, row.response = "done", status, response
            row.updated_at = utcnow()
            s.flush()
            return IdempotencyRecord.model_validate(row)

    def release_idempotency(self, scope: str, key: str) -> bool:
        """Forget a pending key whose work failed, so a retry may run; a done key is kept."""
        with self.write() as s:
            result = s.execute(
                delete(IdempotencyRow).where(
                    IdempotencyRow.scope == scope,
                    IdempotencyRow.key == key,
                    IdempotencyRow.status == "pending",
                )
            )
            return bool(getattr(result, "rowcount", 0))

    # --- feedback ---------------------------------------------------------------------------

    def add_feedback(
        self,
        kind: str,
        generation_id: str,
        value: int,
        *,
        other_generation_id: str | None = None,
        comment: str | None = None,
        key_id: str | None = None,
        idempotency: tuple[str, str, str] | None = None,
        stale_after_s: float = STALE_AFTER_S,
        owner: str | None = None,
        visible_to: str | None = None,
    ) -> tuple[FeedbackRecord, bool]:
        """Record feedback; returns it and whether it is a replay.

        ``owner`` is stamped on the row; a generation ``visible_to`` does not see is NotFound,
        and a preference between generations of two owners is refused.

        ``idempotency`` = (scope, key, request_hash): the feedback row and a done idempotency
        row (its response: the feedback's JSON, status 201) are written in one transaction. A
        repeat with the same key and hash returns the stored feedback and True; the same key
        with another hash, or still pending from another request, raises Conflict.
        """
        _check_feedback(kind, generation_id, value, other_generation_id, comment)
        if idempotency is not None:
            _check_idempotency_key(idempotency[0], idempotency[1])
        for attempt in range(3):
            try:
                with self.write() as s:
                    earlier = None
                    if idempotency is not None:
                        earlier = _idempotency_row(s, idempotency[0], idempotency[1])
                        if earlier is not None and not _is_stale(earlier, stale_after_s):
                            return _replayed_feedback(earlier, idempotency[2]), True
                    owners: set[str | None] = set()
                    for gid in (generation_id, other_generation_id):
                        if gid is None:
                            continue
                        generation = s.get(GenerationRow, gid)
                        if generation is None or not is_visible(generation, visible_to):
                            raise NotFound(f"no generation with id {gid!r}")
                        owners.add(generation.owner)
                    if len(owners) > 1:
                        raise InvalidInput(
                            f"a preference compares generations of one owner; {generation_id!r} "
                            f"and {other_generation_id!r} belong to different owners")
                    if key_id is not None and s.get(ApiKeyRow, key_id) is None:
                        raise NotFound(f"no API key with id {key_id!r}")
                    row = FeedbackRow(
                        id=new_id(),
                        kind=kind,
                        generation_id=generation_id,
                        other_generation_id=other_generation_id,
                        value=value,
                        comment=comment,
                        key_id=key_id,
                        owner=owner,
                    )
                    s.add(row)
                    s.flush()
                    record = FeedbackRecord.model_validate(row)
                    if idempotency is not None:
                        scope, key, request_hash = idempotency
                        if earlier is None:
                            earlier = IdempotencyRow(scope=scope, key=key)
                            s.add(earlier)
                        now = utcnow()
                        earlier.request_hash, earlier.status = request_hash, "done"
                        earlier.response_status = 201
                        earlier.response = record.model_dump(mode="json")
                        earlier.created_at, earlier.updated_at = now, now
                        s.flush()
                    return record, False
            except IntegrityError:
                if idempotency is None or attempt == 2:
                    raise
                # PostgreSQL: a concurrent request inserted the same key first; read theirs
        raise AssertionError("unreachable")

    def list_feedback(
        self, generation_id: str | None = None, *, kind: str | None = None,
        limit: int | None = 100, visible_to: str | None = None,
    ) -> list[FeedbackRecord]:
        """Newest first; ``generation_id`` matches either side of a preference too;
        ``visible_to``: only that owner's feedback."""
        q = select(FeedbackRow)
        if visible_to is not None:
            q = q.where(FeedbackRow.owner == visible_to)
        if generation_id is not None:
            q = q.where(
                or_(
                    FeedbackRow.generation_id == generation_id,
                    FeedbackRow.other_generation_id == generation_id,
                )
            )
        if kind is not None:
            q = q.where(FeedbackRow.kind == kind)
        q = q.order_by(FeedbackRow.created_at.desc(), FeedbackRow.id).limit(limit)
        with self.read() as s:
            return [FeedbackRecord.model_validate(r) for r in s.scalars(q)]

    def feedback_for(self, generation_ids: list[str],
                     visible_to: str | None = None) -> dict[str, list[FeedbackRecord]]:
        """The feedback of each of ``generation_ids`` (either side of a preference), newest
        first, in one query: a page of history needs it for every row."""
        if not generation_ids:
            return {}
        q = (select(FeedbackRow)
             .where(or_(FeedbackRow.generation_id.in_(generation_ids),
                        FeedbackRow.other_generation_id.in_(generation_ids)))
             .order_by(FeedbackRow.created_at.desc(), FeedbackRow.id))
        if visible_to is not None:
            q = q.where(FeedbackRow.owner == visible_to)
        found: dict[str, list[FeedbackRecord]] = {gid: [] for gid in generation_ids}
        with self.read() as s:
            for row in s.scalars(q):
                record = FeedbackRecord.model_validate(row)
                for gid in {row.generation_id, row.other_generation_id}:
                    if gid in found:
                        found[gid].append(record)
        return found

    def list_preferences(
        self, visible_to: str | None = None
    ) -> list[tuple[FeedbackRecord, GenerationRecord, GenerationRecord]]:
        """Every preference with its chosen and rejected generations, oldest first (one query);
        ``visible_to``: only that owner's."""
        chosen, rejected = aliased(GenerationRow), aliased(GenerationRow)
        q = (
            select(FeedbackRow, chosen, rejected)
            .join(chosen, FeedbackRow.generation_id == chosen.id)
            .join(rejected, FeedbackRow.other_generation_id == rejected.id)
            .where(FeedbackRow.kind == "preference")
            .order_by(FeedbackRow.created_at, FeedbackRow.id)
        )
        if visible_to is not None:
            q = q.where(FeedbackRow.owner == visible_to, chosen.owner == visible_to,
                        rejected.owner == visible_to)
        with self.read() as s:
            return [
                (
                    FeedbackRecord.model_validate(f),
                    GenerationRecord.model_validate(c),
                    GenerationRecord.model_validate(r),
                )
                for f, c, r in s.execute(q)
            ]

