"""A server killed with SIGKILL in the middle of a write load loses nothing it acknowledged.

The API promises that a generation is recorded before the client learns its ``generation_id``
and that a feedback row is committed before its 201 (docs/api.md). Here a real ``genloop serve``
takes completions, ratings and preferences from a few threads, is killed without warning, and
the workspace's database is then opened directly: every acknowledged id must be there with the
content the client was given. Requests cut off by the kill may or may not have landed; no client
was told either way. A restarted server must serve again, replaying acknowledged idempotent
writes rather than doing them twice. On SQLite and on PostgreSQL (a fresh database, its own
workspace: the server is killed, the database server is not).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from genloop.store import Store

from ..conftest import BACKENDS, pg_database, pg_server_url  # noqa: TID252
from .conftest import Server, Workspace, make_workspace, start_server

THREADS = 4
LOAD_S = 2.5  # of writes before the kill


@dataclass
class Acknowledged:
    """What the server said 200/201 to: ids and the content the client was told."""

    generations: dict[str, str] = field(default_factory=dict)  # id -> text
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> expected fields
    replays: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)  # (key, body, id)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.generations) + len(self.feedback)


def write_load(server: Server, ws: Workspace, worker: int, acked: Acknowledged,
               stop: threading.Event) -> None:
    """Complete, rate what came back, prefer one of two, until stopped or the server is gone."""
    mine: list[str] = []
    with server.client(ws.key) as http:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = http.post("/v1/completions", json={
                    "model": ws.text_model, "prompt": ["The cat", "A dog"][i % 2], "max_tokens": 4,
                    "n": 1 + i % 2, "temperature": 0.8, "seed": worker * 10_000 + i})
                if r.status_code != 200:
                    continue
                with acked.lock:
                    for choice in r.json()["choices"]:
                        acked.generations[choice["generation_id"]] = choice["text"]
                        mine.append(choice["generation_id"])
                gid = mine[-1]
                rating = 1 + i % 5
                key = f"w{worker}-{i}"
                body = {"rating": rating, "comment": f"worker {worker} #{i}"}
                r = http.post(f"/v1/generations/{gid}/feedback", json=body,
                              headers={"Idempotency-Key": key})
                if r.status_code == 201:
                    with acked.lock:
                        acked.feedback[r.json()["id"]] = {
                            "kind": "rating", "generation_id": gid, "other_generation_id": None,
                            "value": rating, "comment": body["comment"]}
                        acked.replays.append((f"/v1/generations/{gid}/feedback|{key}", body,
                                              r.json()["id"]))
                if len(mine) >= 2:
                    r = http.post("/v1/preferences", json={"chosen": mine[-1], "rejected": mine[-2]})
                    if r.status_code == 201:
                        with acked.lock:
                            acked.feedback[r.json()["id"]] = {
                                "kind": "preference", "generation_id": mine[-1],
                                "other_generation_id": mine[-2], "value": 1, "comment": None}
            except httpx.HTTPError:  # the server was killed under this request: not acknowledged
                return


@pytest.fixture(params=BACKENDS)
def durable_workspace(request: pytest.FixtureRequest,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """The shared served workspace (SQLite), or a text-only one on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield request.getfixturevalue("served_workspace")
        return
    with pg_database(pg_server_url()) as url:
        ws = make_workspace(tmp_path_factory.mktemp("served-pg"), db_url=url, image=False)
        assert not (ws.home / "genloop.db").exists()  # every process used PostgreSQL
        yield ws


@pytest.mark.slow
def test_sigkill_during_writes_loses_no_acknowledged_record(
        durable_workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = durable_workspace
    server = start_server(ws, "--rate-limit", "0")
    acked, stop = Acknowledged(), threading.Event()
    workers = [threading.Thread(target=write_load, args=(server, ws, w, acked, stop), daemon=True)
               for w in range(THREADS)]
    try:
        for t in workers:
            t.start()
        deadline = time.monotonic() + 15
        started = time.monotonic()
        while time.monotonic() < deadline and (time.monotonic() - started < LOAD_S
                                                or acked.count() < 20):
            time.sleep(0.05)
        os.kill(server.process.pid, signal.SIGKILL)  # mid-load: requests are in flight
        server.process.wait(10)
    finally:
        stop.set()
        server.stop()
    for t in workers:
        t.join(15)
    assert server.process.returncode == -signal.SIGKILL
    assert len(acked.generations) >= 5 and len(acked.feedback) >= 5, acked.count()

    # 1. the workspace's database, opened the way every genloop process opens it
    monkeypatch.setenv("GENLOOP_HOME", str(ws.home))
    if ws.db_url:
        monkeypatch.setenv("GENLOOP_DB_URL", ws.db_url)
    else:
        monkeypatch.delenv("GENLOOP_DB_URL", raising=False)
    with Store() as store, store.read() as s:
        if store.dialect == "sqlite":  # the killed process wrote the file itself
            assert s.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        else:  # the database server ends the killed process's sessions, rolling back their work
            open_sessions = text("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                 "current_database() AND pid <> pg_backend_pid()")
            deadline = time.monotonic() + 10
            while s.execute(open_sessions).scalar() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert s.execute(open_sessions).scalar() == 0
    with Store() as store:
        lost = []
        for gid, output in acked.generations.items():
            try:
                g = store.get_generation(gid)
            except Exception as e:  # NotFound: an acknowledged generation is gone
                lost.append(f"generation {gid}: {e}")
                continue
            assert g.output == output and g.model == f"{ws.text_model}@1", gid
        rows = {f.id: f for f in store.list_feedback(limit=None)}
        for fid, expected in acked.feedback.items():
            if fid not in rows:
                lost.append(f"feedback {fid}")
                continue
            got = rows[fid].model_dump(include=set(expected))
            assert got == expected, fid
    assert not lost, f"{len(lost)} acknowledged records lost: {lost[:5]}"

    # 2. a restarted server serves, and replays an acknowledged idempotent write
    server = start_server(ws, "--rate-limit", "0")
    try:
        with server.client(ws.key) as http:
            gid, output = next(iter(acked.generations.items()))
            assert http.get(f"/v1/generations/{gid}").json()["output"] == output
            r = http.post("/v1/completions", json={"model": ws.text_model, "prompt": "The",
                                                   "max_tokens": 4, "seed": 1})
            assert r.status_code == 200 and r.json()["choices"][0]["generation_id"]
            path_key, body, fid = acked.replays[0]
            path, key = path_key.split("|")
            r = http.post(path, json=body, headers={"Idempotency-Key": key})
            assert r.status_code == 201 and r.json()["id"] == fid
            assert r.headers.get("idempotent-replayed") == "true"
    finally:
        server.stop()
