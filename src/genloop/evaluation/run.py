"""Evaluate a registered model on its own dataset and store the result on the version.

Text: validation loss, bits per character, perplexity, diversity. Images: FID, KID,
precision/recall, Inception-style score and sample accuracy with the dataset's feature extractor
(and likelihood bounds for a VAE).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genloop.data.images import load_image_dataset
from genloop.data.text import load_text_dataset
from genloop.errors import InvalidInput, NotFound
from genloop.evaluation.image import ImageEvalConfig, evaluate_images, load_feature_extractor
from genloop.evaluation.text import EvalConfig, evaluate_text
from genloop.generation.service import TextModel, load
from genloop.store import Store


def evaluate_version(ref: str, *, num_samples: int | None = None, seed: int = 0,
                     **image_options: Any) -> dict[str, float]:
    """Evaluate ``ref`` on its dataset; the metrics are merged into the version's record."""
    store = Store()
    model = load(ref, store)
    lineage = model.directory.lineage()
    if not lineage.get("dataset_hash"):
        raise InvalidInput(f"{model.ref} has no dataset of its own (imported): score it on a text "
                           f"with genloop eval {model.ref} --text FILE")
    try:
        record = store.get_dataset(lineage["dataset_hash"])
    except NotFound:
        raise NotFound(
            f"{model.ref}: its dataset {lineage['dataset_hash'][:16]} is not in this workspace"
        ) from None
    if isinstance(model, TextModel):
        dataset = load_text_dataset(record.path)
        metrics, _ = evaluate_text(
            model.family, model.network, model.tokenizer, np.asarray(dataset.val),
            EvalConfig(num_samples=4 if num_samples is None else num_samples), seed=seed,
        )
    else:
        images = load_image_dataset(record.path)
        cfg = ImageEvalConfig(**({} if num_samples is None else {"num_samples": num_samples}),
                              **image_options)
        extractor = load_feature_extractor(store, images, cfg.feature_extractor)
        if extractor is None and model.family.generative:
            raise NotFound(f"no feature extractor for dataset {images.name} in this workspace: "
                           "train one with any image recipe on it, or pass --feature-extractor name@N")
        metrics, _ = evaluate_images(model.family, model.network, model.config, images, cfg,
                                     seed=seed, extractor=extractor)
    store.update_model_metrics(model.ref, metrics)
    return metrics
