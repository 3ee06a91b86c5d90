"""The generation layer's piece of each data kind: what a model trained on it is asked for.

A family generates from the first kind it trains on (``Family.kinds[0]``): a model of ``text``,
``pairs`` or ``preferences`` takes a ``TextRequest`` and answers with text (the completion
routes, the chat template, the studio's text page); one of ``images`` or ``image_text`` takes an
``ImageGenRequest`` and answers with images. A family that reads an image
(``conditioning="image"``, a captioner) takes a ``CaptionGenRequest`` and answers with text, its
captions, whatever kind it trains on. A new kind adds one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from genloop.errors import RecipeError
from genloop.generation.caption import CaptionGenRequest
from genloop.generation.image import ImageGenRequest
from genloop.generation.text import TextRequest
from genloop.models.family import Family


@dataclass(frozen=True)
class Generates:
    request: type[BaseModel]  # the typed request every face validates
    output: Literal["text", "image"]  # what the faces show (API routes, studio page)
    chat: bool  # whether chat messages can be rendered into its prompt


TEXT = Generates(TextRequest, "text", chat=True)
IMAGES = Generates(ImageGenRequest, "image", chat=False)
CAPTIONS = Generates(CaptionGenRequest, "text", chat=False)  # image in, text out

GENERATES: dict[str, Generates] = {
    "text": TEXT,
    "pairs": TEXT,
    "preferences": TEXT,
    "images": IMAGES,
    "image_text": IMAGES,
}


def generates(family: Family) -> Generates:
    """What ``family``'s models generate: captions when it reads images, else by the first kind
    it trains on."""
    if family.conditioning == "image":
        return CAPTIONS
    try:
        return GENERATES[family.kinds[0]]
    except (KeyError, IndexError):
        raise RecipeError(f"model family {family.name!r} trains on {family.kinds}: no kind "
                          "there says what it generates (generation/kinds.py)") from None
