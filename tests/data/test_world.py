"""The built-in world (data/world.py): a pure function of its seed, a held-out split that the
training sources never mention, text that states exactly the graph's facts, and the chat
transcript of the default template."""

from __future__ import annotations

import json
import random
import re

import pytest

from genloop.data import world as w


@pytest.fixture(scope="module")
def world() -> w.World:
    return w.build_world()


def test_world_is_a_function_of_its_seed(world):
    again = w.build_world.__wrapped__(w.SEED)  # built afresh, not the cached one
    assert again.triples == world.triples and again.held_out == world.held_out
    other = w.build_world.__wrapped__(w.SEED + 1)
    assert other.triples != world.triples


def test_names_are_unique_and_relations_functional(world):
    names = [n.casefold() for n in world.kinds]
    assert len(names) == len(set(names))
    pairs = [(t.subject, t.relation) for t in world.triples]
    assert len(pairs) == len(set(pairs))  # one object per (subject, relation): contradictions are defined
    assert {t.relation for t in world.triples} <= set(w.LEXICON)


def test_held_out_split(world):
    for kind in ("person", "product"):
        held = len(world.entities(kind, held_out=True))
        total = held + len(world.entities(kind, held_out=False))
        assert 0.15 < held / total < 0.25, kind
    for order in world.entities("order", held_out=False):  # a seen order names seen entities
        assert all(t.object not in world.held_out for t in world.facts(order))


@pytest.mark.parametrize("task", w.TASKS)
def test_training_sources_never_mention_held_out_entities(world, task):
    records = w.pairs(task)
    text = "\n".join(r["prompt"] + "\x00" + r["completion"] for r in records)
    words = set(re.findall(r"[A-Z][a-z]+ [A-Z][a-z]+|[A-Z][a-z]+ \d+|Order \d+", text))
    assert not words & world.held_out
    held = w.pairs(task, held_out=True)
    assert held and all(len(r["prompt"]) + len(r["completion"]) <= w.MAX_CHARS for r in held)
    assert w.pairs(task) == records  # deterministic


def _claims(text: str) -> set[tuple[str, str, str]]:
    """The (subject, relation, object) each sentence states, read back with the lexicon."""
    out = set()
    for sentence in text.split(". "):
        sentence = sentence.rstrip(".")
        found = []
        for rel, phrasings in w.LEXICON.items():
            for p in phrasings:
                pattern = "^" + re.escape(p).replace(r"\{s\}", "(?P<s>.+?)").replace(
                    r"\{o\}", "(?P<o>.+)") + "$"
                if m := re.match(pattern, sentence):
                    found.append((m["s"], rel, m["o"]))
        assert found, sentence
        out.update(found)
    return out


def test_descriptions_state_exactly_the_facts(world):
    rng = random.Random(0)
    for entity in world.entities("person", held_out=True)[:50] + world.entities("order", held_out=True)[:20]:
        text = w.description(world, entity, rng)
        stated = _claims(text)
        facts = {(t.subject, t.relation, t.object) for t in world.facts(entity)}
        assert facts <= stated  # each fact said (a phrasing may also read as another relation's)
        assert {c for c in stated if c in facts} == facts


def test_questions_answer_from_the_graph_or_say_i_do_not_know(world):
    rng = random.Random(1)
    records = [r for r in w.pairs("qa", held_out=True) if "\n\nQ: " in r["prompt"]]  # not descriptions
    idk = [r for r in records if r["completion"] == w.IDK]
    assert 0.2 < len(idk) / len(records) < 0.8
    for person in world.entities("person", held_out=True)[:100]:
        for q in w.questions(world, person, rng):
            assert q.answer == world.fact(person, q.relation)
            assert w.answer_text(q.answer) == (w.IDK if q.answer is None else q.answer + ".")
    # the facts before a question hold its answer, or nothing for its relation
    for r in records[:300]:
        facts = r["prompt"].split("\n\nQ: ")[0]
        if r["completion"] != w.IDK:
            assert r["completion"].rstrip(".") in facts


def test_format_facts_depends_on_the_set_only():
    ts = [w.Triple("B b", "price", "$5"), w.Triple("A a", "lives_in", "X"),
          w.Triple("A a", "born_in", "1990")]
    text = w.format_facts(ts)
    assert text == "A a | born_in: 1990 | lives_in: X\nB b | price: $5\n\n"
    assert w.format_facts(reversed(ts)) == text
    assert w.format_facts([]) == ""


def test_dialogues_clarify_then_answer(world):
    rng = random.Random(2)
    order = world.entities("order", held_out=True)[0]
    d = w.dialogue(world, order, rng)
    first, second = w.dialogue_pairs(world, d, rng)
    assert first["completion"] == w.CLARIFY
    assert order not in first["prompt"].split("USER:")[0]  # nothing links "my order" yet
    assert second["prompt"].endswith(f"USER:\n{d.naming}\n\nASSISTANT:\n")
    assert order in second["prompt"].split("USER:")[0]  # the order's facts before the transcript
    obj = world.fact(order, d.relation)
    assert d.expected == w.IDK if obj is None else obj in d.expected


def test_transcript_is_the_default_chat_template():
    from genloop.generation.chat import ChatMessage, ChatTemplate

    turns = [(w.USER, "Where is my order?"), (w.ASSISTANT, w.CLARIFY), (w.USER, "It is Order 1234.")]
    messages = [ChatMessage(role=r.lower(), content=c) for r, c in turns]  # type: ignore[arg-type]
    assert w.transcript(turns) == ChatTemplate().render(messages)


def test_builtin_pairs_source_prepares(tmp_path, monkeypatch):
    from genloop.data.pairs import PairsDataConfig

    monkeypatch.setenv("GENLOOP_HOME", str(tmp_path))
    monkeypatch.delenv("GENLOOP_CACHE", raising=False)
    ds = PairsDataConfig(source="world-dialogue").prepare()
    assert ds.name == "world-dialogue"
    assert len(ds.train) + len(ds.val) == len(w.pairs("dialogue"))
    again = PairsDataConfig(source="world-dialogue").prepare()
    assert again.hash == ds.hash
    first = json.loads((tmp_path / "cache" / "world" / "world-dialogue.jsonl")
                       .read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"prompt", "completion"}


def test_export_is_what_genloop_kg_load_reads(tmp_path):
    from genloop.knowledge.graph import read_graph

    triples, lexicon = w.export(tmp_path)
    graph = read_graph(triples, name="world", lexicon=lexicon)
    assert len(graph) == len(w.world_triples())
    assert graph.lexicon["lives_in"] == w.LEXICON["lives_in"]
