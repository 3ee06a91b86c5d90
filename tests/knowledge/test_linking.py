"""Entity linking: exact, alias, fuzzy and embedding similarity, non-overlapping, offsets true."""

import numpy as np

from genloop.knowledge import Graph, Triple
from genloop.knowledge.linking import normalise

T = Triple
G = Graph.from_triples("g", [T("Alice Varn", "lives_in", "Tolmeria"), T("Alice Varn", "alias", "Ali"),
                             T("Brinco Ltd", "located_in", "Tolmeria"), T("Varn", "type", "river")])


def test_normalise() -> None:
    assert normalise("  Ａｌｉｃｅ   VARN. ") == "alice varn"
    assert normalise("Dr. J-P Sartre") == "dr j p sartre"


def test_exact_alias_and_longest_span_first() -> None:
    text = "Ali met ALICE VARN near the Varn, then brinco  ltd."
    links = G.link(text)
    assert [(link.mention, link.entity, link.how) for link in links] == [
        ("Ali", "Alice Varn", "alias"), ("ALICE VARN", "Alice Varn", "exact"),
        ("Varn", "Varn", "exact"), ("brinco  ltd", "Brinco Ltd", "exact")]
    assert all(text[link.start:link.end] == link.mention for link in links)


def test_fuzzy_takes_near_misses_and_not_ordinary_words() -> None:
    links = G.link("Allice Varn lives in Tolmerya with the others.")
    assert [(link.entity, link.how) for link in links] == [("Alice Varn", "fuzzy"), ("Tolmeria", "fuzzy")]
    assert all(0.85 <= link.score < 1 for link in links)
    assert [link.entity for link in G.link("Allice Varn", fuzzy=1.0)] == ["Varn"]
    assert G.link("the and of with Tolm") == []


def test_embedding_links_what_names_do_not_match() -> None:
    calls: list[list[str]] = []

    axes: dict[str, int] = {}

    def embed(texts: list[str]) -> np.ndarray:  # one axis per text; "capital" means Tolmeria
        calls.append(texts)
        out = np.zeros((len(texts), 64))
        for row, t in enumerate(texts):
            out[row, axes.setdefault({"capital": "tolmeria"}.get(t, t), len(axes))] = 1.0
        return out

    links = G.link("She visited the capital.", embed=embed, fuzzy=1.0)
    assert [(link.mention, link.entity, link.how) for link in links] == [("capital", "Tolmeria", "embedding")]
    assert G.link("She visited the capital.", fuzzy=1.0) == []
    n = len(calls)
    G.link("the capital again", embed=embed)
    assert len(calls) == n + 1  # the names' vectors are computed once per encoder


def test_chinese_names_are_found_inside_runs_of_characters() -> None:
    g = Graph.from_triples("zh", [T("张伟", "lives_in", "北京"), T("张伟", "alias", "小张"),
                                  T("北京大学", "located_in", "北京")])
    links = g.link("小张在北京大学，不在北京。")
    assert [(link.mention, link.entity, link.how, link.start) for link in links] == [
        ("小张", "张伟", "alias", 0), ("北京大学", "北京大学", "exact", 3), ("北京", "北京", "exact", 10)]
