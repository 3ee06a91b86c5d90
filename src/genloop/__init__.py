"""genloop — a self-hostable AIGC workbench: data → train → generate → evaluate → feedback.

The Python face::

    import genloop
    result = genloop.train("recipes/shakespeare.yaml", overrides=["train.steps=500"])
    model = genloop.load(result.model_ref)          # or "name", "name@3"
    print(model.generate("ROMEO:", max_new_tokens=200, seed=1)[0].text)

    digits = genloop.load(genloop.train("digits").model_ref)
    digits.generate(num_samples=16, class_label=7, seed=1).save_grid("sevens.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from genloop.version import __version__

__all__ = ["train", "load", "prepare", "load_recipe", "__version__"]

if TYPE_CHECKING:
    from genloop.data.images import ImageDataset
    from genloop.data.text import TextDataset
    from genloop.generation.service import CaptionModel, ImageModel, TextModel
    from genloop.training.loop import TrainResult
    from genloop.training.recipe import Recipe


def train(recipe: Any, **kwargs: Any) -> TrainResult:
    """Train a recipe (path, dict or Recipe); see ``genloop.training.loop.train``."""
    from genloop.training.loop import train as _train

    return _train(recipe, **kwargs)


def load(ref: str) -> TextModel | ImageModel | CaptionModel:
    """Load a registered model version (``name`` = newest, ``name@N`` = that one)."""
    from genloop.generation.service import load as _load

    return _load(ref)


def prepare(source: str, **options: Any) -> TextDataset | ImageDataset:
    """Prepare (or reuse) a dataset: ``genloop.prepare("tinyshakespeare")``,
    ``genloop.prepare("mnist", kind="images")``."""
    from genloop.data.kinds import get_kind

    # every kind's data section has a prepare(), which DataKind.config (type[BaseModel]) cannot say
    section: Any = get_kind(options.pop("kind", "text")).config(source=source, **options)
    return section.prepare()


def load_recipe(source: Any, overrides: Sequence[str] = ()) -> Recipe:
    from genloop.training.recipe import load_recipe as _load_recipe

    return _load_recipe(source, overrides)
