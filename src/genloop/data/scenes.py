"""The world of ``shapes`` and ``shapes-pairs`` in words: scenes, their attributes and phrasings.

A **scene** is what an image shows, known exactly because the image is drawn from it
(``data/shapes.py``): one object (``shapes``: shape, colour, size and one of nine positions) or two
objects and a relation (``shapes-pairs``: each a shape and a colour, one size, the first "left of",
"right of", "above" or "below" the second). This module turns scenes into words and words back
into scenes:

- ``caption(scene)``: the canonical caption, the one training uses ("a small red circle at the top
  left", "a red circle left of a blue square");
- ``references(scene)``: six phrasings, the canonical first: the references BLEU and CIDEr score a
  caption against, and the ``shapes-captions`` masked-LM corpus;
- ``paraphrases(scene)``: three more phrasings that no training text ever uses (some of their words
  are in no training caption: "little", "upper", "circular", "positioned" ...): the unseen prompts
  of the encoder ablation;
- ``parse(text)``: any of those phrasings back to its scene (case-insensitive, punctuation and a
  trailing period ignored), None when the text names no complete scene. It scores prompts and
  generated captions alike.

Attributes. ``SINGLE_ATTRIBUTES`` = shape, colour, size, position; ``PAIR_ATTRIBUTES`` = shape1,
colour1, relation, shape2, colour2; ``schema(kind)`` lists their values and ``attribute_ids(scene)``
gives the value index of each. A pair has two descriptions ("a red circle left of a blue square" is
"a blue square right of a red circle"), so a pair's ids are those of its **canonical** form
(``canonical``: "right of" and "below" turned round into "left of" and "above"): the ids say what
the image shows, whichever way it was phrased, and two phrasings of one picture get the same ids.

Held-out compositions (never drawn in training, half of each test split; ``heldout(scene)``):

- single: 8 of the 40 colour × shape combinations, each shape one or two colours and each colour
  once: green and magenta circles, red and cyan squares, blue and white triangles, yellow
  diamonds, orange crosses (every size and position);
- pairs: the scenes whose two shapes are {circle, square}, {triangle, diamond} or {cross, cross}
  (5 of the 25 ordered shape pairs; closed under swapping, so no held-out picture is in training
  under its other description), in every colour and relation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SHAPE_NAMES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white")
SIZES = ("small", "medium", "large")
ROWS, COLS = ("top", "middle", "bottom"), ("left", "centre", "right")
RELATIONS = ("left of", "right of", "above", "below")
POSITIONS = ("at the top left", "at the top", "at the top right", "on the left", "in the centre",
             "on the right", "at the bottom left", "at the bottom", "at the bottom right")
SINGLE_ATTRIBUTES = ("shape", "colour", "size", "position")
PAIR_ATTRIBUTES = ("shape1", "colour1", "relation", "shape2", "colour2")
PAIR_SIZE = "medium"  # every object of a pair scene is drawn at one size

HELDOUT_SINGLE = frozenset({("circle", "green"), ("circle", "magenta"), ("square", "red"),
                            ("square", "cyan"), ("triangle", "blue"), ("triangle", "white"),
                            ("diamond", "yellow"), ("cross", "orange")})
HELDOUT_PAIRS = frozenset({frozenset({"circle", "square"}), frozenset({"triangle", "diamond"}),
                           frozenset({"cross"})})

SceneKind = Literal["single", "pairs"]


@dataclass(frozen=True)
class Obj:
    """One drawn object. ``row``/``col`` (a grid cell of the canvas) place a single scene's
    object; a pair's objects have none (their relation places them) and the pair ``size``."""

    shape: str
    colour: str
    size: str = PAIR_SIZE
    row: str | None = None
    col: str | None = None

    def __post_init__(self) -> None:
        for value, allowed, what in ((self.shape, SHAPE_NAMES, "shape"), (self.colour, COLOURS, "colour"),
                                     (self.size, SIZES, "size")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; one of {', '.join(allowed)}")
        if (self.row is None) != (self.col is None) or (self.row is not None and (
                self.row not in ROWS or self.col not in COLS)):
            raise ValueError(f"an object's place is a row of {ROWS} and a column of {COLS}, or none")

    @property
    def position(self) -> str:
        """The canonical position phrase ("at the top left", "in the centre", ...)."""
        if self.row is None or self.col is None:
            raise ValueError("a pair's object has no position of its own")
        return POSITIONS[ROWS.index(self.row) * 3 + COLS.index(self.col)]


@dataclass(frozen=True)
class Scene:
    """What one image shows: one placed object (relation None) or two and a relation."""

    objects: tuple[Obj, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        if self.relation is None:
            if len(self.objects) != 1 or self.objects[0].row is None:
                raise ValueError("a single scene is one object with a position")
        elif self.relation not in RELATIONS or len(self.objects) != 2:
            raise ValueError(f"a pair scene is two objects and a relation of {', '.join(RELATIONS)}")

    @property
    def kind(self) -> SceneKind:
        return "single" if self.relation is None else "pairs"


def single(shape: str, colour: str, size: str, row: str, col: str) -> Scene:
    return Scene((Obj(shape, colour, size, row, col),))


def pair(shape1: str, colour1: str, relation: str, shape2: str, colour2: str) -> Scene:
    return Scene((Obj(shape1, colour1), Obj(shape2, colour2)), relation)


_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def swapped(scene: Scene) -> Scene:
    """The other description of a pair: its second object first, the relation turned round."""
    a, b = scene.objects
    assert scene.relation is not None, "only a pair has another description"
    return Scene((b, a), _INVERSE[scene.relation])


def canonical(scene: Scene) -> Scene:
    """A pair described with "left of" or "above" (its first object left of or above the second);
    a single scene as it is. Two descriptions of one picture have one canonical form."""
    return swapped(scene) if scene.relation in ("right of", "below") else scene


def heldout(scene: Scene) -> bool:
    """Whether ``scene`` is a held-out composition (never drawn in training)."""
    if scene.relation is None:
        o = scene.objects[0]
        return (o.shape, o.colour) in HELDOUT_SINGLE
    return frozenset(o.shape for o in scene.objects) in HELDOUT_PAIRS


# --- attributes --------------------------------------------------------------------------------


def schema(kind: str) -> dict:
    """The attributes of a scene kind ("single" or "pairs"; the source names "shapes" and
    "shapes-pairs" too): their names and each one's values, in id order."""
    if kind in ("single", "shapes"):
        return {"kind": "single", "names": list(SINGLE_ATTRIBUTES),
                "values": [list(SHAPE_NAMES), list(COLOURS), list(SIZES), list(POSITIONS)]}
    if kind in ("pairs", "shapes-pairs"):
        return {"kind": "pairs", "names": list(PAIR_ATTRIBUTES),
                "values": [list(SHAPE_NAMES), list(COLOURS), list(RELATIONS), list(SHAPE_NAMES),
                           list(COLOURS)]}
    raise ValueError(f"unknown scene kind {kind!r}; 'single' or 'pairs'")


def attribute_ids(scene: Scene) -> list[int]:
    """The value index of each attribute (``schema(scene.kind)``); a pair's of its canonical form."""
    if scene.relation is None:
        o = scene.objects[0]
        return [SHAPE_NAMES.index(o.shape), COLOURS.index(o.colour), SIZES.index(o.size),
                POSITIONS.index(o.position)]
    c = canonical(scene)
    a, b = c.objects
    assert c.relation is not None
    return [SHAPE_NAMES.index(a.shape), COLOURS.index(a.colour), RELATIONS.index(c.relation),
            SHAPE_NAMES.index(b.shape), COLOURS.index(b.colour)]


def scene_from_ids(kind: str, ids: list[int]) -> Scene:
    """The scene whose attribute ids are ``ids`` (a recogniser's reading of an image)."""
    values = schema(kind)["values"]
    if len(ids) != len(values) or any(not 0 <= int(i) < len(v) for i, v in zip(ids, values, strict=False)):
        raise ValueError(f"attribute ids {list(ids)} do not fit the {kind} schema")
    names = [v[int(i)] for i, v in zip(ids, values, strict=True)]
    if schema(kind)["kind"] == "single":
        p = POSITIONS.index(names[3])
        return single(names[0], names[1], names[2], ROWS[p // 3], COLS[p % 3])
    return pair(*names)


# --- phrasings ---------------------------------------------------------------------------------

# Per position (POSITIONS order): a second reference phrasing, and two paraphrase phrasings.
_POS_ALT = ("in the top left", "at the top centre", "in the top right", "on the left side",
            "in the middle", "on the right side", "in the bottom left", "at the bottom centre",
            "in the bottom right")
_POS_PARA = ("in the upper left corner", "near the upper edge", "in the upper right corner",
             "along the left side", "in the center", "along the right side",
             "in the lower left corner", "near the lower edge", "in the lower right corner")
_POS_SHORT = ("top left", "top", "top right", "left", "middle", "right", "bottom left", "bottom",
              "bottom right")
_SIZE_PARA = {"small": "little", "medium": "medium-sized", "large": "big"}
_SHAPE_ADJ = {"circle": "circular", "square": "square", "triangle": "triangular",
              "diamond": "diamond-shaped", "cross": "cross-shaped"}
_REL_ALT = {"left of": "to the left of", "right of": "to the right of", "above": "just above",
            "below": "just below"}
_REL_PARA = {"left of": "on the left of", "right of": "on the right of", "above": "over",
             "below": "under"}
_REL_PARA2 = {"left of": "on the left of", "right of": "on the right of", "above": "high above",
              "below": "beneath"}


def _thing(o: Obj, article: str = "a") -> str:
    if article == "a" and o.colour[0] in "aeiou":
        article = "an"
    return f"{article} {o.colour} {o.shape}"


def caption(scene: Scene) -> str:
    """The canonical caption: what training uses and what a captioner learns to say."""
    if scene.relation is None:
        o = scene.objects[0]
        return f"a {o.size} {o.colour} {o.shape} {o.position}"
    a, b = scene.objects
    return f"{_thing(a)} {scene.relation} {_thing(b)}"


def references(scene: Scene) -> list[str]:
    """Six phrasings of ``scene``, the canonical caption first (BLEU / CIDEr references)."""
    if scene.relation is None:
        o = scene.objects[0]
        p = POSITIONS.index(o.position)
        sized = f"{o.size} {o.colour} {o.shape}"
        return [caption(scene), f"there is a {sized} {o.position}", f"a {sized} {_POS_ALT[p]}",
                f"a {o.colour} {o.shape}, {o.size}, {o.position}", f"{o.position}, a {sized}",
                f"the picture shows a {sized} {o.position}"]
    a, b = scene.objects
    r = scene.relation
    s = swapped(scene)
    return [caption(scene), f"{_thing(a)} {_REL_ALT[r]} {_thing(b)}",
            f"there is {_thing(a)} {r} {_thing(b)}", f"{_thing(a, 'the')} is {r} {_thing(b, 'the')}",
            caption(s), f"{_thing(s.objects[0])} {_REL_ALT[_INVERSE[r]]} {_thing(s.objects[1])}"]


def paraphrases(scene: Scene) -> list[str]:
    """Three phrasings of ``scene`` that no training text uses (unseen prompts)."""
    if scene.relation is None:
        o = scene.objects[0]
        p = POSITIONS.index(o.position)
        return [f"i see a {_SIZE_PARA[o.size]} {o.colour} {o.shape} {_POS_PARA[p]}",
                f"{o.size}, {o.colour}, {_SHAPE_ADJ[o.shape]}: {_POS_SHORT[p]}",
                f"a {o.colour} {o.shape} of {o.size} size, {_POS_PARA[p]}"]
    a, b = scene.objects
    r = scene.relation
    s = swapped(scene)
    return [f"you can see {_thing(a)} positioned {_REL_PARA[r]} {_thing(b)}",
            f"{_thing(s.objects[0])} sits {_REL_PARA2[_INVERSE[r]]} {_thing(s.objects[1])}",
            f"{_thing(a, 'one')} placed {_REL_PARA2[r]} {_thing(b, 'one')}"]


# --- parsing -----------------------------------------------------------------------------------

_SHAPE_WORDS = {**{s: s for s in SHAPE_NAMES}, "circular": "circle", "triangular": "triangle",
                "squares": "square", "circles": "circle", "triangles": "triangle",
                "diamonds": "diamond", "crosses": "cross"}
_COLOUR_WORDS = {c: c for c in COLOURS}
_SIZE_WORDS = {"small": "small", "little": "small", "medium": "medium", "large": "large",
               "big": "large"}
_ROW_WORDS = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_COL_WORDS = {"left": "left", "right": "right"}
_PLACE_WORDS = {"top", "upper", "bottom", "lower", "left", "right", "centre", "center", "middle"}
_RELATION = re.compile(r"\b(left|right) of\b|\b(above|over)\b|\b(below|under|underneath|beneath)\b")
_WORD = re.compile(r"[a-z]+")


def _one(words: list[str], table: dict[str, str]) -> str | None:
    """The one value ``words`` name from ``table``, or None (none, or two different ones)."""
    found = {table[w] for w in words if w in table}
    return found.pop() if len(found) == 1 else None


def _object(words: list[str]) -> Obj | None:
    shape, colour = _one(words, _SHAPE_WORDS), _one(words, _COLOUR_WORDS)
    return None if shape is None or colour is None else Obj(shape, colour)


def parse(text: str) -> Scene | None:
    """The scene ``text`` describes, in any phrasing of ``caption`` / ``references`` /
    ``paraphrases`` (or close to them); None when it names no complete, unambiguous scene."""
    t = text.strip().lower()
    relations = list(_RELATION.finditer(t))
    if len(relations) > 1:
        return None
    if relations:
        m = relations[0]
        relation = (f"{m.group(1)} of" if m.group(1) else "above" if m.group(2) else "below")
        a, b = _object(_WORD.findall(t[: m.start()])), _object(_WORD.findall(t[m.end():]))
        if a is None or b is None or a == b:
            return None
        return Scene((a, b), relation)
    words = _WORD.findall(t)
    shape, colour, size = _one(words, _SHAPE_WORDS), _one(words, _COLOUR_WORDS), _one(words, _SIZE_WORDS)
    if shape is None or colour is None or size is None or not _PLACE_WORDS & set(words):
        return None
    if sum(w in _SHAPE_WORDS for w in words) > 1 or sum(w in _COLOUR_WORDS for w in words) > 1:
        return None  # two objects named without a relation
    rows = {_ROW_WORDS[w] for w in words if w in _ROW_WORDS}
    cols = {_COL_WORDS[w] for w in words if w in _COL_WORDS}
    if len(rows) > 1 or len(cols) > 1:
        return None
    return single(shape, colour, size, rows.pop() if rows else "middle", cols.pop() if cols else "centre")


def same(a: Scene | None, b: Scene | None) -> bool:
    """Whether two (parsed) scenes show one picture: equal attributes, whatever the phrasing."""
    return a is not None and b is not None and a.kind == b.kind and attribute_ids(a) == attribute_ids(b)


__all__ = ["COLOURS", "COLS", "HELDOUT_PAIRS", "HELDOUT_SINGLE", "PAIR_ATTRIBUTES", "PAIR_SIZE",
           "POSITIONS", "RELATIONS", "ROWS", "SHAPE_NAMES", "SINGLE_ATTRIBUTES", "SIZES", "Obj",
           "Scene", "SceneKind", "attribute_ids", "canonical", "caption", "heldout", "pair",
           "paraphrases", "parse", "references", "same", "scene_from_ids", "schema",
           "single", "swapped"]
