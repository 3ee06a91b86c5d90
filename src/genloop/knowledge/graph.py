"""A knowledge graph in memory: what grounding, linking and the fact checker read.

- **Entities** are the subjects and objects of the triples, by their display names. A relation
  named ``alias`` (``(Alice Varn, alias, Ali)``: "Ali" is another name of Alice Varn) is not a
  fact but a name: aliases resolve to their canonical entity, through chains (A's alias B, B's
  alias C: C names A), and every triple is stated in canonical names. A chain that comes back
  to where it started is refused, naming the cycle; so is one alias naming two entities.
- **Kinds**: the object of a ``type`` (or ``kind``, ``is_a``) triple is its subject's kind.
- **Lexicon**: relation → phrasings such as ``"{s} lives in {o}"``, which the fact checker turns
  into patterns and templates may write text with. A relation without one gets
  ``"{s} <relation in words> {o}"`` (``lives_in`` → ``"{s} lives in {o}"``).
- **Hash**: sha256 of the sorted triples and aliases (the order they came in does not matter; the
  lexicon is how the facts are phrased, not what they are, and is left out).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genloop.data.triples import ALIAS_RELATION, Triple, alias_map, read_lexicon, read_triples
from genloop.errors import CorruptArtifact, InvalidInput, NotFound
from genloop.knowledge.linking import Embed, Link, NameIndex, link_text, normalise

if TYPE_CHECKING:
    from genloop.store import Store

__all__ = ["ALIAS_RELATION", "Graph", "Link", "Triple", "default_phrasing", "load_graph", "read_graph",
           "retrieve"]

KIND_RELATIONS = ("type", "kind", "is_a")
MAX_HOPS = 5


def default_phrasing(relation: str) -> str:
    """``lives_in`` / ``livesIn`` / ``lives-in`` → ``"{s} lives in {o}"``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", relation).replace("_", " ").replace("-", " ")
    return "{s} " + " ".join(words.lower().split()) + " {o}"


def _check_phrasing(relation: str, phrasing: str) -> str:
    if not isinstance(phrasing, str) or phrasing.count("{s}") != 1 or phrasing.count("{o}") != 1:
        raise InvalidInput(f"lexicon: relation {relation!r}: phrasing {phrasing!r} must contain "
                           "{s} and {o} once each (e.g. \"{s} lives in {o}\")")
    return phrasing


class Graph:
    """Entities, facts, aliases and a lexicon; built by :meth:`from_triples`."""

    def __init__(self, name: str, triples: list[Triple], aliases: dict[str, str],
                 lexicon: dict[str, list[str]], kinds: dict[str, str]) -> None:
        self.name = name
        self.triples = triples
        self.aliases = aliases  # alias → canonical entity
        self.lexicon = lexicon
        self.kinds = kinds
        self._set = frozenset(triples)
        self._out: dict[str, list[Triple]] = defaultdict(list)
        self._in: dict[str, list[Triple]] = defaultdict(list)
        names: dict[str, None] = {}
        for t in triples:
            self._out[t.subject].append(t)
            self._in[t.object].append(t)
            names[t.subject] = None
            names[t.object] = None
        for entity in aliases.values():
            names[entity] = None
        self.entities = list(names)
        self.index = NameIndex(self.entities, aliases)
        blob = json.dumps({"triples": sorted([t.subject, t.relation, t.object] for t in triples),
                           "aliases": sorted(aliases.items())}, ensure_ascii=False)
        self.hash = "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @classmethod
    def from_triples(cls, name: str, triples: Iterable[Triple], aliases: dict[str, str] | None = None,
                     lexicon: dict[str, list[str]] | None = None) -> Graph:
        """A graph of ``triples``: ``alias`` triples and ``aliases`` (alias → entity) become names,
        the rest facts in canonical names (duplicates once, in the order first given)."""
        triples = list(triples)
        resolved = alias_map(triples, aliases)
        facts = [t for t in triples if t.relation != ALIAS_RELATION]

        def canon(x: str) -> str:
            return resolved.get(x, x)

        facts = list(dict.fromkeys(Triple(canon(t.subject), t.relation, canon(t.object))
                                   for t in facts))
        relations = dict.fromkeys(t.relation for t in facts)
        lex: dict[str, list[str]] = {}
        for relation, phrasings in (lexicon or {}).items():
            if isinstance(phrasings, str) or not phrasings:
                raise InvalidInput(f"lexicon: relation {relation!r} needs a list of phrasings")
            lex[relation] = [_check_phrasing(relation, p) for p in phrasings]
        for relation in relations:
            lex.setdefault(relation, [default_phrasing(relation)])
        kinds = {t.subject: t.object for t in facts if t.relation in KIND_RELATIONS}
        return cls(name, facts, resolved, lex, kinds)

    # --- lookups ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.triples)

    def __contains__(self, triple: object) -> bool:
        return triple in self._set

    def entity(self, name_or_alias: str) -> str:
        """The canonical name of an entity, by its name or an alias (exact, then normalised)."""
        if name_or_alias in self._out or name_or_alias in self._in:
            return name_or_alias
        if name_or_alias in self.aliases:
            return self.aliases[name_or_alias]
        hit = self.index.lookup(normalise(name_or_alias))
        if hit is not None:
            return hit[0]
        closest = self.index.closest(normalise(name_or_alias))
        hint = f" (closest: {', '.join(closest)})" if closest else ""
        raise NotFound(f"graph {self.name!r} has no entity {name_or_alias!r}{hint}")

    def facts(self, subject: str, relation: str | None = None) -> list[Triple]:
        """The triples about ``subject`` (a name or alias), of one relation if given."""
        entity = self.entity(subject)
        return [t for t in self._out.get(entity, ()) if relation is None or t.relation == relation]

    def mentions_of(self, entity: str) -> list[Triple]:
        """The triples whose object is ``entity`` (a name or alias)."""
        return list(self._in.get(self.entity(entity), ()))

    def relations(self) -> dict[str, int]:
        """Each relation with its number of triples, most used first."""
        return dict(Counter(t.relation for t in self.triples).most_common())

    def neighbourhood(self, entity: str, hops: int = 1, limit: int = 64) -> list[Triple]:
        """The triples within ``hops`` of ``entity``, breadth first (at each node: its own facts,
        then the facts naming it), at most ``limit``."""
        if not 1 <= hops <= MAX_HOPS:
            raise InvalidInput(f"hops must be 1..{MAX_HOPS}, not {hops}")
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, not {limit}")
        start = self.entity(entity)
        seen_nodes = {start}
        frontier = [start]
        out: dict[Triple, None] = {}
        for _ in range(hops):
            nxt: list[str] = []
            for node in frontier:
                for t in (*self._out.get(node, ()), *self._in.get(node, ())):
                    if t in out:
                        continue
                    out[t] = None
                    if len(out) >= limit:
                        return list(out)
                    for other in (t.subject, t.object):
                        if other not in seen_nodes:
                            seen_nodes.add(other)
                            nxt.append(other)
            frontier = nxt
        return list(out)

    def link(self, text: str, embed: Embed | None = None, fuzzy: float = 0.85,
             similarity: float = 0.8) -> list[Link]:
        """The entities ``text`` mentions (knowledge/linking.py: exact, alias, fuzzy, embedding)."""
        return link_text(self.index, text, embed=embed, fuzzy=fuzzy, similarity=similarity)

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "hash": self.hash, "entities": len(self.entities),
                "aliases": len(self.aliases), "triples": len(self.triples),
                "relations": self.relations()}

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.entities)} entities, {len(self.triples)} triples)"


def read_graph(path: str | os.PathLike[str], name: str | None = None, format: str | None = None,
               lexicon: str | os.PathLike[str] | None = None) -> Graph:
    """The graph of a triples file (data/triples.py reads CSV, JSON Lines, N-Triples, Turtle),
    named ``name`` (default: the file's stem), with the phrasings of a lexicon file. Every error
    is one line naming the file."""
    path = Path(path).expanduser()
    data = read_triples(path, format)
    lex = read_lexicon(lexicon) if lexicon is not None else None
    try:
        return Graph.from_triples(name or path.stem, data.triples, data.aliases, lex)
    except InvalidInput as e:
        raise InvalidInput(f"{lexicon if str(e).startswith('lexicon') else path}: {e}") from None


def load_graph(store: Store, name: str) -> Graph:
    """The graph stored as ``name`` in the workspace database (``Store.kg_save(graph)`` put it
    there), checked against its hash."""
    stored = store.kg_load(name)
    graph = Graph.from_triples(stored.name, stored.triples, stored.aliases, stored.lexicon)
    if graph.hash != stored.hash:
        raise CorruptArtifact(f"knowledge graph {name!r}: its rows do not match its hash "
                              f"{stored.hash[:19]}; load it again with --replace")
    return graph


def retrieve(graph: Graph, text: str, hops: int = 1, limit: int = 32,
             embed: Embed | None = None) -> tuple[list[Link], list[Triple]]:
    """The links of ``text`` and the triples around the entities it names: each linked entity's
    ``hops``-neighbourhood, entities with facts of their own first (a linked value such as a
    colour names many subjects and says little), in text order, without repeats, at most
    ``limit`` triples."""
    links = graph.link(text, embed=embed)
    entities = list(dict.fromkeys(link.entity for link in links))
    entities.sort(key=lambda e: 0 if graph._out.get(e) else 1)
    out: dict[Triple, None] = {}
    # first each entity's share of the limit, then the rest in order, so a text naming two
    # entities gets facts of both
    hoods = [graph.neighbourhood(e, hops=hops, limit=limit) for e in entities]
    share = max(limit // max(len(hoods), 1), 1)
    for hood in [h[:share] for h in hoods] + hoods:
        for t in hood:
            out[t] = None
            if len(out) >= limit:
                return links, list(out)
    return links, list(out)
