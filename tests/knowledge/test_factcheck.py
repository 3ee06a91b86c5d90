"""The fact checker: claims found through the lexicon, pronouns, carried-on subjects, and the
three verdicts."""

import pytest

from genloop.knowledge import Graph, Triple
from genloop.knowledge.factcheck import Claim, check, compile_phrasing, sentences, summary

T = Triple
LEXICON = {"lives_in": ["{s} lives in {o}", "{o} is home to {s}"], "colour": ["{s} is {o}"],
           "price": ["{s} costs {o}", "the price of {s} is {o}"], "made_by": ["{s} is made by {o}"],
           "works_for": ["{s} works for {o}"]}
G = Graph.from_triples("shop", [
    T("Alice Varn", "lives_in", "Tolmeria"), T("Alice Varn", "works_for", "Brinco Ltd"),
    T("Alice Varn", "alias", "Ali"), T("Zorbex Kettle", "colour", "red"),
    T("Zorbex Kettle", "price", "42.50 EUR"), T("Zorbex Kettle", "made_by", "Brinco Ltd"),
    T("Bob Quell", "lives_in", "Sarnak")], lexicon=LEXICON)


def verdicts(text: str, graph: Graph = G) -> list[tuple[str, str, str, str]]:
    return [(c.subject, c.relation, c.object, c.verdict) for c in check(graph, text)]


def test_supported_contradicted_and_not_in_graph() -> None:
    assert verdicts("Alice Varn lives in Tolmeria. Bob Quell lives in Tolmeria. "
                    "Bob Quell works for Brinco Ltd.") == [
        ("Alice Varn", "lives_in", "Tolmeria", "supported"),
        ("Bob Quell", "lives_in", "Tolmeria", "contradicted"),
        ("Bob Quell", "works_for", "Brinco Ltd", "not_in_graph")]
    claims = check(G, "Ali works for Gorbo Inc.")
    assert claims == [Claim("Alice Varn", "works_for", "Gorbo Inc", "Ali works for Gorbo Inc.",
                            "contradicted", ("Brinco Ltd",))]
    assert summary(claims) == {"supported": 0, "contradicted": 1, "not_in_graph": 0}
    assert summary([]) == {"supported": 0, "contradicted": 0, "not_in_graph": 0}


def test_pronouns_carry_on_and_specific_phrasings() -> None:
    text = ("Alice Varn lives in Sarnak and works for Brinco Ltd. She lives in Tolmeria. "
            "The Zorbex Kettle is made by Brinco Ltd, costs 42.50 EUR and is blue. "
            "The price of Zorbex Kettle is 40 EUR. Tolmeria is home to Bob Quell.")
    assert verdicts(text) == [
        ("Alice Varn", "lives_in", "Sarnak", "contradicted"),
        ("Alice Varn", "works_for", "Brinco Ltd", "supported"),  # the subject carries on
        ("Alice Varn", "lives_in", "Tolmeria", "supported"),  # "she"
        ("Zorbex Kettle", "made_by", "Brinco Ltd", "supported"),  # not colour "made by Brinco"
        ("Zorbex Kettle", "price", "42.50 EUR", "supported"),
        ("Zorbex Kettle", "colour", "blue", "contradicted"),
        ("Zorbex Kettle", "price", "40 EUR", "contradicted"),  # not colour "40 EUR"
        ("Bob Quell", "lives_in", "Tolmeria", "contradicted")]  # the object comes first


def test_no_claim_without_a_linked_subject_or_a_phrasing() -> None:
    assert verdicts("Zyx Blorp lives in Tolmeria. Alice Varn adores Tolmeria.") == []
    assert verdicts("") == []


def test_a_graph_without_lexicon_reads_its_relation_names() -> None:
    g = Graph.from_triples("g", [T("Alice Varn", "lives_in", "Tolmeria")])
    assert verdicts("alice varn lives   in tolmeria!", g) == [
        ("Alice Varn", "lives_in", "Tolmeria", "supported")]


def test_sentences_keep_decimals_and_cjk_stops() -> None:
    assert [s.strip() for _, s in sentences("It costs 42.50 EUR. Next one! 这是。好")] == [
        "It costs 42.50 EUR.", "Next one!", "这是。", "好"]


@pytest.mark.parametrize("phrasing", ["{s} lives in {o}", "{o} is home to {s}", "the price of {s} is {o}",
                                      "{s}'s colour is {o}"])
def test_phrasings_compile(phrasing: str) -> None:
    p = compile_phrasing("r", phrasing)
    assert p.first == ("o" if phrasing.startswith("{o}") else "s") and p.words >= 2


def test_chinese_phrasings_and_pronouns() -> None:
    g = Graph.from_triples("zh", [T("张伟", "lives_in", "北京"), T("李娜", "works_for", "华星公司")],
                           lexicon={"lives_in": ["{s}住在{o}"], "works_for": ["{s}在{o}工作"]})
    assert verdicts("张伟住在北京。他住在上海。李娜在华星公司工作。", g) == [
        ("张伟", "lives_in", "北京", "supported"), ("张伟", "lives_in", "上海", "contradicted"),
        ("李娜", "works_for", "华星公司", "supported")]
