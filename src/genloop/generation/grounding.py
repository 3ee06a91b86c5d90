"""Grounded generation: the triples a knowledge graph holds about what a prompt names, put
before the prompt, so the model answers from them.

    TextRequest(prompt="Q: Where does Mira Solen live?\\nA: ", grounding=Grounding(graph="world"))
    # the model reads:  "Mira Solen | lives_in: Tarvik | works_for: Quenta Labs\\n\\nQ: Where ..."

The design is few-shot's (``generation/fewshot.py``): the request names a graph; before decoding
``retrieve`` links each prompt (or ``Grounding.query``: a chat's user messages) to the graph's
entities and takes their neighbourhood (``knowledge.graph.retrieve``), and fills
``Grounding.retrieved`` in, so the request recorded with each choice holds the very triples the
model was given: its replay reads them from the record, not from a graph that may have changed.
The facts are formatted by ``format_facts`` (``data/world.py``), the one format the built-in
world's training data is written in too; for a decoder they are a prefix of the prompt, for an
encoder–decoder the same text is the encoder's input.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from genloop.data.world import format_facts
from genloop.errors import InvalidInput, NotFound, UnicodeText
from genloop.tokenizers import Tokenizer

if TYPE_CHECKING:
    from genloop.knowledge.graph import Graph
    from genloop.store import Store

MAX_TRIPLES = 256


class Fact(BaseModel):
    """One triple the model was given (entity names in display form)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: UnicodeText = Field(max_length=1000)
    relation: UnicodeText = Field(max_length=200)
    object: UnicodeText = Field(max_length=1000)


class Retrieved(BaseModel):
    """What was retrieved for one prompt: the entities its text linked to, and their triples."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(max_length=100, description="sha256 of the prompt (which one it is for)")
    entities: list[str] = Field(default_factory=list, max_length=MAX_TRIPLES)
    triples: list[Fact] = Field(default_factory=list, max_length=MAX_TRIPLES)


class Grounding(BaseModel):
    """Facts from a knowledge graph put before each prompt; the same names on every face."""

    model_config = ConfigDict(extra="forbid")

    graph: str = Field(min_length=1, max_length=200, description="a graph in the workspace "
                                                                 "(genloop kg load)")
    hops: int = Field(1, ge=1, le=3, description="how far from each linked entity")
    max_triples: int = Field(32, ge=0, le=MAX_TRIPLES, description="at most this many per prompt")
    query: UnicodeText | None = Field(None, max_length=100_000,
                                      description="the text linked to the graph instead of the "
                                                  "prompt (chat: the user's messages)")
    retrieved: list[Retrieved] | None = Field(None, max_length=256,
                                              description="filled in when the request runs, one "
                                                          "per prompt, and recorded")
    graph_hash: str | None = Field(None, max_length=200,
                                   description="the graph's content hash when it was read")

    def facts(self, prompt: str) -> Retrieved:
        """What was retrieved for ``prompt``."""
        if self.retrieved is None:
            raise InvalidInput("grounding: its triples are not retrieved yet (TextModel retrieves "
                               "them before decoding: generation.grounding.retrieve)")
        key = prompt_key(prompt)
        for r in self.retrieved:
            if r.prompt == key:
                return r
        raise InvalidInput("grounding: nothing was retrieved for this prompt")

    def prefix(self, prompt: str) -> str:
        """The text put before ``prompt``: its facts, formatted."""
        return format_facts(self.facts(prompt).triples)

    def only(self, prompts: Sequence[str]) -> Grounding:
        """This grounding with the retrievals of ``prompts`` only (a choice's record holds its
        own prompt's)."""
        if self.retrieved is None:
            return self
        keys = {prompt_key(p) for p in prompts}
        return self.model_copy(update={"retrieved": [r for r in self.retrieved if r.prompt in keys]})


def prompt_key(prompt: str) -> str:
    return "sha256:" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:32]


def retrieve(spec: Grounding, prompts: Sequence[str], store: Store,
             embed: Any = None) -> Grounding:
    """``spec`` with the triples of each prompt retrieved from its graph (a spec whose triples
    are given is returned as it is). ``embed``: a text encoder's ``list[str] → array`` for
    linking by embedding similarity (``knowledge.graph.retrieve``)."""
    if spec.retrieved is not None:
        return spec
    from genloop.knowledge.graph import retrieve as retrieve_triples

    graph = graph_of(store, spec.graph)
    retrieved, seen = [], set()
    for prompt in prompts:
        key = prompt_key(prompt)
        if key in seen:
            continue
        seen.add(key)
        links, triples = retrieve_triples(graph, spec.query if spec.query is not None else prompt,
                                          hops=spec.hops, limit=spec.max_triples, embed=embed)
        entities = list(dict.fromkeys(link.entity for link in links))
        retrieved.append(Retrieved(
            prompt=key, entities=entities[:MAX_TRIPLES],
            triples=[Fact(subject=t.subject, relation=t.relation, object=t.object)
                     for t in triples[: spec.max_triples]]))
    return spec.model_copy(update={"retrieved": retrieved, "graph_hash": graph.hash})


_GRAPHS: OrderedDict[tuple[str, str], Graph] = OrderedDict()
_LOCK = threading.Lock()
GRAPHS_KEPT = 4


def graph_of(store: Store, name: str) -> Graph:
    """Graph ``name`` of the workspace, kept in memory while its stored hash is the same (a
    graph of thousands of triples takes a second to load; a request should not)."""
    from genloop.knowledge.graph import load_graph

    stored = next((g for g in store.kg_graphs() if g.name == name), None)
    key = (store.url, name)
    with _LOCK:
        kept = _GRAPHS.get(key)
        if stored is not None and kept is not None and kept.hash == stored.hash:
            _GRAPHS.move_to_end(key)
            return kept
    try:
        graph = load_graph(store, name)
    except NotFound as e:
        raise InvalidInput(f"grounding.graph: {e}") from None
    with _LOCK:
        _GRAPHS[key] = graph
        while len(_GRAPHS) > GRAPHS_KEPT:
            _GRAPHS.popitem(last=False)
    return graph


def keyed(spec: Grounding, old: str, new: str) -> Grounding:
    """``spec`` with what was retrieved for prompt ``old`` now for prompt ``new`` (a chat's
    facts are retrieved before its transcript is fitted to the context)."""
    assert spec.retrieved is not None
    key, to = prompt_key(old), prompt_key(new)
    return spec.model_copy(update={"retrieved": [
        r.model_copy(update={"prompt": to}) if r.prompt == key else r for r in spec.retrieved]})


def check_from_client(spec: Grounding) -> None:
    """A client (the HTTP face) names the graph; the server retrieves and records the rest."""
    for name in ("retrieved", "graph_hash"):
        if getattr(spec, name) is not None:
            raise InvalidInput(f"grounding.{name}: retrieved and recorded by the server; give "
                               "graph (and hops, max_triples)")


def check_fits(spec: Grounding, prompts: Sequence[str], tokenizer: Tokenizer,
               block_size: int | None, before: str = "") -> None:
    """Every prompt, after its facts, leaves room in the context for a generated token; else a
    one-line error saying how many facts it was given and how long they made it."""
    if block_size is None:
        return
    for prompt in prompts:
        facts = spec.facts(prompt)
        if not facts.triples:
            continue
        n = len(tokenizer.encode(before + spec.prefix(prompt) + prompt))
        if n >= block_size and len(tokenizer.encode(before + prompt)) < block_size:
            raise InvalidInput(f"grounding: the {len(facts.triples)} facts and the prompt are {n} "
                               f"tokens; this model's context is {block_size} tokens (lower "
                               "max_triples)")
