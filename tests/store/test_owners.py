"""Owners and scopes in the store, on SQLite and PostgreSQL: keys carry an owner and a scope,
generations and feedback are stamped with an owner, every read and write takes ``visible_to``
(another owner's record is NotFound, like a missing one), a preference never spans two owners,
and a database made before owners existed gets the columns on open, its keys becoming admins
owned by their name."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from genloop.errors import InvalidInput, NotFound
from genloop.store import GenerationRecord, Store


def generations(store: Store, home: Path, owners: list[str | None]) -> list[GenerationRecord]:
    """One text generation per entry of ``owners``, of one registered model version."""
    staged = home / "staging" / "m"
    staged.mkdir(parents=True)
    (staged / "config.json").write_text("{}")
    mv = store.register_model("m", staged, family="gpt")
    return [store.record_generation(model=mv, kind="text", request={"prompt": "Hi"}, seed=i,
                                    output=f"out {i}", file=None, content_hash=f"h{i}",
                                    timings={}, owner=owner)
            for i, owner in enumerate(owners)]


def test_keys_have_an_owner_and_a_scope(store: Store) -> None:
    laptop, secret = store.create_key("laptop")
    assert (laptop.owner, laptop.scope) == ("laptop", "generate")  # the defaults
    bot, _ = store.create_key("alice-bot", scope="read", owner="alice")
    assert (bot.owner, bot.scope) == ("alice", "read")
    assert store.verify_key(secret) == laptop
    assert {(k.name, k.owner, k.scope) for k in store.list_keys()} == {
        ("laptop", "laptop", "generate"), ("alice-bot", "alice", "read")}
    with pytest.raises(InvalidInput, match="scope 'root' is invalid"):
        store.create_key("x", scope="root")
    with pytest.raises(InvalidInput, match="owner 'a b' is invalid"):
        store.create_key("y", owner="a b")
    assert [k.name for k in store.list_keys()] == ["alice-bot", "laptop"]  # nothing half-made


def test_generations_are_seen_by_their_owner_only(store: Store, workspace: Path) -> None:
    a1, b1, a2, cli = generations(store, workspace, ["alice", "bob", "alice", None])
    assert store.get_generation(a1.id).owner == "alice" and cli.owner is None
    assert store.get_generation(a1.id, visible_to="alice") == a1
    with pytest.raises(NotFound, match=f"no generation with id '{a1.id}'"):
        store.get_generation(a1.id, visible_to="bob")
    with pytest.raises(NotFound):
        store.get_generation(cli.id, visible_to="alice")  # the workspace's: admins only
    assert [g.id for g in store.list_generations(visible_to="alice")] == [a2.id, a1.id]
    assert [g.id for g in store.list_generations(visible_to="bob")] == [b1.id]
    assert len(store.list_generations()) == 4  # no owner given: everything
    assert store.list_generations(visible_to="alice", before=a2.id) == [a1]
    with pytest.raises(NotFound):  # paging after another owner's id says nothing about it
        store.list_generations(visible_to="bob", before=a2.id)


def test_feedback_is_stamped_and_filtered_by_owner(store: Store, workspace: Path) -> None:
    a1, a2, b1 = generations(store, workspace, ["alice", "alice", "bob"])
    rating, _ = store.add_feedback("rating", a1.id, 4, owner="alice", visible_to="alice")
    assert rating.owner == "alice"
    with pytest.raises(NotFound, match=b1.id):
        store.add_feedback("rating", b1.id, 1, owner="alice", visible_to="alice")
    with pytest.raises(NotFound, match=b1.id):  # either side of a preference
        store.add_feedback("preference", a1.id, 1, other_generation_id=b1.id, owner="alice",
                           visible_to="alice")
    pref, _ = store.add_feedback("preference", a2.id, 1, other_generation_id=a1.id,
                                 owner="alice", visible_to="alice")
    admin, _ = store.add_feedback("thumbs", b1.id, 1, owner="ops")  # an admin sees all
    assert {f.id for f in store.list_feedback(visible_to="alice")} == {rating.id, pref.id}
    assert store.list_feedback(visible_to="bob") == []
    assert {f.id for f in store.list_feedback()} == {rating.id, pref.id, admin.id}
    assert store.feedback_for([a1.id, b1.id], visible_to="alice") == {
        a1.id: [pref, rating], b1.id: []}
    assert [p[0].id for p in store.list_preferences(visible_to="alice")] == [pref.id]
    assert store.list_preferences(visible_to="bob") == []


def test_a_preference_never_spans_two_owners(store: Store, workspace: Path) -> None:
    a, b, cli = generations(store, workspace, ["alice", "bob", None])
    for chosen, rejected in ((a, b), (a, cli)):  # refused even for an admin, who sees both
        with pytest.raises(InvalidInput, match="belong to different owners"):
            store.add_feedback("preference", chosen.id, 1, other_generation_id=rejected.id)
    assert store.list_feedback() == []


def test_an_older_database_gets_owners_and_its_keys_become_admins(db_url: str,
                                                                   workspace: Path) -> None:
    """The schema of the genloop before owners, with a key and a generation in it; opening it
    with this genloop adds the columns and keeps both working."""
    url = db_url
    old = Store(url)
    key, secret = old.create_key("laptop")
    (g,) = generations(old, workspace, [None])
    old.close()
    engine = create_engine(url)
    with engine.begin() as c:  # back to the old schema: no owner or scope anywhere
        c.execute(text("DROP INDEX ix_generations_owner_created"))
        for table, column in (("api_keys", "owner"), ("api_keys", "scope"),
                              ("generations", "owner"), ("feedback", "owner")):
            c.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    engine.dispose()

    store = Store(url)
    try:
        verified = store.verify_key(secret)
        assert verified is not None and verified.id == key.id
        assert (verified.owner, verified.scope) == ("laptop", "admin")
        assert store.get_generation(g.id).owner is None
        with pytest.raises(NotFound):
            store.get_generation(g.id, visible_to="laptop")
        new, _ = store.create_key("ci")
        assert (new.owner, new.scope) == ("ci", "generate")
        Store(url).close()  # opening it again adds nothing
    finally:
        store.close()
