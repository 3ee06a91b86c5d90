"""Knowledge graphs in the workspace database: a graph's entities, aliases and triples as rows.

    kg_graphs    name (unique), content hash, lexicon, created
    kg_entities  (graph, id): display name, normalised name, kind
    kg_aliases   (graph, alias): the entity it names
    kg_triples   (graph, id): subject, relation, object; indexed on (graph, subject) and
                 (graph, object), so an entity's facts and the facts naming it are index reads

Saving a graph is one write transaction: all of its rows or none. A name that exists with the
same hash keeps its rows (saving is idempotent; only a changed lexicon is written); with another
hash it is refused unless
``replace``, which deletes the old rows and writes the new ones in that same transaction, so a
reader sees the old graph or the new one, never a mixture. Two processes saving one new name at
once: the unique name decides, the loser gets a Conflict.

The store holds rows, not behaviour: it takes anything shaped like ``knowledge.Graph`` (name,
hash, triples, aliases, lexicon, kinds) and hands back a :class:`StoredGraph`, which
``knowledge.graph.load_graph`` turns into a Graph (this layer may not import that one).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ForeignKey, Index, Integer, String, Text, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from genloop.data.triples import Triple
from genloop.errors import Conflict, InvalidInput, NotFound
from genloop.store.db import Base, Database, JSONType, UTCDateTime, _Record, utcnow

GRAPH_NAME_RULE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_CHUNK = 5000  # rows per INSERT of a large graph


class GraphLike(Protocol):
    name: str
    hash: str
    triples: list[Triple]
    aliases: dict[str, str]
    lexicon: dict[str, list[str]]
    kinds: dict[str, str]


# --- tables ---------------------------------------------------------------------------------


class KGGraphRow(Base):
    __tablename__ = "kg_graphs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    hash: Mapped[str] = mapped_column(String(80))
    lexicon: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KGEntityRow(Base):
    __tablename__ = "kg_entities"
    __table_args__ = (Index("ix_kg_entities_graph_norm", "graph_id", "norm"),)

    graph_id: Mapped[int] = mapped_column(ForeignKey("kg_graphs.id"), primary_key=True)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(Text)
    norm: Mapped[str] = mapped_column(Text)  # NFKC + casefold + single spaces
    kind: Mapped[str | None] = mapped_column(Text, nullable=True)


class KGAliasRow(Base):
    __tablename__ = "kg_aliases"

    graph_id: Mapped[int] = mapped_column(ForeignKey("kg_graphs.id"), primary_key=True)
    alias: Mapped[str] = mapped_column(Text, primary_key=True)
    entity_id: Mapped[int] = mapped_column(Integer)


class KGTripleRow(Base):
    __tablename__ = "kg_triples"
    __table_args__ = (Index("ix_kg_triples_graph_subject", "graph_id", "subject"),
                      Index("ix_kg_triples_graph_object", "graph_id", "object"))

    graph_id: Mapped[int] = mapped_column(ForeignKey("kg_graphs.id"), primary_key=True)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    subject: Mapped[int] = mapped_column(Integer)  # kg_entities.id in the same graph
    relation: Mapped[str] = mapped_column(Text)
    object: Mapped[int] = mapped_column(Integer)


# --- records --------------------------------------------------------------------------------


class KGGraphRecord(_Record):
    """A stored graph as lists show it."""

    name: str
    hash: str
    entities: int
    aliases: int
    triples: int
    created_at: datetime


@dataclass(frozen=True)
class StoredGraph:
    """Everything a stored graph holds, in the order it was saved."""

    name: str
    hash: str
    triples: list[Triple]
    aliases: dict[str, str]
    lexicon: dict[str, list[str]]
    kinds: dict[str, str]
    created_at: datetime


def _norm(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def _chunks(rows: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    for i in range(0, len(rows), _CHUNK):
        yield rows[i:i + _CHUNK]


def validate_graph_name(name: str) -> str:
    if not re.match(GRAPH_NAME_RULE, name):
        raise InvalidInput(f"graph name {name!r} is invalid: 1-100 letters, digits, '.', '_' or "
                           "'-', starting with a letter or digit")
    return name


class KGRecords(Database):
    """The knowledge-graph methods of :class:`genloop.store.Store`."""

    def kg_save(self, graph: GraphLike, replace: bool = False) -> KGGraphRecord:
        """Store ``graph`` under its name in one transaction (see the module docstring)."""
        validate_graph_name(graph.name)
        ids: dict[str, int] = {}
        for t in graph.triples:
            ids.setdefault(t.subject, len(ids))
            ids.setdefault(t.object, len(ids))
        for entity in graph.aliases.values():
            ids.setdefault(entity, len(ids))
        for value in (*ids, *graph.aliases, *(t.relation for t in graph.triples)):
            if "\x00" in value:
                raise InvalidInput(f"graph {graph.name!r}: {value!r} contains a NUL character, which "
                                   "no database text column takes")
        try:
            with self.write() as s:
                row = s.scalars(select(KGGraphRow).where(KGGraphRow.name == graph.name)
                                .with_for_update()).one_or_none()
                if row is not None:
                    if row.hash == graph.hash:  # the same facts: at most new phrasings
                        if row.lexicon != dict(graph.lexicon):
                            row.lexicon = dict(graph.lexicon)
                        return self._graph_record(s, row)
                    if not replace:
                        raise Conflict(f"graph {graph.name!r} exists with other facts "
                                       f"({row.hash[:19]}); pass --replace to replace it")
                    for table in (KGTripleRow, KGAliasRow, KGEntityRow):
                        s.execute(delete(table).where(table.graph_id == row.id))
                    row.hash, row.lexicon, row.created_at = graph.hash, dict(graph.lexicon), utcnow()
                else:
                    row = KGGraphRow(name=graph.name, hash=graph.hash, lexicon=dict(graph.lexicon))
                    s.add(row)
                s.flush()
                gid = row.id
                kinds: Mapping[str, str] = graph.kinds
                for chunk in _chunks([{"graph_id": gid, "id": i, "name": n, "norm": _norm(n),
                                       "kind": kinds.get(n)} for n, i in ids.items()]):
                    s.execute(insert(KGEntityRow), chunk)
                for chunk in _chunks([{"graph_id": gid, "alias": a, "entity_id": ids[e]}
                                      for a, e in graph.aliases.items()]):
                    s.execute(insert(KGAliasRow), chunk)
                for chunk in _chunks([{"graph_id": gid, "id": i, "subject": ids[t.subject],
                                       "relation": t.relation, "object": ids[t.object]}
                                      for i, t in enumerate(graph.triples)]):
                    s.execute(insert(KGTripleRow), chunk)
                return self._graph_record(s, row)
        except IntegrityError:
            raise Conflict(f"graph {graph.name!r} was saved by another process at the same time; "
                           "try again") from None

    def kg_load(self, name: str) -> StoredGraph:
        """The graph stored as ``name``; NotFound (naming the stored graphs) if there is none."""
        with self.read() as s:
            row = s.scalars(select(KGGraphRow).where(KGGraphRow.name == name)).one_or_none()
            if row is None:
                names = s.scalars(select(KGGraphRow.name).order_by(KGGraphRow.name)).all()
                known = (f"stored: {', '.join(names)}" if names
                         else "none is stored; load one with genloop kg load")
                raise NotFound(f"no knowledge graph {name!r} ({known})")
            entities = {i: (n, k) for i, n, k in s.execute(
                select(KGEntityRow.id, KGEntityRow.name, KGEntityRow.kind)
                .where(KGEntityRow.graph_id == row.id))}
            triples = [Triple(entities[a][0], r, entities[b][0]) for a, r, b in s.execute(
                select(KGTripleRow.subject, KGTripleRow.relation, KGTripleRow.object)
                .where(KGTripleRow.graph_id == row.id).order_by(KGTripleRow.id))]
            aliases = {a: entities[e][0] for a, e in s.execute(
                select(KGAliasRow.alias, KGAliasRow.entity_id).where(KGAliasRow.graph_id == row.id)
                .order_by(KGAliasRow.alias))}
            kinds = {n: k for n, k in entities.values() if k is not None}
            return StoredGraph(row.name, row.hash, triples, aliases, dict(row.lexicon), kinds,
                               row.created_at)

    def kg_graphs(self) -> list[KGGraphRecord]:
        """Every stored graph, by name."""
        with self.read() as s:
            rows = s.scalars(select(KGGraphRow).order_by(KGGraphRow.name)).all()
            return [self._graph_record(s, r) for r in rows]

    def kg_delete(self, name: str) -> None:
        with self.write() as s:
            row = s.scalars(select(KGGraphRow).where(KGGraphRow.name == name)
                            .with_for_update()).one_or_none()
            if row is None:
                raise NotFound(f"no knowledge graph {name!r}")
            for table in (KGTripleRow, KGAliasRow, KGEntityRow):
                s.execute(delete(table).where(table.graph_id == row.id))
            s.delete(row)

    @staticmethod
    def _graph_record(s: Any, row: KGGraphRow) -> KGGraphRecord:
        def count(table: Any) -> int:
            query = select(func.count()).select_from(table).where(table.graph_id == row.id)
            return int(s.scalar(query))

        return KGGraphRecord(name=row.name, hash=row.hash, entities=count(KGEntityRow),
                             aliases=count(KGAliasRow), triples=count(KGTripleRow),
                             created_at=row.created_at)
