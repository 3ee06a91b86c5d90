"""The in-memory graph: canonical names through aliases, facts, k-hop neighbourhoods, retrieval."""

import pytest

from genloop.errors import InvalidInput, NotFound
from genloop.knowledge import Graph, Triple, retrieve
from genloop.knowledge.graph import default_phrasing

T = Triple
WORLD = [
    T("Alice Varn", "lives_in", "Tolmeria"),
    T("Alice Varn", "works_for", "Brinco Ltd"),
    T("Alice Varn", "alias", "Ali"),
    T("Brinco Ltd", "located_in", "Tolmeria"),
    T("Brinco Ltd", "type", "organisation"),
    T("Tolmeria", "part_of", "Ostvale"),
    T("Bob Quell", "lives_in", "Sarnak"),
]


@pytest.fixture
def graph() -> Graph:
    return Graph.from_triples("world", WORLD, lexicon={"lives_in": ["{s} lives in {o}"]})


def test_entities_facts_and_kinds(graph: Graph) -> None:
    assert len(graph) == 6  # the alias triple is a name, not a fact
    assert graph.entity("Ali") == graph.entity("alice  VARN") == "Alice Varn"
    assert graph.facts("Ali", "works_for") == [T("Alice Varn", "works_for", "Brinco Ltd")]
    assert [t.relation for t in graph.facts("Alice Varn")] == ["lives_in", "works_for"]
    assert graph.kinds == {"Brinco Ltd": "organisation"}
    assert graph.relations()["lives_in"] == 2
    assert T("Bob Quell", "lives_in", "Sarnak") in graph
    assert graph.mentions_of("Tolmeria") == [WORLD[0], WORLD[3]]


def test_unknown_entity_names_the_closest(graph: Graph) -> None:
    with pytest.raises(NotFound, match=r"no entity 'Alise Varn' \(closest: Alice Varn") as e:
        graph.entity("Alise Varn")
    assert "\n" not in str(e.value)
    with pytest.raises(NotFound):
        graph.facts("Nobody At All")


def test_neighbourhood_grows_by_hops_and_stops_at_the_limit(graph: Graph) -> None:
    one = graph.neighbourhood("Alice Varn", hops=1)
    assert one == [WORLD[0], WORLD[1]]
    two = graph.neighbourhood("Alice Varn", hops=2)
    assert two[:2] == one and set(two) == {WORLD[0], WORLD[1], WORLD[3], WORLD[4], WORLD[5]}
    assert WORLD[6] not in graph.neighbourhood("Alice Varn", hops=5)  # another component
    assert graph.neighbourhood("Alice Varn", hops=2, limit=3) == two[:3]
    with pytest.raises(InvalidInput, match="hops"):
        graph.neighbourhood("Alice Varn", hops=0)


def test_alias_chains_resolve_and_cycles_are_refused() -> None:
    g = Graph.from_triples("g", [T("A", "r", "x"), T("A", "alias", "B"), T("B", "alias", "C"),
                                 T("C", "r", "y")])
    assert g.entity("C") == "A" and set(g.facts("A")) == {T("A", "r", "x"), T("A", "r", "y")}
    with pytest.raises(InvalidInput, match=r"^alias cycle: (A → B → A|B → A → B)") as e:
        Graph.from_triples("g", [T("A", "alias", "B"), T("B", "alias", "A")])
    assert "\n" not in str(e.value)
    with pytest.raises(InvalidInput, match="alias cycle"):
        Graph.from_triples("g", [T("A", "r", "x")], aliases={"P": "Q", "Q": "R", "R": "P"})
    with pytest.raises(InvalidInput, match="names both"):
        Graph.from_triples("g", [T("A", "alias", "N"), T("B", "alias", "N")])


def test_hash_is_the_content_not_the_order() -> None:
    a = Graph.from_triples("a", WORLD)
    b = Graph.from_triples("b", list(reversed(WORLD)), lexicon={"lives_in": ["{s} dwells in {o}"]})
    c = Graph.from_triples("a", WORLD[:-1])
    assert a.hash == b.hash != c.hash


def test_lexicon_defaults_and_validation(graph: Graph) -> None:
    assert graph.lexicon["lives_in"] == ["{s} lives in {o}"]
    assert graph.lexicon["works_for"] == ["{s} works for {o}"]
    assert default_phrasing("locatedIn") == "{s} located in {o}"
    with pytest.raises(InvalidInput, match=r"lexicon: relation 'lives_in'.*\{s\} and \{o\}"):
        Graph.from_triples("g", WORLD, lexicon={"lives_in": ["lives in {o}"]})


def test_retrieve_gives_each_named_entity_its_share(graph: Graph) -> None:
    links, triples = retrieve(graph, "Tell me about Bob Quell and Ali.", limit=3)
    assert [link.entity for link in links] == ["Bob Quell", "Alice Varn"]
    assert triples[0] == WORLD[6] and WORLD[0] in triples and len(triples) == 3
    assert retrieve(graph, "nothing here at all") == ([], [])
