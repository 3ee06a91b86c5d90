"""The evaluation layer's piece of each data kind: the recipe's eval section and the final
evaluation the loop runs on a trained model, by the kind's name.

Every evaluation is ``evaluate(family, model, model_config, dataset, config, *, seed, context)
-> (metrics, samples)``; ``context`` carries what only the loop has (``EvalContext``). A new kind
adds its evaluation file and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from genloop.errors import RecipeError
from genloop.evaluation import image, image_text, pairs, preferences, text


@dataclass
class EvalContext:
    """What an evaluation may need from the run: where to write pictures, the precision of
    sampling, and (image kinds) the feature extractor, trained on first use."""

    run_dir: Path
    bf16: bool = False
    extractor: Callable[[], torch.nn.Module | None] = lambda: None
    # image_text kinds with an attribute schema: the recogniser, trained on first use
    recogniser: Callable[[], torch.nn.Module | None] = lambda: None
    grid: Path | None = None  # set by evaluations that draw a grid of samples


@dataclass(frozen=True)
class Evaluation:
    config: type[BaseModel]  # the recipe's eval section for this kind (its ``kind`` names it)
    evaluate: Callable[..., tuple[dict[str, float], list[str]]]


EVALUATIONS: dict[str, Evaluation] = {
    "text": Evaluation(text.EvalConfig, text.evaluate),
    "images": Evaluation(image.ImageEvalConfig, image.evaluate),
    "image_text": Evaluation(image_text.ImageTextEvalConfig, image_text.evaluate),
    "pairs": Evaluation(pairs.PairsEvalConfig, pairs.evaluate),
    "preferences": Evaluation(preferences.PreferencesEvalConfig, preferences.evaluate),
}


def evaluation_for(kind: str) -> Evaluation:
    try:
        return EVALUATIONS[kind]
    except KeyError:
        raise RecipeError(f"data kind {kind!r} has no evaluation "
                          f"(known: {', '.join(sorted(EVALUATIONS))})") from None


def eval_section(kind: str, section: Any) -> BaseModel:
    """The recipe's eval section, validated as the one of data kind ``kind``."""
    cls = evaluation_for(kind).config
    if isinstance(section, cls):
        return section
    raw = dict(section or {}) if not isinstance(section, BaseModel) else section.model_dump()
    # its ``kind`` is the section type's own (an ``images`` section of image_text data too)
    return cls.model_validate({**raw, "kind": cls.model_fields["kind"].default})


__all__ = ["EVALUATIONS", "EvalContext", "Evaluation", "eval_section", "evaluation_for"]
