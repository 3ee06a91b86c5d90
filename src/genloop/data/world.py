"""The built-in world: a procedurally generated knowledge graph, and text written from it.

Fictional people, places, organisations, products and a shop's orders, with names made from
syllables, so no model has seen a fact of it before. The world is a pure function of (seed,
sizes): ``build_world()`` gives the same triples on every machine. A fifth of the people and of
the products (and every order of a held-out person or product) are *held out*
(``World.held_out``): the built-in training sets never mention them, so a model asked about
them can answer only from facts it is given — the measurement of grounding (bench/grounding.py).

Text from the graph, by templates with varied phrasing (``LEXICON``: the phrasings of each
relation, the same ones the fact checker reads claims with):

- descriptions: the facts about an entity → sentences stating each of them;
- question–answer pairs: a question about a relation of an entity → its object, or
  ``I don't know.`` when the graph has no such fact (a person with no employer, an order not yet
  given a delivery date, a name the graph does not hold);
- support dialogues with the shop's assistant: a question about "my order" → the assistant asks
  which order → the customer names it → the answer from the order's facts.

Each prompt starts with the facts a retrieval would give for it (``format_facts`` of the
neighbourhood of the entities it names: their triples as subject and as object, plus at times a
few unrelated ones, so a model learns to pick the facts it needs), as grounded generation puts
them (``generation/grounding.py``). The three built-in ``pairs`` sources ``world-describe``,
``world-qa`` and ``world-dialogue`` (``PAIRS_SOURCES``) are these records for the entities that
are not held out; ``held_out_pairs`` gives those of the held-out ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from genloop.atomic import atomic_write_text
from genloop.data.triples import Triple

SEED = 14
HELD_OUT_SHARE = 0.2
IDK = "I don't know."


# relation → phrasings; "{s}" and "{o}" are the subject's and the object's names
LEXICON: dict[str, list[str]] = {
    "lives_in": ["{s} lives in {o}", "{s} is a resident of {o}", "{s} makes a home in {o}"],
    "works_for": ["{s} works for {o}", "{s} is employed by {o}", "{s} has a job at {o}"],
    "occupation": ["{s} works as a {o}", "{s} is a {o} by trade"],
    "born_in": ["{s} was born in {o}", "{s} came into the world in {o}"],
    "made_by": ["{s} is made by {o}", "{s} is manufactured by {o}", "{s} comes from {o}"],
    "price": ["{s} costs {o}", "{s} sells for {o}", "{s} is priced at {o}"],
    "colour": ["{s} is coloured {o}", "{s} comes in {o}"],
    "warranty": ["{s} has a warranty of {o}", "{s} is covered for {o}"],
    "placed_by": ["{s} was placed by {o}", "{s} was ordered by {o}"],
    "item": ["{s} is for {o}", "{s} contains {o}"],
    "status": ["{s} has status {o}", "{s} is currently {o}"],
    "delivery": ["{s} arrives on {o}", "{s} is due on {o}"],
    "located_in": ["{s} lies in {o}", "{s} is a town in {o}"],
    "based_in": ["{s} is based in {o}", "{s} has its seat in {o}"],
}

# relation → questions about it (the answer is the object)
QUESTIONS: dict[str, list[str]] = {
    "lives_in": ["Where does {s} live?", "In which town does {s} live?"],
    "works_for": ["Who does {s} work for?", "Which company employs {s}?"],
    "occupation": ["What is the job of {s}?", "What does {s} do for a living?"],
    "born_in": ["When was {s} born?", "In which year was {s} born?"],
    "made_by": ["Who makes {s}?", "Which company manufactures {s}?"],
    "price": ["How much does {s} cost?", "What is the price of {s}?"],
    "colour": ["What colour is {s}?", "Which colour does {s} come in?"],
    "warranty": ["How long is the warranty of {s}?", "What warranty does {s} have?"],
    "placed_by": ["Who placed {s}?", "Who ordered {s}?"],
    "item": ["What is in {s}?", "Which product is {s} for?"],
    "status": ["What is the status of {s}?", "How is {s} doing?"],
    "delivery": ["When does {s} arrive?", "When is {s} due?"],
}

# what each kind of entity may have (optional relations are left out at random)
RELATIONS = {
    "person": ("born_in", "lives_in", "occupation", "works_for"),
    "product": ("colour", "made_by", "price", "warranty"),
    "order": ("delivery", "item", "placed_by", "status"),
}
OPTIONAL = {"born_in": 0.3, "occupation": 0.3, "works_for": 0.3, "colour": 0.3, "warranty": 0.35}

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gl", "kr", "th", "tr", "sh", "qu"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "y"]
_CODAS = ["", "", "", "n", "r", "l", "s", "th", "k", "m"]
_OCCUPATIONS = ["baker", "tailor", "painter", "doctor", "teacher", "pilot", "nurse", "farmer",
                "sailor", "potter", "miller", "carpenter", "lawyer", "singer", "mason", "weaver"]
_COLOURS = ["red", "blue", "green", "black", "white", "yellow", "grey", "purple", "orange"]
_WARRANTIES = ["6 months", "1 year", "2 years", "3 years", "5 years"]
_STATUSES = ["processing", "shipped", "delivered", "cancelled"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_ORG_SUFFIXES = ["Labs", "Works", "Foods", "Group", "Trading", "Studio", "Motors", "Textiles"]


def _word(rng: random.Random, syllables: int) -> str:
    w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
    return (w + rng.choice(_CODAS)).capitalize()


@dataclass
class World:
    """The graph (``triples``), each entity's kind, and the held-out entities."""

    seed: int
    triples: list[Triple]
    kinds: dict[str, str]  # entity name → person | place | region | organisation | product | order
    held_out: frozenset[str]
    _out: dict[str, list[Triple]] = field(default_factory=dict, repr=False)
    _in: dict[str, list[Triple]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for t in self.triples:
            self._out.setdefault(t.subject, []).append(t)
            self._in.setdefault(t.object, []).append(t)

    def facts(self, subject: str) -> list[Triple]:
        """The triples whose subject is ``subject``."""
        return list(self._out.get(subject, []))

    def neighbourhood(self, entity: str) -> list[Triple]:
        """The triples naming ``entity``, as subject or as object (one hop)."""
        return self.facts(entity) + list(self._in.get(entity, []))

    def entities(self, kind: str, *, held_out: bool) -> list[str]:
        return [e for e, k in self.kinds.items() if k == kind and (e in self.held_out) == held_out]

    def fact(self, subject: str, relation: str) -> str | None:
        return next((t.object for t in self._out.get(subject, []) if t.relation == relation), None)


def _is_held_out(name: str, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") < HELD_OUT_SHARE * 2**32


@lru_cache(maxsize=4)
def build_world(seed: int = SEED, people: int = 1500, products: int = 300,
                orders: int = 500) -> World:
    """The world of ``seed``: 40 places in 8 regions, 48 organisations, and the given numbers of
    people, products and orders; names unique across the world."""
    rng = random.Random(seed)
    used: set[str] = set()

    def fresh(make: Iterable[str]) -> str:
        for name in make:
            if name.casefold() not in used:
                used.add(name.casefold())
                return name
        raise AssertionError("unreachable: the generator is endless")

    def names(parts: Sequence[int], suffix: Sequence[str] = ()) -> Iterable[str]:
        while True:
            words = [_word(rng, n) for n in parts]
            yield " ".join(words + ([rng.choice(suffix)] if suffix else []))

    triples: list[Triple] = []
    kinds: dict[str, str] = {}
    regions = [fresh(names([2])) for _ in range(8)]
    places = [fresh(names([2])) for _ in range(40)]
    for p in places:
        triples.append(Triple(p, "located_in", rng.choice(regions)))
    orgs = [fresh(names([2], _ORG_SUFFIXES)) for _ in range(48)]
    for o in orgs:
        triples.append(Triple(o, "based_in", rng.choice(places)))
    kinds.update({r: "region" for r in regions} | {p: "place" for p in places}
                 | {o: "organisation" for o in orgs})

    def optional(rel: str) -> bool:
        return rng.random() >= OPTIONAL.get(rel, 0.0)

    persons = [fresh(names([2, 2])) for _ in range(people)]
    for p in persons:
        kinds[p] = "person"
        values = {"born_in": str(rng.randint(1940, 2005)), "lives_in": rng.choice(places),
                  "occupation": rng.choice(_OCCUPATIONS), "works_for": rng.choice(orgs)}
        triples += [Triple(p, r, values[r]) for r in RELATIONS["person"] if optional(r)]
    goods = [fresh(f"{w} {rng.randint(2, 99) * 10}" for w in names([2])) for _ in range(products)]
    for g in goods:
        kinds[g] = "product"
        values = {"colour": rng.choice(_COLOURS), "made_by": rng.choice(orgs),
                  "price": f"${rng.randint(5, 400)}", "warranty": rng.choice(_WARRANTIES)}
        triples += [Triple(g, r, values[r]) for r in RELATIONS["product"] if optional(r)]
    numbers = rng.sample(range(1000, 10000), orders)
    held: set[str] = {e for e in persons + goods if _is_held_out(e, seed)}
    for n in numbers:
        order = f"Order {n}"
        kinds[order] = "order"
        customer, item = rng.choice(persons), rng.choice(goods)
        status = rng.choice(_STATUSES)
        triples += [Triple(order, "item", item), Triple(order, "placed_by", customer),
                    Triple(order, "status", status)]
        if status in ("shipped", "delivered"):  # no date yet while processing; none if cancelled
            triples.append(Triple(order, "delivery", f"{rng.randint(1, 28)} {rng.choice(_MONTHS)}"))
        if customer in held or item in held:
            held.add(order)
    return World(seed, triples, kinds, frozenset(held))


def world_triples(seed: int = SEED) -> list[Triple]:
    """The triples of the built-in world of ``seed``."""
    return list(build_world(seed).triples)


# --- the facts a prompt is given ---------------------------------------------------------------


class TripleLike(Protocol):
    """Anything with a triple's three names: a Triple, a recorded fact."""

    @property
    def subject(self) -> str: ...
    @property
    def relation(self) -> str: ...
    @property
    def object(self) -> str: ...


def format_facts(triples: Iterable[TripleLike]) -> str:
    """Triples as the text put before a prompt: one line per subject (subjects in name order),
    ``Subject | relation: object | relation: object``, then an empty line; no triples: "".

    The one format of grounded generation and of the training data, so a model reads at serving
    time what it learned from. Sorted, so it depends only on the set of triples retrieved, not
    on the order a retrieval gives them in; any object with subject/relation/object will do."""
    by_subject: dict[str, list[tuple[str, str]]] = {}
    for t in triples:
        by_subject.setdefault(t.subject, []).append((t.relation, t.object))
    lines = [subject + "".join(f" | {r}: {o}" for r, o in sorted(set(facts)))
             for subject, facts in sorted(by_subject.items())]
    return "".join(line + "\n" for line in lines) + ("\n" if lines else "")


def _retrieved(world: World, entities: Sequence[str], rng: random.Random,
               held_out: bool) -> list[Triple]:
    """What a retrieval gives for a text naming ``entities``: their one-hop neighbourhood, and
    in a quarter of the prompts up to two triples about some other entity. Training records
    (``held_out`` False) keep only triples that name no held-out entity."""
    facts = [t for e in entities for t in world.neighbourhood(e)]
    if rng.random() < 1 / 4:
        other = rng.choice(world.triples)
        facts += world.facts(other.subject)[:2]
    if not held_out:
        facts = [t for t in facts if t.subject not in world.held_out
                 and t.object not in world.held_out]
    return facts


# --- text from the graph -----------------------------------------------------------------------


def sentence(t: Triple, rng: random.Random) -> str:
    return rng.choice(LEXICON[t.relation]).format(s=t.subject, o=t.object) + "."


def description(world: World, entity: str, rng: random.Random) -> str:
    """Each fact about ``entity`` as a sentence, in the order ``format_facts`` lists them."""
    facts = sorted(world.facts(entity), key=lambda t: (t.relation, t.object))
    return " ".join(sentence(t, rng) for t in facts)


def describe_prompt(entity: str) -> str:
    return f"Describe {entity}.\n"


def qa_prompt(question: str) -> str:
    return f"Q: {question}\nA: "


def answer_text(obj: str | None) -> str:
    return IDK if obj is None else f"{obj}."


@dataclass(frozen=True)
class Question:
    """One question about ``entity``'s ``relation``; ``answer`` None: the graph has no answer."""

    entity: str
    relation: str
    text: str
    answer: str | None


def questions(world: World, entity: str, rng: random.Random) -> list[Question]:
    """A question for each relation the entity's kind has (absent ones are unanswerable)."""
    out = []
    for rel in RELATIONS[world.kinds[entity]]:
        q = rng.choice(QUESTIONS[rel]).format(s=entity)
        out.append(Question(entity, rel, q, world.fact(entity, rel)))
    return out


def unknown_name(rng: random.Random, world: World) -> str:
    """A person's name the world does not hold."""
    while True:
        name = f"{_word(rng, 2)} {_word(rng, 2)}"
        if name not in world.kinds:
            return name


# --- support dialogues -------------------------------------------------------------------------

# The transcript the default chat template renders (generation/chat.py: "USER:\n…\n\n", the
# reply after "ASSISTANT:\n"): the data layer sits under generation/, so it is written out here
# and tests/data/test_world.py holds the two to each other.
USER, ASSISTANT = "USER", "ASSISTANT"
CLARIFY = "Which order do you mean? Please give me the order number."
ORDER_QUESTIONS = {
    # no word of these is an entity of the graph ("shipped" is: a status), so nothing links
    # before the order is named
    "status": ["Where is my order?", "What is the status of my order?", "How is my order doing?"],
    "delivery": ["When will my order arrive?", "When is my order due?"],
    "item": ["What did I order?", "Which product is in my order?"],
}
NAMING = ["It is {o}.", "{o}, please.", "The number is {o}.", "I mean {o}."]


def transcript(turns: Sequence[tuple[str, str]]) -> str:
    """``(role, content)`` turns as the default chat template renders them, ending with the
    start of the assistant's reply."""
    return "".join(f"{role}:\n{content}\n\n" for role, content in turns) + f"{ASSISTANT}:\n"


def order_reply(world: World, order: str, relation: str) -> str:
    obj = world.fact(order, relation)
    if obj is None:
        return IDK
    return sentence(Triple(order, relation, obj), random.Random(0))


@dataclass(frozen=True)
class Dialogue:
    """A scripted support conversation: the customer's question about "my order", the
    assistant's clarifying question, the order named, the answer from the graph."""

    order: str
    relation: str
    question: str
    naming: str
    expected: str  # the assistant's last reply

    def user_turns(self) -> list[str]:
        return [self.question, self.naming]


def dialogue(world: World, order: str, rng: random.Random) -> Dialogue:
    relation = rng.choice(sorted(ORDER_QUESTIONS))
    return Dialogue(order, relation, rng.choice(ORDER_QUESTIONS[relation]),
                    rng.choice(NAMING).format(o=order), order_reply(world, order, relation))


def dialogue_pairs(world: World, d: Dialogue, rng: random.Random,
                   held_out: bool = True) -> list[dict[str, str]]:
    """The two assistant turns of ``d`` as prompt → completion records: the facts retrieved for
    the user's words so far, then the transcript."""
    first = [(USER, d.question)]
    second = [*first, (ASSISTANT, CLARIFY), (USER, d.naming)]
    return [{"prompt": format_facts(_retrieved(world, [], rng, held_out)) + transcript(first),
             "completion": CLARIFY},
            {"prompt": format_facts(_retrieved(world, [d.order], rng, held_out)) + transcript(second),
             "completion": d.expected}]


def chat_question_pair(world: World, q: Question, rng: random.Random,
                       held_out: bool = True) -> dict[str, str]:
    """A direct question to the assistant, answered in one turn."""
    known = [q.entity] if q.entity in world.kinds else []
    reply = IDK if q.answer is None else sentence(Triple(q.entity, q.relation, q.answer), rng)
    return {"prompt": format_facts(_retrieved(world, known, rng, held_out)) + transcript([(USER, q.text)]),
            "completion": reply}


# --- the pairs sources -------------------------------------------------------------------------

TASKS = ("describe", "qa", "dialogue")
PAIRS_SOURCES = {f"world-{task}": task for task in TASKS}
_DESCRIBED = ("person", "product", "order")


MAX_CHARS = 256  # records longer than this (prompt and completion) are left out


def pairs(task: str, *, held_out: bool = False, seed: int = SEED,
          variants: int = 2) -> list[dict[str, str]]:
    """The prompt → completion records of ``task`` for the entities that are (not) held out;
    ``variants`` draws of phrasing and distractors per entity; those of at most ``MAX_CHARS``
    characters (a small model's context). Deterministic."""
    world = build_world(seed)
    rng = random.Random(f"{seed}:{task}:{held_out}")
    out: list[dict[str, str]] = []
    entities = [e for kind in _DESCRIBED for e in world.entities(kind, held_out=held_out)]
    for _ in range(variants):
        for e in entities:
            if task == "describe":
                out.append({"prompt": format_facts(_retrieved(world, [e], rng, held_out))
                            + describe_prompt(e), "completion": description(world, e, rng)})
            elif task == "qa":
                # with its description: stating every fact is what teaches a small model to copy
                # names it has never seen; the short answers alone teach it too slowly
                out.append({"prompt": format_facts(_retrieved(world, [e], rng, held_out))
                            + describe_prompt(e), "completion": description(world, e, rng)})
                for q in questions(world, e, rng):
                    if q.answer is None or rng.random() < 0.5:
                        out.append(qa_record(world, q, rng, held_out))
                if rng.random() < 0.1:  # a name the graph does not know
                    q = Question(unknown_name(rng, world), "lives_in", "", None)
                    q = Question(q.entity, q.relation, rng.choice(QUESTIONS["lives_in"])
                                 .format(s=q.entity), None)
                    out.append(qa_record(world, q, rng, held_out))
            elif task == "dialogue":
                if world.kinds[e] == "order":
                    out += dialogue_pairs(world, dialogue(world, e, rng), rng, held_out)
                else:
                    qs = questions(world, e, rng)
                    out.append(chat_question_pair(world, rng.choice(qs), rng, held_out))
            else:
                raise ValueError(f"unknown world task {task!r} (known: {', '.join(TASKS)})")
    return [r for r in out if len(r["prompt"]) + len(r["completion"]) <= MAX_CHARS]


def qa_record(world: World, q: Question, rng: random.Random,
              held_out: bool = True) -> dict[str, str]:
    known = [q.entity] if q.entity in world.kinds else []
    return {"prompt": format_facts(_retrieved(world, known, rng, held_out)) + qa_prompt(q.text),
            "completion": answer_text(q.answer)}


def write_pairs(source: str, folder: Path) -> Path:
    """The built-in pairs source ``source`` (a key of ``PAIRS_SOURCES``) as a .jsonl file in
    ``folder``, written afresh each time (a fraction of a second): what the dataset's hash
    covers is the records, so a file left by another version of genloop is never trusted."""
    path = folder / f"{source}.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pairs(PAIRS_SOURCES[source]))
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path


def export(folder: str | os.PathLike[str], seed: int = SEED) -> tuple[Path, Path]:
    """The world's graph as files ``genloop kg load`` reads: ``world.jsonl`` (its triples) and
    ``world-lexicon.json`` (its phrasings, which the fact checker reads claims with)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    triples, lexicon = out / "world.jsonl", out / "world-lexicon.json"
    triples.write_text("".join(json.dumps({"subject": t.subject, "relation": t.relation,
                                           "object": t.object}, ensure_ascii=False) + "\n"
                               for t in world_triples(seed)), encoding="utf-8")
    lexicon.write_text(json.dumps(LEXICON, indent=1) + "\n", encoding="utf-8")
    return triples, lexicon


__all__ = ["IDK", "LEXICON", "PAIRS_SOURCES", "Triple", "World", "build_world", "export", "format_facts",
           "pairs", "world_triples", "write_pairs"]
