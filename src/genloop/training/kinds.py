"""The training layer's piece of each data kind: its batches, by the kind's name.

Every batches class gives the loop the same few things: the shape fields it fills into the model
config (``fill``), a ``check`` of the data against the config, the unit throughput is counted in,
a training batch that is a pure function of (seed, step, micro-batch, rank), a fixed set of
validation batches, and the objective a recipe trains with when it names none
(``default_objective``). A new kind adds its batches file and one line here.
"""

from __future__ import annotations

from typing import Any, Protocol

from genloop.errors import RecipeError
from genloop.training.batches import ImageBatches, ImageTextBatches, TextBatches
from genloop.training.pair_batches import PairBatches
from genloop.training.preference_batches import PreferenceBatches


class BatchesClass(Protocol):
    """What the loop reads off a batches class (the class itself, not an instance)."""

    default_objective: str

    def __call__(self, dataset: Any) -> Any: ...


BATCHES: dict[str, BatchesClass] = {
    "text": TextBatches,
    "images": ImageBatches,
    "image_text": ImageTextBatches,
    "pairs": PairBatches,
    "preferences": PreferenceBatches,
}


def batches_for(kind: str, dataset: Any) -> Any:
    """The batches of ``dataset``, a dataset of kind ``kind``."""
    return _batches(kind)(dataset)


def default_objective(kind: str) -> str:
    """The objective a recipe on ``kind`` data trains with when it names none."""
    return _batches(kind).default_objective


def _batches(kind: str) -> BatchesClass:
    try:
        return BATCHES[kind]
    except KeyError:
        raise RecipeError(f"data kind {kind!r} has no batches for training "
                          f"(known: {', '.join(sorted(BATCHES))})") from None
