import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from genloop.store import Store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("GENLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENLOOP_DB_URL", raising=False)
    s = Store()
    yield s
    s.close()


def test_sqlite_file_is_created_in_home_with_wal_fk_and_busy_timeout(
    store: Store, tmp_path: Path
) -> None:
    assert (tmp_path / "home" / "genloop.db").exists()
    with store.read() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert s.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_write_transactions_begin_immediate(store: Store) -> None:
    """A write session holds the write lock from its first statement, so a second writer
    connection cannot start a write until the first one commits."""
    import sqlite3

    db = store.url.removeprefix("sqlite:///")
    with store.write() as s:
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


def _pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "pg_ctl").exists() and (d / "initdb").exists():
            return d
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_postgresql_same_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Optional: the same Store against a throwaway PostgreSQL cluster."""
    pg = _pg_bin()
    if pg is None:
        pytest.skip("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install genloop[postgres])")
    if os.geteuid() == 0:
        pytest.skip("PostgreSQL refuses to run as root")
    data, port = tmp_path / "pg", _free_port()
    subprocess.run(
        [pg / "initdb", "-D", data, "-U", "genloop", "-A", "trust"], check=True, capture_output=True
    )
    subprocess.run(
        [
            pg / "pg_ctl",
            "-D",
            data,
            "-w",
            "-l",
            tmp_path / "pg.log",
            "-o",
            f"-p {port} -k {tmp_path} -c listen_addresses=''",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        monkeypatch.setenv("GENLOOP_HOME", str(tmp_path / "home"))
        url = f"postgresql+psycopg://genloop@/postgres?host={tmp_path}&port={port}"
        store = Store(url)
        staged = tmp_path / "stage"
        staged.mkdir()
        (staged / "weights.safetensors").write_bytes(b"w")
        mv = store.register_model("pgm", staged, family="gpt", metrics={"loss": 1.0})
        assert store.resolve("pgm").ref == mv.ref == "pgm@1"
        assert store.update_model_metrics("pgm", {"ppl": 2}).metrics == {"loss": 1.0, "ppl": 2}
        store.close()
    finally:
        subprocess.run([pg / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
