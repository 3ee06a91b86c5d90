"""The ``shapes`` and ``shapes-pairs`` built-ins: coloured shapes on a black canvas, each with a caption.

``shapes``: one circle, square, triangle, diamond or cross in one of eight colours and three sizes,
placed anywhere on a 32x32 RGB canvas, drawn with PIL from a fixed seed (about a second). Each
image's caption, such as "a small red circle at the top left", is read off the geometry it was
drawn with, so captions are exact. ``shapes-pairs``: two objects (shape and colour each, one size,
radius 4.5–6.5 px) and a relation, "a red circle left of a blue square": the first object lies on
the relation's side of the second, clear of it by at least 2 px, and within a third of their
distance across it, so the relation holds plainly and they never overlap. A shape is drawn at
twice the size and box-downsampled for smooth edges. Drawing is a pure function of the seed: the
same seed gives the same bytes, so the prepared dataset's hash is stable.

The scenes in words (captions, reference phrasings, paraphrases, ``parse``, the attribute schema)
are ``data/scenes.py``, re-exported here. Splits hold out compositions (``scenes.heldout``: 8
colour × shape pairs of ``shapes``; the shape pairs {circle, square}, {triangle, diamond} and
{cross, cross} of ``shapes-pairs``): train is the first 10,000 draws of the seed less the held-out
ones (about 8,000), test is 1,000 draws of the next seed, half seen and half held out.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from genloop.data import scenes
from genloop.data.scenes import *  # noqa: F403 - the scene model, re-exported
from genloop.data.scenes import (
    COLOURS,
    COLS,
    RELATIONS,
    ROWS,
    SHAPE_NAMES,
    SIZES,
    Obj,
    Scene,
    caption,
    heldout,
    single,
)

T = TypeVar("T")
_COLOURS = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40),
    "magenta": (220, 50, 220), "cyan": (40, 220, 230), "orange": (250, 140, 20), "white": (245, 245, 245),
}
_SIZES = {"small": (3.0, 4.5), "medium": (5.0, 7.0), "large": (8.0, 10.0)}  # radius in 32-px units
_PAIR_RADIUS = (4.5, 6.5)
SHAPES_TRAIN, SHAPES_TEST, SHAPES_SEED = 10_000, 1_000, 20_240_917
PAIRS_SEED = 20_250_301
PAIR_CLASS_NAMES = ("side by side", "one above the other")


def _draw_shape(draw, shape: str, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        s = r * 0.85  # a square's corners reach further than a circle of the same radius
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=colour)
    elif shape == "triangle":
        corners = [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
        draw.polygon(corners, fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    else:  # cross
        w = r * 0.35
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)


def _cell(cx: float, cy: float, side: float) -> tuple[str, str]:
    return ROWS[min(int(cy * 3 / side), 2)], COLS[min(int(cx * 3 / side), 2)]


def _single_draws(rng: random.Random, side: int) -> tuple[Scene, float, float, float]:
    """The next single scene of ``rng`` and where it goes (centre, radius); the draws (and their
    order) are those ``shapes`` has always made, so the images and captions stay the same."""
    label = rng.randrange(len(SHAPE_NAMES))
    colour, size = rng.choice(COLOURS), rng.choice(SIZES)
    r = rng.uniform(*_SIZES[size])
    cx, cy = rng.uniform(r, side - r), rng.uniform(r, side - r)
    return single(SHAPE_NAMES[label], colour, size, *_cell(cx, cy, side)), cx, cy, r


def _pair_draws(rng: random.Random, side: int) -> tuple[Scene, list[tuple[float, float, float]]]:
    """The next pair scene of ``rng`` and its two objects' (centre x, centre y, radius): the
    first object is on the relation's side of the second, their boxes apart by at least 2 px
    along it and their centres within a third of that distance across it."""
    while True:
        a = Obj(rng.choice(SHAPE_NAMES), rng.choice(COLOURS))
        b = Obj(rng.choice(SHAPE_NAMES), rng.choice(COLOURS))
        if a != b:  # two equal objects would make "left of" and "right of" the same picture
            break
    relation = rng.choice(RELATIONS)
    r1, r2 = rng.uniform(*_PAIR_RADIUS), rng.uniform(*_PAIR_RADIUS)
    gap = rng.uniform(r1 + r2 + 2, side - r1 - r2)  # centre distance along the relation
    first = rng.uniform(r1, side - r2 - gap)  # the first object's coordinate along it
    across1 = rng.uniform(r1, side - r1)
    lo, hi = max(r2, across1 - gap / 3), min(side - r2, across1 + gap / 3)
    across2 = rng.uniform(lo, hi)
    # "left of"/"above": the first object has the smaller coordinate; otherwise the larger.
    along1, along2 = (first, first + gap) if relation in ("left of", "above") else (first + gap, first)
    if relation in ("left of", "right of"):
        places = [(along1, across1, r1), (along2, across2, r2)]
    else:
        places = [(across1, along1, r1), (across2, along2, r2)]
    return Scene((a, b), relation), places


def _render(objects: list[tuple[str, str, float, float, float]], side: int = 32,
            scale: int = 2) -> np.ndarray:
    """(side, side, 3) uint8 of (shape, colour, cx, cy, r) objects, drawn at ``scale`` x and
    box-downsampled."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (side * scale, side * scale))
    draw = ImageDraw.Draw(canvas)
    for shape, colour, cx, cy, r in objects:
        _draw_shape(draw, shape, cx * scale, cy * scale, r * scale, _COLOURS[colour])
    return np.asarray(canvas.resize((side, side), Image.Resampling.BOX))


def draw_shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` shape images (n, 32, 32, 3) uint8, their labels (index into the shape names) and
    captions, a pure function of ``seed``. Drawn at 2x and box-downsampled for smooth edges."""
    rng = random.Random(seed)
    drawn = [_single_draws(rng, 32) for _ in range(n)]
    return _singles(drawn)


def _singles(drawn: list[tuple[Scene, float, float, float]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images = np.empty((len(drawn), 32, 32, 3), dtype=np.uint8)
    labels = np.empty(len(drawn), dtype=np.int64)
    for i, (scene, cx, cy, r) in enumerate(drawn):
        o = scene.objects[0]
        images[i] = _render([(o.shape, o.colour, cx, cy, r)])
        labels[i] = SHAPE_NAMES.index(o.shape)
    return images, labels, [caption(s) for s, *_ in drawn]


def _pairs(drawn: list[tuple[Scene, list[tuple[float, float, float]]]]
           ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images = np.empty((len(drawn), 32, 32, 3), dtype=np.uint8)
    labels = np.empty(len(drawn), dtype=np.int64)
    for i, (scene, places) in enumerate(drawn):
        images[i] = _render([(o.shape, o.colour, *p) for o, p in zip(scene.objects, places, strict=True)])
        labels[i] = 0 if scene.relation in ("left of", "right of") else 1
    return images, labels, [caption(s) for s, _ in drawn]


def _split(draw: Callable[[random.Random, int], T], scene: Callable[[T], Scene], seed: int,
           split: str) -> list[T]:
    """The draws of one split: train keeps the first ``SHAPES_TRAIN`` draws of ``seed`` that are
    not held out; test takes draws of ``seed + 1`` in order until it has ``SHAPES_TEST / 2`` seen
    and as many held-out ones."""
    if split == "train":
        rng = random.Random(seed)
        return [d for d in (draw(rng, 32) for _ in range(SHAPES_TRAIN)) if not heldout(scene(d))]
    rng, half = random.Random(seed + 1), SHAPES_TEST // 2
    kept: list[T] = []
    counts = [0, 0]
    while len(kept) < SHAPES_TEST:
        d = draw(rng, 32)
        h = int(heldout(scene(d)))
        if counts[h] < half:
            counts[h] += 1
            kept.append(d)
    return kept


def shapes_split(split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The ``shapes`` built-in's ``split`` ("train" or "test"): images, labels (the shape) and
    canonical captions. Train: the draws of ``SHAPES_SEED`` without the held-out compositions
    (about 8,000 of 10,000); test: 1,000 draws of ``SHAPES_SEED + 1``, half of them held out."""
    return _singles(_split(_single_draws, lambda d: d[0], SHAPES_SEED, split))


def pairs_split(split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The ``shapes-pairs`` built-in's ``split``: images, labels (0 side by side, 1 one above the
    other: ``PAIR_CLASS_NAMES``) and canonical captions, split as ``shapes_split`` is."""
    return _pairs(_split(_pair_draws, lambda d: d[0], PAIRS_SEED, split))


__all__ = ["PAIRS_SEED", "PAIR_CLASS_NAMES", "SHAPES_SEED", "SHAPES_TEST", "SHAPES_TRAIN",
           "SHAPE_NAMES", "draw_shapes", "pairs_split", "shapes_split", *scenes.__all__]
