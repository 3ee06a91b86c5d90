"""Knowledge graphs in the workspace database, on SQLite and PostgreSQL: saved in one
transaction, loaded back identical, replaced atomically, refused without ``replace``."""

from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from genloop.errors import Conflict, CorruptArtifact, InvalidInput, NotFound
from genloop.knowledge import Graph, Triple, load_graph
from genloop.store import Store
from genloop.store.kg import KGEntityRow, KGTripleRow

T = Triple
FACTS = [T("Alice Varn", "lives_in", "Tolmeria"), T("Alice Varn", "alias", "Ali"),
         T("Brinco Ltd", "type", "organisation"), T("Brinco Ltd", "located_in", "Tolmeria"),
         T("Zoë 北京", "likes", "Ｔｅａ")]


def graph(name: str = "world", facts: list[Triple] = FACTS) -> Graph:
    return Graph.from_triples(name, facts, lexicon={"lives_in": ["{s} lives in {o}", "{s} is from {o}"]})


def test_save_and_load_round_trip(store: Store) -> None:
    g = graph()
    record = store.kg_save(g)
    assert (record.name, record.hash, record.triples, record.aliases) == ("world", g.hash, 4, 1)
    assert record.entities == len(g.entities)
    back = load_graph(store, "world")
    assert back.triples == g.triples and back.aliases == g.aliases == {"Ali": "Alice Varn"}
    assert back.lexicon == g.lexicon and back.kinds == {"Brinco Ltd": "organisation"}
    assert back.hash == g.hash
    assert store.kg_save(g) == record  # the same facts again: nothing changes
    rephrased = Graph.from_triples("world", FACTS, lexicon={"lives_in": ["{s} dwells in {o}"]})
    assert store.kg_save(rephrased) == record  # ... but new phrasings are kept
    assert load_graph(store, "world").lexicon["lives_in"] == ["{s} dwells in {o}"]
    assert [r.name for r in store.kg_graphs()] == ["world"]
    with store.read() as s:  # the indexes queries use
        names = {ix["name"] for ix in inspect(s.connection()).get_indexes("kg_triples")}
    assert {"ix_kg_triples_graph_subject", "ix_kg_triples_graph_object"} <= names


def test_other_facts_need_replace_and_replace_is_atomic(store: Store) -> None:
    store.kg_save(graph())
    smaller = graph(facts=FACTS[:2])
    with pytest.raises(Conflict, match="exists with other facts.*--replace"):
        store.kg_save(smaller)
    assert load_graph(store, "world").hash == graph().hash
    record = store.kg_save(smaller, replace=True)
    assert record.triples == 1 and load_graph(store, "world").triples == [FACTS[0]]
    with store.read() as s:  # the old graph's rows are gone, not orphaned
        assert s.scalar(select(func.count()).select_from(KGEntityRow)) == 2


def test_a_failed_save_leaves_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.kg_save(graph())
    bad = graph(facts=FACTS[:3])
    real = Store.write

    def failing_write(self: Store):  # the triples insert fails after the entities went in
        ctx = real(self)

        class Wrapped:
            def __enter__(self_inner):
                s = ctx.__enter__()
                orig = s.execute

                def execute(stmt, *a, **kw):
                    if getattr(getattr(stmt, "table", None), "name", None) == KGTripleRow.__tablename__:
                        raise RuntimeError("disk full")
                    return orig(stmt, *a, **kw)

                s.execute = execute
                return s

            def __exit__(self_inner, *exc):
                return ctx.__exit__(*exc)

        return Wrapped()

    monkeypatch.setattr(Store, "write", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        store.kg_save(bad, replace=True)
    with pytest.raises(RuntimeError, match="disk full"):
        store.kg_save(graph("fresh"))
    monkeypatch.undo()
    assert load_graph(store, "world").hash == graph().hash  # the old graph, whole
    assert [r.name for r in store.kg_graphs()] == ["world"]


def test_unknown_and_bad_names(store: Store) -> None:
    with pytest.raises(NotFound, match="no knowledge graph 'nope' \\(none is stored"):
        store.kg_load("nope")
    store.kg_save(graph())
    with pytest.raises(NotFound, match="stored: world"):
        store.kg_load("nope")
    with pytest.raises(InvalidInput, match="graph name"):
        store.kg_save(graph("no spaces please"))
    with pytest.raises(InvalidInput, match="NUL"):  # PostgreSQL's text cannot hold it
        store.kg_save(graph("nul", [T("A", "r", "B\u0000")]))
    store.kg_delete("world")
    assert store.kg_graphs() == []


def test_rows_that_do_not_match_the_hash_are_refused(store: Store) -> None:
    store.kg_save(graph())
    with store.write() as s:
        s.execute(text("UPDATE kg_triples SET relation = 'hates' WHERE relation = 'likes'"))
    with pytest.raises(CorruptArtifact, match="do not match its hash"):
        load_graph(store, "world")


def test_saved_graphs_survive_a_new_process(workspace: Path) -> None:
    with Store() as s:
        s.kg_save(graph())
    with Store() as s:
        assert load_graph(s, "world").triples == graph().triples
