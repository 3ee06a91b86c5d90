"""Evaluate a registered text model on its own dataset's validation split and store the result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genloop.data.text import load_text_dataset
from genloop.errors import NotFound
from genloop.evaluation.text import EvalConfig, evaluate_text
from genloop.generation.service import load
from genloop.store import Store


def evaluate_version(ref: str, *, num_samples: int = 4, seed: int = 0) -> dict[str, float]:
    """Validation loss, bits per character, perplexity and diversity; merged into the version."""
    store = Store()
    model = load(ref, store)
    lineage = json.loads((Path(model.version.path) / "lineage.json").read_text())
    try:
        record = store.get_dataset(lineage["dataset_hash"])
    except NotFound:
        raise NotFound(
            f"{model.ref}: its dataset {lineage['dataset_hash'][:16]} is not in this workspace"
        ) from None
    dataset = load_text_dataset(record.path)
    metrics, _ = evaluate_text(
        model.family, model.network, model.tokenizer, np.asarray(dataset.val),
        EvalConfig(num_samples=num_samples), seed=seed,
    )
    store.update_model_metrics(model.ref, metrics)
    return metrics
