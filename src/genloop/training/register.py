"""Registration: a trained model becomes the version ``name@N``, with its card and lineage.

The directory (``ModelDir``) is staged completely beside the registry, then handed to the store
in one step (``Store.register_model``), so a version is either absent or whole. Beside weights
and config it holds what generation needs from the data, whatever its kind: the tokenizer of a
kind that holds text, the class names of one with labels, the sample grid of one that draws.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from genloop.config import settings
from genloop.models.family import Family, ModelConfig
from genloop.models.modeldir import ModelDir
from genloop.store import Store
from genloop.training.card import model_card
from genloop.training.recipe import Recipe


def register_model(
    store: Store, recipe: Recipe, family: Family, model_config: ModelConfig, model: torch.nn.Module,
    dataset: Any, run_id: str, metrics: dict[str, float], samples: list[str], parent: str | None,
    grid: Path | None = None, adapter: dict[str, Any] | None = None,
    text_encoder: dict[str, Any] | None = None,
) -> str:
    """Stage the model directory completely, then register it as ``name@N``; ``adapter`` (a
    LoRA run's adapter.json): only the adapters' tensors are written, beside that description;
    ``text_encoder``: the pretrained encoder it started from (``training/encoders.py``), in the
    lineage."""
    staging = ModelDir(settings().models_dir / f".staging-{uuid.uuid4().hex[:8]}")
    staging.path.mkdir(parents=True)
    try:
        if adapter is None:
            staging.write_network(family, model_config, model)
        else:
            staging.write_adapter(family, model_config, model, adapter)
        if (tokenizer := getattr(dataset, "tokenizer", None)) is not None:
            staging.write_tokenizer(tokenizer)
        if (class_names := getattr(dataset, "class_names", None)) is not None:
            staging.write_labels(list(class_names))
        if grid is not None:
            samples = [staging.write_sample_grid(grid)]
        lineage = {"dataset": dataset.name, "dataset_hash": dataset.hash,
                   "recipe_hash": recipe.hash(), "parent": parent, "run_id": run_id}
        if text_encoder is not None:
            lineage["text_encoder"] = text_encoder
        staging.write_record(recipe_yaml=recipe.to_yaml(), metrics=metrics, lineage=lineage,
                             samples=samples)
        version = store.register_model(
            recipe.name, staging.path, family=family.name, dataset_hash=dataset.hash,
            recipe_hash=recipe.hash(), parent=parent, run_id=run_id, metrics=metrics,
        )
    except BaseException:
        shutil.rmtree(staging.path, ignore_errors=True)
        raise
    card = model_card(version.ref, family, model_config, recipe, dataset.meta, metrics,
                      samples, lineage)
    ModelDir(Path(version.path)).write_card(card)
    return version.ref
