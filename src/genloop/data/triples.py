"""The ``triples`` kind: a knowledge graph as (subject, relation, object) facts.

    subject,relation,object                                              CSV, with this header
    Alice Varn,lives_in,Tolmeria
    {"subject": "Alice Varn", "relation": "alias", "object": "Ali"}      JSON Lines
    <http://ex.org/AliceVarn> <http://ex.org/livesIn> <http://ex.org/Tolmeria> .     N-Triples
    ex:AliceVarn ex:livesIn ex:Tolmeria ; rdfs:label "Alice Varn" .      Turtle

N-Triples and Turtle are read with rdflib: IRIs are shortened to their local name (after the
last ``#`` or ``/``), literals are their text, ``rdfs:label`` gives a node its display name (its
local name and further labels become aliases) and ``skos:altLabel`` an alias. A relation named
``alias`` is another name of its subject (``knowledge/graph.py`` resolves them).

Reading is all or nothing: the first malformed line is a one-line ``InvalidInput`` —
``FILE:LINE: what is wrong`` — and nothing is returned. A ``triples`` dataset (``TriplesDataConfig``)
stores the facts in the folder every kind shares, content-hashed; the graph that queries use is
the one ``genloop kg load`` puts in the workspace database.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genloop.data.folder import Folder, read_folder, stored, write_folder
from genloop.errors import InvalidInput

FORMATS = ("csv", "jsonl", "nt", "ttl")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".nt": "nt", ".ttl": "ttl", ".turtle": "ttl"}
FIELDS = ("subject", "relation", "object")
MAX_NAME = 512  # characters in a subject, relation or object
FORMAT_VERSION = 1
ALIAS_RELATION = "alias"
TriplesFormat = Literal["csv", "jsonl", "nt", "ttl"]


@dataclass(frozen=True)
class Triple:
    """One fact; subject and object are entity *names* in their display form."""

    subject: str
    relation: str
    object: str


@dataclass
class TriplesFile:
    """What a triples file holds: its facts (``alias`` triples among them) and, from RDF labels,
    aliases (alias → the name it stands for)."""

    triples: list[Triple]
    aliases: dict[str, str] = field(default_factory=dict)


def format_of(path: Path, given: str | None = None) -> str:
    if given is not None:
        if given not in FORMATS:
            raise InvalidInput(f"unknown triples format {given!r} (use one of {', '.join(FORMATS)})")
        return given
    try:
        return SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise InvalidInput(f"{path}: cannot tell the triples format from {path.suffix or 'no suffix'!r}; "
                           f"name it .csv, .jsonl, .nt or .ttl, or pass --format") from None


def read_triples(path: str | os.PathLike[str], format: str | None = None) -> TriplesFile:
    """The triples of a CSV, JSON Lines, N-Triples or Turtle file (see the module docstring)."""
    path = Path(path).expanduser()
    fmt = format_of(path, format)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except OSError as e:
        raise InvalidInput(f"{path}: cannot read it ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InvalidInput(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
    out = READERS[fmt](path, text)
    if not out.triples:
        raise InvalidInput(f"{path}: holds no triples")
    return out


def _checked(path: Path, line: int, values: list[Any]) -> Triple:
    for name, value in zip(FIELDS, values, strict=True):
        if not isinstance(value, str):
            raise InvalidInput(f"{path}:{line}: {name} must be a string, not {type(value).__name__}")
        if not value.strip():
            raise InvalidInput(f"{path}:{line}: {name} is empty")
        if "\x00" in value:
            raise InvalidInput(f"{path}:{line}: {name} contains a NUL character")
        if len(value) > MAX_NAME:
            raise InvalidInput(f"{path}:{line}: {name} is longer than {MAX_NAME} characters")
    return Triple(*(" ".join(v.split()) for v in values))


def _read_csv(path: Path, text: str) -> TriplesFile:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    triples: list[Triple] = []
    header: list[str] | None = None
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                if header != list(FIELDS):
                    raise InvalidInput(f"{path}:{line}: the header must be subject,relation,object, "
                                       f"not {','.join(row)}")
                continue
            if len(row) != 3:
                raise InvalidInput(f"{path}:{line}: expected 3 fields (subject, relation, object), "
                                   f"found {len(row)}")
            triples.append(_checked(path, line, row))
    except csv.Error as e:
        raise InvalidInput(f"{path}:{reader.line_num}: {e}") from None
    return TriplesFile(triples)


def _read_jsonl(path: Path, text: str) -> TriplesFile:
    triples: list[Triple] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{path}:{line}: not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise InvalidInput(f"{path}:{line}: expected an object with subject, relation, object")
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise InvalidInput(f"{path}:{line}: no {missing[0]!r} (each line needs subject, "
                               "relation and object)")
        triples.append(_checked(path, line, [row[f] for f in FIELDS]))
    return TriplesFile(triples)


_LOCAL = re.compile(r"[^#/:]+$")
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
SKOS_ALT = "http://www.w3.org/2004/02/skos/core#altLabel"
SKOS_PREF = "http://www.w3.org/2004/02/skos/core#prefLabel"


def _local(term: Any) -> str:
    """An IRI's local name (after its last #, / or :, percent-decoded); a literal's text."""
    from rdflib import URIRef

    s = str(term)
    if isinstance(term, URIRef):
        m = _LOCAL.search(s.rstrip("/#"))
        s = urllib.parse.unquote(m.group() if m else s)
    return s


def _bad_nt_line(path: Path, text: str) -> tuple[int, str]:
    """The first N-Triples line rdflib refuses (the whole-file parser does not say which)."""
    from rdflib import Graph as RDFGraph

    for line, raw in enumerate(text.splitlines(), start=1):
        if raw.strip() and not raw.lstrip().startswith("#"):
            try:
                RDFGraph().parse(data=raw + "\n", format="nt")
            except Exception as e:  # rdflib's parsers raise several unrelated types
                why = str(e).strip().splitlines()[0][:200].rstrip(": ")
                return line, f"{why} (N-Triples: <subject> <predicate> <object or \"literal\"> .)"
    return 0, "cannot parse it"


def _read_rdf(path: Path, text: str, fmt: str) -> TriplesFile:
    from rdflib import Graph as RDFGraph
    from rdflib import Literal as RDFLiteral
    from rdflib import URIRef

    g = RDFGraph()
    try:
        g.parse(data=text, format="nt" if fmt == "nt" else "turtle")
    except Exception as e:  # noqa: BLE001 - rdflib raises BadSyntax, ParserError and others
        if fmt == "nt":
            line, why = _bad_nt_line(path, text)
        else:
            msg = str(e)
            m = re.search(r"at line (\d+)", msg)
            line = int(m.group(1)) if m else 0
            reason = re.search(r"Bad syntax \((.*?)\) at \^", msg, re.S)
            why = reason.group(1) if reason else msg.strip().splitlines()[-1][:200]
        raise InvalidInput(f"{path}:{line}: {why}" if line else f"{path}: {why}") from None
    # display names: a node's rdfs:label / skos:prefLabel (English or untagged first)
    labels: dict[str, list[tuple[int, str]]] = {}
    alt: list[tuple[str, str]] = []
    facts: list[tuple[str, str, str]] = []
    for s, p, o in sorted(g, key=lambda t: (str(t[0]), str(t[1]), str(t[2]))):
        key = str(s)
        if str(p) in (RDFS_LABEL, SKOS_PREF) and isinstance(o, RDFLiteral):
            rank = 0 if o.language in (None, "en") else 1
            labels.setdefault(key, []).append((rank + (str(p) == RDFS_LABEL), str(o)))
        elif str(p) == SKOS_ALT and isinstance(o, RDFLiteral):
            alt.append((key, str(o)))
        else:
            facts.append((key, str(p), str(o) if isinstance(o, RDFLiteral) else ("\0" + str(o))))
    terms: dict[str, Any] = {}
    for s, _, o in g:
        terms[str(s)] = s
        terms[str(o)] = o
    names: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for key, found in labels.items():
        found.sort()
        names[key] = " ".join(found[0][1].split())
        for _, other in found[1:]:
            aliases.setdefault(" ".join(other.split()), names[key])
    for key, name in names.items():
        local = _local(terms[key])
        if local != name:
            aliases.setdefault(local, name)

    def name_of(key: str) -> str:
        return names.get(key) or _local(terms[key])

    triples = [Triple(name_of(s), _local(URIRef(p)), o if not o.startswith("\0") else name_of(o[1:]))
               for s, p, o in facts]
    triples = [Triple(*(" ".join(x.split()) for x in (t.subject, t.relation, t.object)))
               for t in triples if t.subject.strip() and t.object.strip()]
    for key, label in alt:
        aliases.setdefault(" ".join(label.split()), name_of(key))
    aliases.pop("", None)
    return TriplesFile(triples, {a: e for a, e in aliases.items() if a != e})


READERS: dict[str, Callable[[Path, str], TriplesFile]] = {
    "csv": _read_csv,
    "jsonl": _read_jsonl,
    "nt": lambda path, text: _read_rdf(path, text, "nt"),
    "ttl": lambda path, text: _read_rdf(path, text, "ttl"),
}


def alias_map(triples: list[Triple], aliases: dict[str, str] | None = None) -> dict[str, str]:
    """Each alias → the entity at the end of its chain, from the ``alias`` triples (``(A, alias,
    B)``: B names A) and ``aliases`` (alias → entity). A chain that comes back to where it started
    and an alias naming two entities are one-line InvalidInputs."""
    direct: dict[str, str] = {}
    pairs = [*(aliases or {}).items(),
             *((t.object, t.subject) for t in triples if t.relation == ALIAS_RELATION)]
    for alias, entity in pairs:
        if alias == entity:
            continue
        if direct.get(alias, entity) != entity:
            raise InvalidInput(f"alias {alias!r} names both {direct[alias]!r} and {entity!r}")
        direct[alias] = entity
    out: dict[str, str] = {}
    for start in direct:
        chain = [start]
        node = start
        while node in direct:
            node = direct[node]
            if node in chain:
                cycle = " → ".join([*chain[chain.index(node):], node])
                raise InvalidInput(f"alias cycle: {cycle} (an alias must end at an entity)")
            chain.append(node)
        out[start] = node
    return out


def read_lexicon(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """A lexicon file: JSON (or YAML) mapping each relation to its phrasings,
    ``{"lives_in": ["{s} lives in {o}", "{s} is a resident of {o}"]}``."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such lexicon file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: cannot read it ({e})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - json and yaml errors alike
        raise InvalidInput(f"{path}: not a valid lexicon ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and v and all(isinstance(p, str) for p in v)
            for k, v in data.items()):
        raise InvalidInput(f"{path}: a lexicon maps each relation to a list of phrasings, e.g. "
                           '{"lives_in": ["{s} lives in {o}"]}')
    return data


# --- the data kind ----------------------------------------------------------------------------


class TriplesDataConfig(BaseModel):
    """A ``triples`` dataset: the facts of a file, stored content-hashed like every kind."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["triples"] = "triples"
    source: str = Field(description="a .csv, .jsonl, .nt or .ttl file of triples")
    format: TriplesFormat | None = Field(None, description="the file's format; default: its suffix")
    lexicon: str | None = Field(None, description="a JSON/YAML file: relation → phrasings")
    name: str | None = Field(None, pattern=r"^\w[\w.-]{0,99}$",
                             description="dataset name; defaults to the file's stem")

    def prepare(self, progress: Callable[[str], None] | None = None) -> TriplesDataset:
        say = progress or (lambda _msg: None)
        path = Path(self.source).expanduser()
        say(f"reading {path}")
        data = read_triples(path, self.format)
        lexicon = read_lexicon(self.lexicon) if self.lexicon else {}
        try:
            alias_map(data.triples, data.aliases)
        except InvalidInput as e:
            raise InvalidInput(f"{path}: {e}") from None
        h = hashlib.sha256()
        h.update(json.dumps({"format": FORMAT_VERSION, "kind": "triples", "lexicon": lexicon,
                             "triples": sorted([t.subject, t.relation, t.object] for t in data.triples),
                             "aliases": sorted(data.aliases.items())},
                            ensure_ascii=False).encode("utf-8"))
        digest = h.hexdigest()
        name = self.name or (re.sub(r"[^\w.-]", "-", path.stem).lstrip(".-") or "triples")
        if (done := stored(name, digest)) is not None:
            say(f"reusing {done.path}")
            return TriplesDataset.from_folder(done)
        arrays = {
            "subjects": np.array([t.subject for t in data.triples], dtype=np.str_),
            "relations": np.array([t.relation for t in data.triples], dtype=np.str_),
            "objects": np.array([t.object for t in data.triples], dtype=np.str_),
            "alias_names": np.array(list(data.aliases), dtype=np.str_).reshape(-1),
            "alias_entities": np.array(list(data.aliases.values()), dtype=np.str_).reshape(-1),
        }
        meta = {"format": FORMAT_VERSION, "kind": "triples", "name": name, "hash": digest,
                "source": self.source, "config": self.model_dump() | {"name": name},
                "lexicon": lexicon, "counts": {"triples": len(data.triples),
                                               "aliases": len(data.aliases)}}
        say(f"writing {name}/{digest[:16]}")
        return TriplesDataset.from_folder(write_folder(meta, arrays))


@dataclass
class TriplesDataset:
    name: str
    hash: str
    path: Path
    triples: list[Triple]
    aliases: dict[str, str]
    lexicon: dict[str, list[str]]
    meta: dict[str, Any]

    @classmethod
    def from_folder(cls, folder: Folder) -> TriplesDataset:
        a = folder.arrays
        triples = [Triple(str(s), str(r), str(o))
                   for s, r, o in zip(a["subjects"], a["relations"], a["objects"], strict=True)]
        aliases = {str(k): str(v) for k, v in zip(a["alias_names"], a["alias_entities"], strict=True)}
        return cls(folder.name, folder.hash, folder.path, triples, aliases,
                   dict(folder.meta.get("lexicon") or {}), folder.meta)


def load_triples_dataset(path: str | os.PathLike[str]) -> TriplesDataset:
    return TriplesDataset.from_folder(read_folder(path, "triples"))
