"""The ``triples`` kind: four formats read to the same facts, aliases from RDF labels, one-line
errors naming FILE:LINE, and nothing half-read."""

import json
from pathlib import Path

import pytest

from genloop.data.kinds import get_kind
from genloop.data.triples import Triple, TriplesDataConfig, alias_map, read_lexicon, read_triples
from genloop.errors import InvalidInput

T = Triple
FACTS = [T("Alice Varn", "lives_in", "Tolmeria"), T("Alice Varn", "alias", "Ali"),
         T("Brinco Ltd", "located_in", "Tolmeria")]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_and_jsonl_read_the_same_facts(tmp_path: Path) -> None:
    csv = write(tmp_path / "g.csv", "Subject, Relation ,object\n"
                "Alice Varn,lives_in,Tolmeria\n\n\"Alice Varn\",alias,Ali\nBrinco  Ltd,located_in,Tolmeria\n")
    jsonl = write(tmp_path / "g.jsonl", "\n".join(json.dumps(dict(zip(("subject", "relation", "object"),
                                                                    (t.subject, t.relation, t.object),
                                                                    strict=True))) for t in FACTS))
    assert read_triples(csv).triples == read_triples(jsonl).triples == FACTS


def test_turtle_and_ntriples_shorten_iris_and_take_labels(tmp_path: Path) -> None:
    ttl = write(tmp_path / "g.ttl", """@prefix ex: <http://example.org/world#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix skos: <http://www.w3.org/2004/02/skos/core#> .
ex:alice ex:lives_in ex:Tolmeria ; rdfs:label "Alice Varn" ; skos:altLabel "Ali" .
ex:alice ex:age 42 .
ex:Brinco%20Ltd ex:located_in ex:Tolmeria .
""")
    got = read_triples(ttl)
    assert set(got.triples) == {T("Alice Varn", "lives_in", "Tolmeria"), T("Alice Varn", "age", "42"),
                                T("Brinco Ltd", "located_in", "Tolmeria")}
    assert got.aliases == {"alice": "Alice Varn", "Ali": "Alice Varn"}
    nt = write(tmp_path / "g.nt", "<http://e.org/a/Alice> <http://e.org/p/lives_in> "
               "<http://e.org/a/Tolmeria> .\n# a comment\n"
               "<http://e.org/a/Alice> <http://e.org/p/nick> \"Ali\" .\n")
    assert set(read_triples(nt).triples) == {T("Alice", "lives_in", "Tolmeria"), T("Alice", "nick", "Ali")}


@pytest.mark.parametrize(("name", "text", "where", "what"), [
    ("bad.csv", "subject,relation,object\nA,r,B\nA,r\n", ":3:", "expected 3 fields"),
    ("bad.csv", "s,p,o\nA,r,B\n", ":1:", "header must be subject,relation,object"),
    ("bad.csv", "subject,relation,object\nA,r,B\nA, ,B\n", ":3:", "relation is empty"),
    ("bad.jsonl", '{"subject": "A", "relation": "r", "object": "B"}\n{"subject": "A", "relation": "r"}\n',
     ":2:", "no 'object'"),
    ("bad.jsonl", '{"subject": "A", "relation": "r", "object": "B"}\n\n{oops\n', ":3:", "not JSON"),
    ("bad.jsonl", '{"subject": "A", "relation": "r", "object": 7}\n', ":1:", "object must be a string"),
    ("bad.nt", "<http://e/a> <http://e/r> <http://e/b> .\n<http://e/a> <http://e/r> \n", ":2:",
     "Invalid line"),
    ("bad.ttl", "@prefix ex: <http://e/> .\nex:a ex:r ex:b .\nex:a ex:r\nex:c ex:d ex:e .\n", ":4:",
     "expected"),
])
def test_a_malformed_line_is_named_and_nothing_is_read(tmp_path: Path, name: str, text: str,
                                                      where: str, what: str) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(InvalidInput, match=what) as e:
        read_triples(path)
    assert str(e.value).startswith(f"{path}{where}") and "\n" not in str(e.value)


def test_other_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        read_triples(tmp_path / "missing.csv")
    with pytest.raises(InvalidInput, match="cannot tell the triples format"):
        read_triples(write(tmp_path / "g.txt", "x"))
    with pytest.raises(InvalidInput, match="holds no triples"):
        read_triples(write(tmp_path / "g.csv", "subject,relation,object\n"))
    (tmp_path / "latin.csv").write_bytes(b"subject,relation,object\nA,r,\xe9\n")
    with pytest.raises(InvalidInput, match=r"latin.csv:2: not UTF-8"):
        read_triples(tmp_path / "latin.csv")
    with pytest.raises(InvalidInput, match="unknown triples format 'xml'"):
        read_triples(tmp_path / "g.csv", format="xml")


def test_alias_map_follows_chains_and_refuses_cycles() -> None:
    assert alias_map([T("A", "alias", "B"), T("B", "alias", "C")]) == {"B": "A", "C": "A"}
    with pytest.raises(InvalidInput, match="^alias cycle: "):
        alias_map([T("A", "alias", "B"), T("B", "alias", "C"), T("C", "alias", "A")])


def test_lexicon_files(tmp_path: Path) -> None:
    good = write(tmp_path / "lex.json", json.dumps({"lives_in": ["{s} lives in {o}"]}))
    assert read_lexicon(good) == {"lives_in": ["{s} lives in {o}"]}
    yaml = write(tmp_path / "lex.yaml", "lives_in:\n  - '{s} lives in {o}'\n")
    assert read_lexicon(yaml) == read_lexicon(good)
    with pytest.raises(InvalidInput, match="maps each relation to a list of phrasings"):
        read_lexicon(write(tmp_path / "bad.json", json.dumps({"lives_in": "{s} lives in {o}"})))
    with pytest.raises(InvalidInput, match="not a valid lexicon"):
        read_lexicon(write(tmp_path / "bad2.json", "{"))


def test_the_kind_stores_a_content_hashed_dataset(tmp_path: Path, workspace: Path) -> None:
    src = write(tmp_path / "world.csv", "subject,relation,object\nAlice Varn,lives_in,Tolmeria\n"
                "Alice Varn,alias,Ali\n")
    config = get_kind("triples").config.model_validate({"kind": "triples", "source": str(src)})
    ds = config.prepare()
    assert ds.triples == [T("Alice Varn", "lives_in", "Tolmeria"), T("Alice Varn", "alias", "Ali")]
    again = get_kind("triples").load(ds.path)
    assert (again.hash, again.triples) == (ds.hash, ds.triples)
    assert TriplesDataConfig(source=str(src)).prepare().path == ds.path  # reused
    cyclic = write(tmp_path / "cyclic.csv", "subject,relation,object\nA,alias,B\nB,alias,A\n")
    with pytest.raises(InvalidInput, match=r"cyclic.csv: alias cycle"):
        TriplesDataConfig(source=str(cyclic)).prepare()
    assert not (workspace / "datasets" / "cyclic").exists()
