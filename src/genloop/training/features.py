"""The feature extractor behind FID, KID and precision/recall: a classifier of the dataset's domain.

Inception-v3 features mean little for 28×28 digits, so genloop trains a small classifier on the
training split (``models/classifier.py``) the first time a model of that dataset is evaluated, and
registers it as ``<dataset>-features@N`` like any other model, with the same loop (whose final
evaluation passes its ``train`` in: this module does not import the loop). Later
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
    recipe: Recipe, dataset: ImageDataset, store: Store, train: Callable[[dict[str, Any]], str]
) -> torch.nn.Module:
    """The classifier whose features evaluate ``recipe``'s model; if there is none yet, ``train``
    (the loop's own, passed in by its caller) trains and registers one from ``extractor_recipe``
    and returns its reference."""
    model = load_feature_extractor(store, dataset, recipe.eval.feature_extractor)
    if model is None:
        model = load_feature_extractor(store, dataset, train(extractor_recipe(recipe, dataset)))
        assert model is not None  # a given ref loads or raises
    return model
