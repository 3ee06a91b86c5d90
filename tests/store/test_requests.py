"""A request is stored once, however many choices (generations) it made: its shared part sits in
``requests`` under its content hash, each generation row keeps only its own fields, and every
record still reads back the whole request. On SQLite and PostgreSQL; an older database gains the
new column on open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, Text, cast, create_engine, func, inspect, select

from genloop.store import Store
from genloop.store.db import Base, GenerationRow, RequestRow, utcnow

from .test_registry import stage


def _messages(total_chars: int) -> list[dict[str, str]]:
    turn = "The cat walks to the house. " * 36  # about 1 KB a turn
    count = total_chars // len(turn) + 1
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": turn} for i in range(count)]


def _db_bytes(store: Store) -> tuple[int, int, int, int]:
    """(requests rows, their JSON bytes, generation rows, their own request's JSON bytes)."""
    with store.read() as s:
        requests = s.execute(select(func.count(), func.sum(func.length(cast(RequestRow.body, Text)))))
        n_req, req_bytes = requests.one()
        gens = s.execute(select(func.count(),
                                func.sum(func.length(cast(GenerationRow.request, Text)))))
        n_gen, gen_bytes = gens.one()
    return int(n_req), int(req_bytes or 0), int(n_gen), int(gen_bytes or 0)


def _record_choices(store: Store, mv: Any, shared: dict[str, Any], seeds: list[int]) -> list[Any]:
    return [store.record_generation(model=mv, kind="text", request={"prompt": "USER:\n", "seed": s},
                                    shared=shared, seed=s, output=f"out {s}", file=None,
                                    content_hash=f"h{s}", timings={}) for s in seeds]


def test_four_choices_of_100_kb_of_messages_store_the_messages_once(store: Store,
                                                                    workspace: Path) -> None:
    mv = store.register_model("m", stage(workspace, "a"), family="gpt")
    messages = _messages(100_000)
    shared = {"max_new_tokens": 8, "temperature": 1.0, "num_samples": 1, "api": "chat",
              "messages": messages}
    records = _record_choices(store, mv, shared, [40, 41, 42, 43])
    n_req, req_bytes, n_gen, gen_bytes = _db_bytes(store)
    assert (n_req, n_gen) == (1, 4)
    assert 100_000 < req_bytes < 110_000, req_bytes  # the messages, once
    assert gen_bytes < 4 * 100, gen_bytes  # each choice's prompt and seed only
    for r, seed in zip(records, [40, 41, 42, 43], strict=True):
        whole = {**shared, "prompt": "USER:\n", "seed": seed}
        assert r.request == whole
        got = store.get_generation(r.id)
        assert got == r and got.request == whole and got.request_id == r.request_id
    assert {g.request["seed"] for g in store.list_generations()} == {40, 41, 42, 43}
    # another request with the same settings and messages shares the row too
    _record_choices(store, mv, shared, [7])
    assert _db_bytes(store)[:3] == (1, req_bytes, 5)
    _record_choices(store, mv, {**shared, "temperature": 0.5}, [7])
    assert _db_bytes(store)[0] == 2


def test_a_database_from_before_the_requests_table_gains_it_on_open(db_url: str,
                                                                    workspace: Path) -> None:
    workspace.mkdir(parents=True, exist_ok=True)
    # the tables as genloop made them before: generations without request_id, no requests table
    old = MetaData()
    for table in Base.metadata.sorted_tables:
        if table.name != "requests":
            Table(table.name, old, *[c._copy() for c in table.columns if c.name != "request_id"])
    engine = create_engine(db_url)
    try:
        old.create_all(engine)
        with engine.begin() as c:
            c.execute(old.tables["model_versions"].insert().values(
                id=1, name="m", version=1, family="gpt", path="/m/1", metrics={},
                created_at=utcnow()))
            c.execute(old.tables["generations"].insert().values(
                id="old", model="m@1", model_version_id=1, kind="text",
                request={"prompt": "ROMEO:", "max_new_tokens": 8, "seed": 3}, seed=3, output="x",
                content_hash="h", timings={}, created_at=utcnow()))
    finally:
        engine.dispose()

    with Store() as store:
        with store.read() as s:
            columns = {c["name"] for c in inspect(s.connection()).get_columns("generations")}
        assert "request_id" in columns
        assert store.get_generation("old").request == {"prompt": "ROMEO:", "max_new_tokens": 8,
                                                       "seed": 3}
        mv = store.resolve("m@1")
        new = _record_choices(store, mv, {"max_new_tokens": 8}, [5])[0]
        assert store.get_generation(new.id).request == {"max_new_tokens": 8, "prompt": "USER:\n",
                                                        "seed": 5}
        assert {g.id for g in store.list_generations()} == {"old", new.id}
    with Store() as store:  # opening again changes nothing
        assert store.get_generation(new.id).request_id == new.request_id
