"""The ``shapes`` built-in: coloured shapes on a black canvas, each with a caption.

Circles, squares, triangles, diamonds and crosses in eight colours and three sizes, placed anywhere
on a 32x32 RGB canvas, drawn with PIL from a fixed seed (10,000 train + 1,000 test, about a
second). Each image's caption, such as "a small red circle at the top left", is read off the
geometry it was drawn with, so captions are exact. A shape is drawn at twice the size and
box-downsampled for smooth edges. ``draw_shapes`` is a pure function of its seed: the same seed
gives the same bytes, so the prepared dataset's hash is stable.
"""

from __future__ import annotations

import random

import numpy as np

SHAPE_NAMES = ("circle", "square", "triangle", "diamond", "cross")
_COLOURS = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40),
    "magenta": (220, 50, 220), "cyan": (40, 220, 230), "orange": (250, 140, 20), "white": (245, 245, 245),
}
_SIZES = {"small": (3.0, 4.5), "medium": (5.0, 7.0), "large": (8.0, 10.0)}  # radius in 32-px units
_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "centre", "right")
SHAPES_TRAIN, SHAPES_TEST, SHAPES_SEED = 10_000, 1_000, 20_240_917


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


def _where(cx: float, cy: float, side: float) -> str:
    row, col = _ROWS[min(int(cy * 3 / side), 2)], _COLS[min(int(cx * 3 / side), 2)]
    if row == "middle":
        return "in the centre" if col == "centre" else f"on the {col}"
    return f"at the {row}" if col == "centre" else f"at the {row} {col}"


def draw_shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` shape images (n, 32, 32, 3) uint8, their labels (index into the shape names) and
    captions, a pure function of ``seed``. Drawn at 2x and box-downsampled for smooth edges."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    side, scale = 32, 2
    images = np.empty((n, side, side, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    captions = []
    colour_names, size_names = list(_COLOURS), list(_SIZES)
    for i in range(n):
        label = rng.randrange(len(SHAPE_NAMES))
        colour, size = rng.choice(colour_names), rng.choice(size_names)
        r = rng.uniform(*_SIZES[size])
        cx, cy = rng.uniform(r, side - r), rng.uniform(r, side - r)
        canvas = Image.new("RGB", (side * scale, side * scale))
        _draw_shape(ImageDraw.Draw(canvas), SHAPE_NAMES[label], cx * scale, cy * scale, r * scale,
                    _COLOURS[colour])
        images[i] = np.asarray(canvas.resize((side, side), Image.Resampling.BOX))
        labels[i] = label
        captions.append(f"a {size} {colour} {SHAPE_NAMES[label]} {_where(cx, cy, side)}")
    return images, labels, captions


__all__ = ["SHAPES_SEED", "SHAPES_TEST", "SHAPES_TRAIN", "SHAPE_NAMES", "draw_shapes"]
