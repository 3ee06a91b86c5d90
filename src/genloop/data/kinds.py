"""Every data kind by name: the data layer's piece of each kind.

A kind is one name — ``text``, ``images``, ``image_text``, ``pairs``, ``preferences``,
``triples`` — with one piece in each layer that needs it, each layer finding its piece through
a registry keyed by the name: its dataset (here: the recipe's data section and the reader of its
stored folder), its batches (``training/batches.py``), its evaluation (``evaluation/kinds.py``), its requests
(``generation/kinds.py``). Families say which kinds they train on (``Family.kinds``).

Adding a kind: its data file in ``data/`` and one line here, then one piece and one line in each
other layer it reaches.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from genloop.data.image_text import ImageTextDataConfig, load_image_text_dataset
from genloop.data.images import ImageDataConfig, load_image_dataset
from genloop.data.pairs import PairsDataConfig, load_pairs_dataset
from genloop.data.preferences import PreferencesDataConfig, load_preferences_dataset
from genloop.data.text import TextDataConfig, load_text_dataset
from genloop.data.triples import TriplesDataConfig, load_triples_dataset
from genloop.errors import RecipeError


@dataclass(frozen=True)
class DataKind:
    name: str
    config: type[BaseModel]  # the recipe's data section; its ``prepare(progress)`` stores a dataset
    load: Callable[[str | os.PathLike[str]], Any]  # a stored folder → the kind's dataset
    holds: str  # what a dataset of this kind is, for messages and model cards


KINDS: dict[str, DataKind] = {
    "text": DataKind("text", TextDataConfig, load_text_dataset, "a text corpus"),
    "images": DataKind("images", ImageDataConfig, load_image_dataset, "images with class labels"),
    "image_text": DataKind("image_text", ImageTextDataConfig, load_image_text_dataset,
                           "images with a caption each"),
    "pairs": DataKind("pairs", PairsDataConfig, load_pairs_dataset, "prompt → completion pairs"),
    "preferences": DataKind("preferences", PreferencesDataConfig, load_preferences_dataset,
                            "preferred and rejected completions of prompts"),
    "triples": DataKind("triples", TriplesDataConfig, load_triples_dataset, "a knowledge graph's facts"),
}


def get_kind(name: str) -> DataKind:
    try:
        return KINDS[name]
    except KeyError:
        raise RecipeError(f"unknown data kind {name!r} (known: {', '.join(sorted(KINDS))})") from None


def kind_of(section: Any) -> str:
    """A data (or eval) section's kind: its ``kind`` key, default ``text``."""
    if isinstance(section, dict):
        return str(section.get("kind", "text"))
    return str(getattr(section, "kind", "text"))
