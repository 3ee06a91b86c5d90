"""The recogniser behind text → image faithfulness: trained on first need, like the FID extractor.

The first time a text-conditioned model of a dataset with an attribute schema (``shapes``,
``shapes-pairs``) is evaluated, a ``recogniser`` (``models/recogniser.py``) is trained on that
dataset's training split with the same loop (whose final evaluation passes its ``train`` in: this
module does not import the loop) — every composition, the held-out ones included
(``data.compositions: all``: an instrument, not a generator) — and registered as
``<dataset>-recogniser@N``, its test accuracy per attribute and per image (seen and held-out
compositions) on its card. Later evaluations reuse it (``evaluation.image_text.load_recogniser``),
so rows of a comparison share one; ``eval.recogniser: name@N`` pins one explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from genloop.errors import RecipeError
from genloop.evaluation.image_text import load_recogniser, swap_spec
from genloop.models.recogniser import Recogniser
from genloop.store import Store
from genloop.training.recipe import Recipe


def recogniser_recipe(recipe: Recipe, dataset: Any) -> dict[str, Any]:
    """The recipe that trains the recogniser of ``recipe``'s data: same data section, the
    attribute sizes and the object swap of the dataset's schema."""
    if getattr(dataset, "schema", None) is None:
        raise RecipeError(f"dataset {dataset.name} has no attribute schema: a recogniser needs one "
                          "(shapes, shapes-pairs)")
    steps = getattr(recipe.eval, "recogniser_steps", 1500)
    sizes = [len(v) for v in dataset.schema["values"]]
    return {
        "name": f"{dataset.name}-recogniser",
        # a measuring instrument: it learns every composition, held-out ones included (the model
        # it judges never sees those); it is judged on the same test split
        "data": {**recipe.data.model_dump(mode="json"), "compositions": "all"},
        "model": {"family": "recogniser", "preset": "small",
                  "config": {"attribute_sizes": sizes, **swap_spec(dataset.schema)}},
        "train": {"steps": steps, "batch_size": 128, "lr": 2e-3, "warmup_steps": min(100, steps // 10),
                  "weight_decay": 0.05, "eval_every": max(1, steps // 4), "eval_batches": 10,
                  "checkpoint_every": steps, "log_every": max(1, steps // 50), "seed": 0,
                  "threads": recipe.train.threads, "tensorboard": False, "compile": False},
        "eval": {"kind": "image_text"},
    }


def recogniser_for(recipe: Recipe, dataset: Any, store: Store,
                   train: Callable[[dict[str, Any]], str]) -> Recogniser:
    """The recogniser that judges ``recipe``'s model; if there is none yet, ``train`` (the loop's
    own, passed in by its caller) trains and registers one from ``recogniser_recipe``."""
    ref = getattr(recipe.eval, "recogniser", None)
    model = load_recogniser(store, dataset, ref)
    if model is None:
        model = load_recogniser(store, dataset, train(recogniser_recipe(recipe, dataset)))
        assert model is not None  # a given ref loads or raises
    return model
