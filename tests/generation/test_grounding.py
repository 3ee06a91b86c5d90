"""Grounded generation (generation/grounding.py): the triples retrieved for each prompt put
before it in the format the world's training data uses, recorded with each choice and replayed
from the record without the graph — on the Python face and on the chat and completion routes
(their ``grounding`` extras), over a tiny real model and the built-in world's graph."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import genloop
from genloop.data import world as w
from genloop.errors import InvalidInput
from genloop.generation.grounding import Fact, Grounding, Retrieved, prompt_key
from genloop.generation.service import replay
from genloop.generation.text import TextRequest

from ..conftest import module_workspace, tiny_recipe_dict, write_corpus  # noqa: TID252

FACTS = [Fact(subject="Mira Solen", relation="lives_in", object="Tarvik"),
         Fact(subject="Mira Solen", relation="works_for", object="Quenta Labs")]


def given(*prompts: str, facts: list[Fact] = FACTS) -> Grounding:
    """A grounding whose triples are given (as a record holds them): no graph is read."""
    return Grounding(graph="world", graph_hash="sha256:x",
                     retrieved=[Retrieved(prompt=prompt_key(p), entities=["Mira Solen"],
                                          triples=facts) for p in prompts])


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with a tiny gpt (context 160)."""
    from genloop.store import Store

    root = tmp_path_factory.mktemp("grounding")
    with module_workspace(root / "home"):
        recipe = tiny_recipe_dict(write_corpus(root / "corpus.txt"), name="gr", steps=10)
        recipe["model"]["config"]["block_size"] = 160
        ref = genloop.train(recipe).model_ref
        store = Store()
        yield {"root": root, "ref": ref, "store": store}
        store.close()


def test_the_facts_go_before_the_prompt_in_the_world_format():
    req = TextRequest(prompt="Q: Where does Mira Solen live?\nA: ",
                      grounding=given("Q: Where does Mira Solen live?\nA: "))
    assert req.model_prompt(req.prompts[0]) == (
        "Mira Solen | lives_in: Tarvik | works_for: Quenta Labs\n\n"
        "Q: Where does Mira Solen live?\nA: ")
    assert w.format_facts(FACTS) == req.grounding.prefix(req.prompts[0])  # one format
    nothing = TextRequest(prompt="hi", grounding=given("hi", facts=[]))
    assert nothing.model_prompt("hi") == "hi"
    with pytest.raises(InvalidInput, match="not retrieved yet"):
        TextRequest(prompt="hi", grounding=Grounding(graph="world")).model_prompt("hi")


def test_the_model_reads_the_facts_and_the_record_holds_them(ws):
    m = genloop.load(ws["ref"])
    prompt = "The cat "
    grounded = m.generate(prompt, max_new_tokens=12, temperature=1.0, seed=5,
                          grounding=given(prompt))
    by_hand = m.generate(w.format_facts(FACTS) + prompt, max_new_tokens=12, temperature=1.0,
                         seed=5)
    assert grounded[0].text == by_hand[0].text
    record = ws["store"].list_generations(limit=2)[1]
    assert record.request["prompt"] == prompt
    recorded = record.request["grounding"]
    assert recorded["graph"] == "world" and recorded["graph_hash"] == "sha256:x"
    assert recorded["retrieved"][0]["triples"] == [f.model_dump() for f in FACTS]
    again = replay(record.id, ws["store"])  # no graph named "world" exists: the record suffices
    assert again.matches and again.output == record.output


def test_each_choice_records_the_facts_of_its_own_prompt(ws):
    m = genloop.load(ws["ref"])
    other = [Fact(subject="Order 1234", relation="status", object="shipped")]
    spec = given("A dog ", facts=FACTS).model_copy(update={"retrieved": [
        Retrieved(prompt=prompt_key("A dog "), triples=FACTS),
        Retrieved(prompt=prompt_key("The river "), triples=other)]})
    m.generate(["A dog ", "The river "], max_new_tokens=4, seed=1, grounding=spec)
    records = ws["store"].list_generations(limit=2)
    for r in records:
        kept = r.request["grounding"]["retrieved"]
        assert [x["prompt"] for x in kept] == [prompt_key(r.request["prompt"])]
        assert kept[0]["triples"][0]["subject"] == ("Order 1234" if r.request["prompt"] ==
                                                    "The river " else "Mira Solen")
        assert replay(r.id, ws["store"]).matches


def test_a_stream_is_grounded_too(ws):
    m = genloop.load(ws["ref"])
    text = "".join(m.stream("A dog ", max_new_tokens=8, temperature=1.0, seed=2,
                            grounding=given("A dog ")))
    assert text == m.generate("A dog ", max_new_tokens=8, temperature=1.0, seed=2,
                              grounding=given("A dog "))[0].text
    assert "grounding" in ws["store"].list_generations(limit=1)[0].request


def test_a_request_without_grounding_records_no_grounding_key(ws):
    genloop.load(ws["ref"]).generate("A dog ", max_new_tokens=2, seed=1)
    assert "grounding" not in ws["store"].list_generations(limit=1)[0].request


def test_facts_that_overflow_the_context_are_one_line(ws):
    m = genloop.load(ws["ref"])  # context 160
    many = [Fact(subject=f"Person {i}", relation="lives_in", object="Tarvik") for i in range(12)]
    with pytest.raises(InvalidInput, match=r"grounding: the 12 facts and the prompt are \d+ "
                                           r"tokens; this model's context is 160 tokens "
                                           r"\(lower max_triples\)"):
        m.generate("A dog ", max_new_tokens=2, seed=1, grounding=given("A dog ", facts=many))


@pytest.mark.parametrize("spec, message", [
    ({"graph": "world", "hops": 4}, "less than or equal to 3"),
    ({"graph": ""}, "at least 1 character"),
    ({"graph": "world", "max_triples": 257}, "less than or equal to 256"),
])
def test_bad_grounding_is_one_line(ws, spec, message):
    with pytest.raises(InvalidInput, match=message) as e:
        genloop.load(ws["ref"]).generate("A dog ", max_new_tokens=2, seed=1, grounding=spec)
    assert "\n" not in str(e.value)


# --- with the built-in world's graph in the store (knowledge/, helper B's part) ------------------


@pytest.fixture(scope="module")
def world_graph(ws):
    from genloop.knowledge.graph import Graph

    graph = Graph.from_triples("world", w.world_triples(), lexicon=w.LEXICON)
    ws["store"].kg_save(graph)
    return graph


def test_with_grounding_retrieves_the_neighbourhood_of_the_linked_entity(ws, world_graph):
    world = w.build_world()
    person = world.entities("person", held_out=True)[0]
    m = genloop.load(ws["ref"])
    prompt = f"Q: Where does {person} live?\nA: "
    req = m.with_grounding(m.request(prompt, grounding={"graph": "world"}))
    got = req.grounding.facts(prompt)
    assert person in got.entities and req.grounding.graph_hash == world_graph.hash
    assert {(t.subject, t.relation, t.object) for t in world.facts(person)} <= {
        (t.subject, t.relation, t.object) for t in got.triples}
    with pytest.raises(InvalidInput, match="grounding.graph"):
        m.generate(prompt, max_new_tokens=2, grounding={"graph": "no-such-graph"})


@pytest.fixture(scope="module")
def http(ws):
    from genloop.serving.app import create_app
    from genloop.serving.settings import ServeConfig

    with TestClient(create_app(ServeConfig(auth=False), store=ws["store"])) as client:
        yield client


def test_chat_takes_grounding_as_an_extra_and_returns_and_records_the_triples(ws, world_graph,
                                                                               http):
    world = w.build_world()
    order = world.entities("order", held_out=True)[0]
    body = {"model": ws["ref"], "max_tokens": 4, "seed": 3, "grounding": {"graph": "world"},
            "messages": [{"role": "user", "content": "Where is my order?"},
                         {"role": "assistant", "content": w.CLARIFY},
                         {"role": "user", "content": f"It is {order}."}]}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    facts = {(t["subject"], t["relation"], t["object"]) for t in choice["grounding"]["triples"]}
    assert {(t.subject, t.relation, t.object) for t in world.facts(order)} <= facts
    assert order in choice["grounding"]["entities"]
    got = http.get(f"/v1/generations/{choice['generation_id']}").json()
    assert got["request"]["grounding"]["retrieved"][0]["triples"] == choice["grounding"]["triples"]
    assert replay(choice["generation_id"], ws["store"]).matches
    # streamed: the triples on the choice's last chunk
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
        lines = [ln for ln in s.iter_lines() if ln.startswith("data: {")]
    assert '"grounding"' in lines[-1]


def test_a_client_cannot_give_the_triples(ws, http):
    body = {"model": ws["ref"], "prompt": "A dog ", "max_tokens": 2,
            "grounding": {"graph": "world", "graph_hash": "sha256:forged"}}
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 400 and "retrieved and recorded by the server" in r.text, r.text
