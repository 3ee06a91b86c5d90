"""Registration: a trained model becomes the version ``name@N``, with its card and lineage.

The directory is staged completely beside the registry, then handed to the store in one step
(``Store.register_model``), so a version is either absent or whole.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import torch

from genloop.atomic import atomic_write_json, atomic_write_text
from genloop.config import settings
from genloop.data.images import ImageDataset
from genloop.data.text import TextDataset
from genloop.models.family import Family, ModelConfig
from genloop.models.io import config_json, save_weights
from genloop.store import Store
from genloop.tokenizers import save_tokenizer
from genloop.training.card import model_card
from genloop.training.recipe import Recipe


def register_model(
    store: Store, recipe: Recipe, family: Family, model_config: ModelConfig, model: torch.nn.Module,
    dataset: TextDataset | ImageDataset, run_id: str, metrics: dict[str, float], samples: list[str],
    parent: str | None,
) -> str:
    """Stage the model directory completely, then register it as ``name@N``.

    Beside weights and config it holds what generation needs from the data: the tokenizer of a
    text model, the class names of an image model (``labels.json``) and its sample grid."""
    staging = settings().models_dir / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        save_weights(model, staging / "weights.safetensors")
        atomic_write_text(staging / "config.json", config_json(family, model_config))
        if isinstance(dataset, TextDataset):
            save_tokenizer(dataset.tokenizer, staging / "tokenizer.json")
        else:
            atomic_write_json(staging / "labels.json", list(dataset.class_names))
            if samples:
                shutil.copyfile(samples[0], staging / "samples.png")
                samples = ["samples.png"]
        atomic_write_text(staging / "recipe.yaml", recipe.to_yaml())
        atomic_write_json(staging / "metrics.json", metrics)
        lineage = {"dataset": dataset.name, "dataset_hash": dataset.hash,
                   "recipe_hash": recipe.hash(), "parent": parent, "run_id": run_id}
        atomic_write_json(staging / "lineage.json", lineage)
        atomic_write_json(staging / "samples.json", samples)
        version = store.register_model(
            recipe.name, staging, family=family.name, dataset_hash=dataset.hash,
            recipe_hash=recipe.hash(), parent=parent, run_id=run_id, metrics=metrics,
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    card = model_card(version.ref, family, model_config, recipe, dataset.meta, metrics,
                      samples, lineage)
    atomic_write_text(Path(version.path) / "card.md", card)
    return version.ref
