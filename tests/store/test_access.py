"""API keys, feedback and idempotency keys in a real workspace, on SQLite and on PostgreSQL, with
real threads and processes racing for the same idempotency key."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from genloop.errors import Conflict, InvalidInput, NotFound
from genloop.store import GenerationRecord, Store, access
from genloop.store.db import Base, FeedbackRow, IdempotencyRow


def make_generations(store: Store, home: Path, n: int = 2) -> list[GenerationRecord]:
    """``n`` text generations of one registered model version."""
    staged = home / "staging" / "m"
    staged.mkdir(parents=True)
    (staged / "config.json").write_text("{}")
    mv = store.register_model("m", staged, family="gpt")
    return [
        store.record_generation(model=mv, kind="text", request={"prompt": "Hi"}, seed=i,
                                output=f"there {i}", file=None, content_hash=f"h{i}", timings={})
        for i in range(n)
    ]


def feedback_count(store: Store) -> int:
    with store.read() as s:
        return s.scalar(select(func.count()).select_from(FeedbackRow)) or 0


# --- API keys ---------------------------------------------------------------------------------


def test_create_and_verify_key(store: Store) -> None:
    key, secret = store.create_key("laptop")
    assert secret.startswith(f"gl_{key.id}_") and len(key.id) == 12
    assert key.prefix == secret[:10] and key.name == "laptop" and not key.revoked
    assert set(key.model_dump()) == {"id", "name", "prefix", "created_at", "revoked_at", "owner",
                                     "scope"}
    assert store.verify_key(secret) == key
    assert store.list_keys() == [key]
    other, other_secret = store.create_key("ci")
    assert other_secret != secret
    assert [k.name for k in store.list_keys()] == ["ci", "laptop"]  # newest first


def database_bytes(store: Store, workspace: Path) -> bytes:
    """Everything the database holds: SQLite's files, or every row of every table as text."""
    if store.dialect == "sqlite":
        files = [p for p in workspace.iterdir() if p.name.startswith("genloop.db")]
        assert {p.name for p in files} >= {"genloop.db", "genloop.db-wal"}
        return b"".join(p.read_bytes() for p in files)
    with store.read() as s:
        return "\n".join(str(row) for table in Base.metadata.sorted_tables
                         for row in s.execute(text(f"SELECT t::text FROM {table.name} t"))).encode()


def test_secret_is_never_stored_but_its_hash_is(store: Store, workspace: Path) -> None:
    key, secret = store.create_key("laptop")
    token = secret.removeprefix(f"gl_{key.id}_")
    data = database_bytes(store, workspace)
    assert secret.encode() not in data and token.encode() not in data
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in data


def test_malformed_unknown_or_wrong_secrets_fail(store: Store) -> None:
    key, secret = store.create_key("laptop")
    token = secret.removeprefix(f"gl_{key.id}_")
    wrong_token = ("A" if token[0] != "A" else "B") + token[1:]
    for bad in ["", "gl_", secret[:-1] + "\n", secret + "x" * 10_000, f"Bearer {secret}",
                f"gl_{key.id}_{wrong_token}", f"gl_{'0' * 12}_{token}", secret.upper()]:
        assert store.verify_key(bad) is None, bad
    assert store.verify_key(secret) == key


def test_verify_is_one_primary_key_read(store: Store) -> None:
    _, secret = store.create_key("laptop")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(store._read_engine, "before_cursor_execute", seen)
    try:
        assert store.verify_key(secret) is not None
    finally:
        event.remove(store._read_engine, "before_cursor_execute", seen)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and "WHERE api_keys.id = " in selects[0]


def test_revoked_key_fails_verify(store: Store) -> None:
    key, secret = store.create_key("laptop")
    kept, kept_secret = store.create_key("ci")
    revoked = store.revoke_key("laptop")
    assert revoked.revoked and revoked.id == key.id
    assert store.verify_key(secret) is None
    assert store.verify_key(kept_secret) == kept
    assert store.revoke_key(key.id).revoked_at == revoked.revoked_at  # twice is fine
    assert store.list_keys(include_revoked=False) == [kept]
    assert {k.id: k.revoked for k in store.list_keys()} == {key.id: True, kept.id: False}
    with pytest.raises(NotFound, match="'nope'"):
        store.revoke_key("nope")


def test_key_names_are_checked_and_unique(store: Store) -> None:
    store.create_key("laptop")
    with pytest.raises(InvalidInput, match="already exists"):
        store.create_key("laptop")
    for bad in ["", "-x", "has space", "x" * 65, "0123456789ab"]:
        with pytest.raises(InvalidInput, match="key name"):
            store.create_key(bad)
    assert len(store.list_keys()) == 1


# --- idempotency ------------------------------------------------------------------------------


def test_idempotency_claim_finish_replay(store: Store) -> None:
    assert store.claim_idempotency("-", "k1", "h") is None
    pending = store.claim_idempotency("-", "k1", "h")
    assert pending is not None and pending.status == "pending" and pending.response is None
    assert store.claim_idempotency("other-scope", "k1", "h") is None  # keys are per scope
    done = store.finish_idempotency("-", "k1", 200, {"choices": [{"text": "hi"}]})
    assert done.status == "done" and done.response_status == 200
    again = store.claim_idempotency("-", "k1", "different")
    assert again is not None and again.request_hash == "h"
    assert again.response == {"choices": [{"text": "hi"}]} and again.response_status == 200
    assert store.release_idempotency("-", "k1") is False  # a done key is kept
    assert store.claim_idempotency("-", "k1", "h") == again


def test_idempotency_release_and_stale(store: Store) -> None:
    assert store.claim_idempotency("-", "k", "h") is None
    assert store.release_idempotency("-", "k") is True
    assert store.claim_idempotency("-", "k", "h2") is None  # released: claimable again
    assert store.claim_idempotency("-", "k", "h3", stale_after_s=3600) is not None
    assert store.claim_idempotency("-", "k", "h3", stale_after_s=0) is None  # a dead request's
    assert store.claim_idempotency("-", "k", "h3").request_hash == "h3"  # type: ignore[union-attr]
    with pytest.raises(NotFound, match="not claimed"):
        store.finish_idempotency("-", "never", 200, {})
    with pytest.raises(InvalidInput, match="255"):
        store.claim_idempotency("-", "x" * 256, "h")


def test_concurrent_claims_from_threads_exactly_one_wins(store: Store) -> None:
    n = 8
    barrier = threading.Barrier(n)
    results: list[object] = []
    lock = threading.Lock()

    def claim() -> None:
        s = Store()
        try:
            barrier.wait()
            got = s.claim_idempotency("-", "race", "h")
        finally:
            s.close()
        with lock:
            results.append(got)

    threads = [threading.Thread(target=claim) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == n
    assert sum(r is None for r in results) == 1


def _claim_in_process(home: str, barrier: Any, queue: Any) -> None:
    os.environ["GENLOOP_HOME"] = home
    s = Store()
    try:
        barrier.wait()
        queue.put(s.claim_idempotency("-", "race", "h") is None)
    finally:
        s.close()


@pytest.mark.slow
def test_concurrent_claims_from_processes_exactly_one_wins(store: Store, workspace: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(str(workspace), barrier, queue))
             for _ in range(3)]
    for p in procs:
        p.start()
    won = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(won) == [False, False, True]


# --- feedback ---------------------------------------------------------------------------------


def test_add_and_list_feedback(store: Store, workspace: Path) -> None:
    a, b = make_generations(store, workspace)
    key, _ = store.create_key("laptop")
    rating, replayed = store.add_feedback("rating", a.id, 4, comment="good", key_id=key.id)
    assert not replayed and rating.kind == "rating" and rating.value == 4
    assert rating.comment == "good" and rating.key_id == key.id and rating.created_at.tzinfo
    thumbs, _ = store.add_feedback("thumbs", b.id, -1)
    pref, _ = store.add_feedback("preference", b.id, 1, other_generation_id=a.id)
    assert pref.generation_id == b.id and pref.other_generation_id == a.id
    assert store.list_feedback() == [pref, thumbs, rating]  # newest first
    assert store.list_feedback(a.id) == [pref, rating]  # either side of a preference
    assert store.list_feedback(a.id, kind="rating") == [rating]
    assert store.list_feedback(limit=1) == [pref]
    assert store.list_feedback("unknown") == []


def test_feedback_for_unknown_generation_is_not_found_and_writes_nothing(
    store: Store, workspace: Path
) -> None:
    (a,) = make_generations(store, workspace, 1)
    with pytest.raises(NotFound, match="'missing-id'"):
        store.add_feedback("rating", "missing-id", 3)
    with pytest.raises(NotFound, match="'gone'"):
        store.add_feedback("preference", a.id, 1, other_generation_id="gone")
    with pytest.raises(NotFound, match="'0123456789ab'"):
        store.add_feedback("rating", a.id, 3, key_id="0123456789ab")
    with pytest.raises(NotFound):
        store.add_feedback("rating", "missing-id", 3, idempotency=("-", "k", "h"))
    assert feedback_count(store) == 0
    assert store.claim_idempotency("-", "k", "h") is None  # the failed request kept no key


@pytest.mark.parametrize("kind, value, other, comment, match", [
    ("preference", 1, "SELF", None, "two different generations"),
    ("preference", 1, None, None, "required for a preference"),
    ("rating", 3, "OTHER", None, "only for one"),
    ("rating", 0, None, None, "rating value 0"),
    ("rating", 6, None, None, "rating value 6"),
    ("thumbs", 0, None, None, "thumbs value 0"),
    ("preference", -1, "OTHER", None, "preference value -1"),
    ("stars", 1, None, None, "kind 'stars'"),
    ("rating", 3, None, "x" * 2001, "2001 characters"),
])
def test_invalid_feedback(store: Store, workspace: Path, kind: str, value: int, other: str | None,
                          comment: str | None, match: str) -> None:
    a, b = make_generations(store, workspace)
    other_id = {"SELF": a.id, "OTHER": b.id, None: None}[other]
    with pytest.raises(InvalidInput, match=match):
        store.add_feedback(kind, a.id, value, other_generation_id=other_id, comment=comment)
    assert feedback_count(store) == 0


def test_idempotent_feedback_replays_and_conflicts(store: Store, workspace: Path) -> None:
    a, b = make_generations(store, workspace)
    first, replayed = store.add_feedback("rating", a.id, 5, idempotency=("-", "k", "h"))
    assert not replayed
    again, replayed = store.add_feedback("rating", a.id, 5, idempotency=("-", "k", "h"))
    assert replayed and again == first
    assert feedback_count(store) == 1
    kept = store.claim_idempotency("-", "k", "h")
    assert kept is not None and kept.status == "done" and kept.response_status == 201
    assert kept.response["id"] == first.id
    with pytest.raises(Conflict, match="different request"):
        store.add_feedback("rating", b.id, 1, idempotency=("-", "k", "other"))
    assert store.claim_idempotency("-", "busy", "h") is None  # another request holds it
    with pytest.raises(Conflict, match="in progress"):
        store.add_feedback("rating", a.id, 5, idempotency=("-", "busy", "h"))
    # a pending key whose request died long ago is taken over
    _, replayed = store.add_feedback("rating", a.id, 5, idempotency=("-", "busy", "h"),
                                     stale_after_s=0)
    assert not replayed and feedback_count(store) == 2


def test_failure_between_feedback_and_its_key_leaves_neither(
    store: Store, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (a,) = make_generations(store, workspace, 1)

    def crash() -> None:  # access.utcnow first runs after the feedback row is flushed
        raise RuntimeError("crash")

    monkeypatch.setattr(access, "utcnow", crash)
    with pytest.raises(RuntimeError, match="crash"):
        store.add_feedback("rating", a.id, 5, idempotency=("-", "k", "h"))
    monkeypatch.undo()
    assert feedback_count(store) == 0
    with store.read() as s:
        assert s.get(IdempotencyRow, ("-", "k")) is None


def test_concurrent_idempotent_feedback_is_stored_once(store: Store, workspace: Path) -> None:
    (a,) = make_generations(store, workspace, 1)
    n = 6
    barrier = threading.Barrier(n)
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def send() -> None:
        s = Store()
        try:
            barrier.wait()
            record, replayed = s.add_feedback("thumbs", a.id, 1, idempotency=("-", "k", "h"))
        finally:
            s.close()
        with lock:
            results.append((record.id, replayed))

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == n and len({r[0] for r in results}) == 1
    assert sum(not replayed for _, replayed in results) == 1
    assert feedback_count(store) == 1


def test_feedback_for_many_generations_in_one_query(store: Store, workspace: Path) -> None:
    """A history page's feedback, each generation's like ``list_feedback`` gives it alone."""
    a, b, c = make_generations(store, workspace, 3)
    store.add_feedback("rating", a.id, 4)
    store.add_feedback("preference", b.id, 1, other_generation_id=a.id)
    by_id = store.feedback_for([a.id, b.id, c.id])
    for g in (a, b, c):
        assert [f.id for f in by_id[g.id]] == [f.id for f in store.list_feedback(generation_id=g.id)]
    assert len(by_id[a.id]) == 2 and by_id[c.id] == []
    assert store.feedback_for([]) == {}
