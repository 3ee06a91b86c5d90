"""Adapter versions through the store: loading one over its base, and ``genloop merge``.

An adapter version (``models/lora.py``, ``ModelDir.write_adapter``) holds only its LoRA tensors
and names its base version; ``load_network`` finds the base through the store (recursively: an
adapter's base may itself be an adapter, loaded merged), checks the base's weights are the ones
the adapter was trained on (their sha256), and applies the adapter. ``merge_version`` folds an
adapter into a new full version whose parent is the adapter version.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

from genloop.atomic import atomic_write_json
from genloop.config import settings
from genloop.errors import InvalidInput
from genloop.models.family import Family, ModelConfig
from genloop.models.modeldir import ModelDir
from genloop.store import ModelVersion, Store


def base_dirs(store: Store) -> Callable[[str], ModelDir]:
    """How an adapter version finds its base: the store resolves the ref to its directory."""

    def directory(ref: str) -> ModelDir:
        return ModelDir(Path(store.resolve(ref).path))

    return directory


def load_network(version: ModelVersion, store: Store, *,
                 merged: bool = False) -> tuple[Family, ModelConfig, torch.nn.Module]:
    """Family, config and network of any version: full weights, or an adapter over its base."""
    return ModelDir(Path(version.path)).load(base=base_dirs(store), merged=merged)


def merge_version(ref: str, name: str | None = None, store: Store | None = None) -> ModelVersion:
    """Fold adapter version ``ref`` into its base: a new full version (``name``, default the
    adapter's own name, as its next N) whose parent is ``ref``. Its outputs are the adapter's
    within floating-point error, so its evaluation figures are the adapter's."""
    store = store or Store()
    version = store.resolve(ref)
    source = ModelDir(Path(version.path))
    meta = source.adapter()
    if meta is None:
        raise InvalidInput(f"{version.ref} holds full weights, not an adapter: there is nothing "
                           "to merge")
    family, config, network = load_network(version, store, merged=True)
    staging = ModelDir(settings().models_dir / f".staging-{uuid.uuid4().hex[:8]}")
    staging.path.mkdir(parents=True)
    try:
        staging.write_network(family, config, network)
        for path in (source.tokenizer_file, source.labels_file, source.chat_template_file,
                     source.recipe_file, source.metrics_file, source.samples_file,
                     source.sample_grid_file):
            if path.is_file():
                shutil.copyfile(path, staging.path / path.name)
        lineage = {**source.lineage(), "parent": version.ref, "merged_from": version.ref,
                   "adapter_base": meta["base"]}
        atomic_write_json(staging.lineage_file, lineage)
        merged = store.register_model(
            name or version.name, staging.path, family=family.name,
            dataset_hash=version.dataset_hash, recipe_hash=version.recipe_hash,
            parent=version.ref, run_id=version.run_id, metrics=dict(version.metrics or {}),
        )
    except BaseException:
        shutil.rmtree(staging.path, ignore_errors=True)
        raise
    card = source.card()
    note = (f"# {merged.ref}\n\nThe LoRA adapter {version.ref} (over {meta['base']}) merged into "
            "full weights: W + (alpha/rank)·B·A in each adapted layer. Its outputs equal the "
            "adapter's within floating-point error; the figures below are the adapter's.\n\n")
    ModelDir(Path(merged.path)).write_card(note + card)
    return merged
