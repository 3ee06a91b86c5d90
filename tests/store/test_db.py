"""The database layer on both backends (``store`` runs each test on SQLite and on PostgreSQL),
and what each backend must do for several processes to share one workspace."""

import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from genloop.store import Store

from ..conftest import pg_database, pg_server_url  # noqa: TID252


@pytest.fixture
def sqlite_store(workspace: Path) -> Iterator[Store]:
    s = Store()
    yield s
    s.close()


def test_sqlite_file_is_created_in_home_with_wal_fk_and_busy_timeout(
    sqlite_store: Store, workspace: Path
) -> None:
    store = sqlite_store
    assert (workspace / "genloop.db").exists()
    with store.read() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert s.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_write_transactions_begin_immediate(sqlite_store: Store) -> None:
    """A write session holds the write lock from its first statement, so a second writer
    connection cannot start a write until the first one commits."""
    import sqlite3

    db = sqlite_store.url.removeprefix("sqlite:///")
    with sqlite_store.write() as s:
        s.execute(text("SELECT 1"))
        other = sqlite3.connect(db, timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
    other = sqlite3.connect(db, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    other.close()


def test_write_rolls_back_on_exception(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.write() as s:
            s.execute(
                text(
                    "INSERT INTO datasets (name, hash, kind, path, meta, created_at) "
                    "VALUES ('d', 'h', 'text', '/p', '{}', '2024-01-01')"
                )
            )
            raise RuntimeError
    assert store.list_datasets() == []


def test_schema_creation_is_idempotent(store: Store) -> None:
    store.add_dataset("d", "h1", "text", "/p", {"n": 1})
    again = Store(store.url)
    assert [d.hash for d in again.list_datasets()] == ["h1"]
    again.close()


def test_first_opens_at_once_create_the_schema_once(db_url: str) -> None:
    """Several processes opening a fresh workspace at the same moment (API workers starting):
    every one gets the whole schema, none fails on a table another is creating."""
    barrier, errors = threading.Barrier(4), []

    def open_store() -> None:
        barrier.wait()
        try:
            Store(db_url).close()
        except Exception as e:  # reported below, with the backend's message
            errors.append(e)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store(db_url) as store:
        names = set(inspect(store._write_engine).get_table_names())
    assert names >= {"datasets", "runs", "model_versions", "generations", "api_keys", "feedback",
                     "idempotency"}


def test_column_types_keep_values_exact(store: Store, workspace: Path) -> None:
    """64-bit seeds, aware UTC datetimes, JSON kept as written (key order, non-ASCII, NUL escapes),
    and non-finite floats, which JSON has no words for, stored as null on every backend."""
    run = store.create_run(recipe={"z": 1, "a": {"é": "\u0000x", "b": [1.5, None]}},
                           recipe_hash="r", dataset_hash="d", family="gpt", model_name="m",
                           path="/runs/x")
    got = store.get_run(run.id)
    assert list(got.recipe) == ["z", "a"] and got.recipe["a"] == {"é": "\u0000x", "b": [1.5, None]}
    offset = got.created_at.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    done = store.update_run(run.id, metrics={"loss": math.nan, "best": -math.inf, "ok": 2.0})
    assert done.metrics == {"loss": None, "best": None, "ok": 2.0}
    assert store.get_run(run.id).metrics == done.metrics
    staged = workspace / "staging" / "m"
    staged.mkdir(parents=True)
    mv = store.register_model("m", staged, family="gpt")
    g = store.record_generation(model=mv, kind="text", request={"prompt": "\u0000"},
                                seed=2**63 - 1, output="x", file=None, content_hash="h",
                                timings={})
    assert store.get_generation(g.id).seed == 2**63 - 1
    assert store.get_generation(g.id).request == {"prompt": "\u0000"}


@pytest.fixture
def pg_store(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    with pg_database(pg_server_url()) as url:
        monkeypatch.setenv("GENLOOP_DB_URL", url)
        with Store() as s:
            yield s


def test_postgresql_column_types(pg_store: Store) -> None:
    """JSON columns are json (kept as written, not re-encoded as jsonb would), seeds 64-bit,
    times timestamptz."""
    with pg_store.read() as s:
        types = dict(s.execute(text(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema()")).all())
    json_columns = ["datasets.meta", "runs.recipe", "runs.metrics", "model_versions.metrics",
                    "generations.request", "generations.safety", "generations.timings",
                    "idempotency.response"]
    assert {c: types[c] for c in json_columns} == dict.fromkeys(json_columns, "json")
    assert types["generations.seed"] == "bigint"
    assert types["generations.created_at"] == types["api_keys.revoked_at"] == (
        "timestamp with time zone")
