"""The ``triples`` kind: a knowledge graph as (subject, relation, object) facts.

    subject,relation,object                       (CSV, with this header)
    Alice Varn,lives_in,Tolmeria
    {"subject": "Alice Varn", "relation": "alias", "object": "Ali"}     (JSON Lines)

N-Triples (``.nt``) and Turtle (``.ttl``) are read with rdflib.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Triple:
    """One fact; subject and object are entity *names* in their display form."""

    subject: str
    relation: str
    object: str
