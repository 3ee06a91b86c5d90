"""The feature extractor behind FID, KID and precision/recall: a classifier of the dataset's domain.

Inception-v3 features mean little for 28×28 digits, so genloop trains a small classifier on the
training split (``models/classifier.py``) the first time a model of that dataset is evaluated, and
registers it as ``<dataset>-features@N`` like any other model, with the same loop. Later
evaluations on the same content reuse it (``evaluation.image.load_feature_extractor``), so rows of
a comparison share one extractor; ``eval.feature_extractor: name@N`` pins one explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from genloop.data.images import ImageDataset
from genloop.evaluation.image import load_feature_extractor
from genloop.store import Store
from genloop.training.recipe import Recipe


def extractor_recipe(recipe: Recipe, dataset: ImageDataset) -> dict[str, Any]:
    """The recipe that trains the extractor of ``recipe``'s data: same data section, a classifier."""
    steps = recipe.eval.extractor_steps
    return {
        "name": f"{dataset.name}-features",
        "data": recipe.data.model_dump(mode="json"),
        "model": {"family": "classifier", "preset": "small"},
        "train": {"steps": steps, "batch_size": 128, "lr": 2e-3, "warmup_steps": min(100, steps // 10),
                  "weight_decay": 0.05, "eval_every": max(1, steps // 4), "eval_batches": 10,
                  "checkpoint_every": steps, "log_every": max(1, steps // 50), "seed": 0,
                  "threads": recipe.train.threads, "tensorboard": False, "compile": False},
        "eval": {"kind": "images"},
    }


def feature_extractor(
    recipe: Recipe, dataset: ImageDataset, store: Store, report: Callable[[Any], None]
) -> torch.nn.Module:
    """The classifier whose features evaluate ``recipe``'s model (trained and registered if absent)."""
    model = load_feature_extractor(store, dataset, recipe.eval.feature_extractor)
    if model is None:
        from genloop.training.loop import Progress, train  # the same loop trains it

        report(Progress("eval", message=f"training the feature extractor {dataset.name}-features "
                                        "(once per dataset)"))
        ref = train(extractor_recipe(recipe, dataset), on_progress=report).model_ref
        model = load_feature_extractor(store, dataset, ref)
    return model
