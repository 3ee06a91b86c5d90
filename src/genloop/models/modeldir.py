"""``ModelDir``: the one type that knows a model version's directory layout.

    models/<name>/<N>/
        weights.safetensors   the network (safetensors only, never pickle)
        adapter.safetensors   an adapter version (LoRA) instead: the adapters' tensors only
        adapter.json          its LoRA settings, the base version's ref and the sha256 of the
                              base's weights file (``models/lora.py``)
        config.json           family name + typed config
        tokenizer.json        text kinds: the tokenizer the model was trained with
        encoder_tokenizer.json  an imported encoder's own Hugging Face tokenizer.json (embedders)
        labels.json           image kinds: class names, index = label
        chat_template.json    optional: how chat messages become a prompt
        card.md               the model card (Markdown)
        lineage.json          dataset hash, recipe hash, parent version, run id
        metrics.json          final evaluation
        recipe.yaml           the frozen recipe
        samples.json          samples taken at the end of training (text, or file names)
        samples.png           image kinds: the sample grid
        variants/<name>/      servable variants of the version (``hub/onnx.py``: ``onnx``, ``int8``)

A training checkpoint directory is a ModelDir too (weights, config, and ``ema.safetensors`` when
an average of the weights is kept); ``training/checkpoint.py`` adds the optimizer state beside it.
Nothing else in genloop spells these names: write and read through the methods here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from genloop.atomic import atomic_write_json, atomic_write_text
from genloop.errors import CorruptArtifact
from genloop.models import lora
from genloop.models.family import Family, ModelConfig
from genloop.models.io import config_json, load_weights, read_config, read_safetensors, save_weights
from genloop.tokenizers import Tokenizer, load_tokenizer, save_tokenizer
from genloop.tokenizers.encoder import EncoderTokenizer


@dataclass(frozen=True)
class ModelDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # --- the layout -----------------------------------------------------------------------
    @property
    def weights_file(self) -> Path:
        return self.path / "weights.safetensors"

    @property
    def adapter_file(self) -> Path:
        return self.path / "adapter.safetensors"

    @property
    def adapter_meta_file(self) -> Path:
        return self.path / "adapter.json"

    @property
    def ema_file(self) -> Path:
        return self.path / "ema.safetensors"

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def encoder_tokenizer_file(self) -> Path:
        return self.path / "encoder_tokenizer.json"

    @property
    def labels_file(self) -> Path:
        return self.path / "labels.json"

    @property
    def chat_template_file(self) -> Path:
        return self.path / "chat_template.json"

    @property
    def card_file(self) -> Path:
        return self.path / "card.md"

    @property
    def lineage_file(self) -> Path:
        return self.path / "lineage.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def recipe_file(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def samples_file(self) -> Path:
        return self.path / "samples.json"

    @property
    def sample_grid_file(self) -> Path:
        return self.path / "samples.png"

    @property
    def variants_dir(self) -> Path:
        return self.path / "variants"

    def variant_dir(self, name: str) -> Path:
        """Where servable variant ``name`` (``name@N:int8``) of this version lives."""
        return self.variants_dir / name

    # --- writing (into a staging or temporary directory: the caller renames it into place) ---
    def write_network(self, family: Family, config: ModelConfig, model: torch.nn.Module,
                      ema: torch.nn.Module | None = None) -> None:
        save_weights(model, self.weights_file)
        if ema is not None:
            save_weights(ema, self.ema_file)
        atomic_write_text(self.config_file, config_json(family, config))

    def write_adapter(self, family: Family, config: ModelConfig, model: torch.nn.Module,
                      meta: dict[str, Any]) -> None:
        """An adapter version: the adapters' tensors of the injected ``model``, ``meta`` (its
        ``lora`` section with the resolved targets, ``base`` ref, ``base_sha256``), the config."""
        saved = (meta.get("lora") or {}).get("modules_to_save")
        save_file(lora.adapter_tensors(model, saved), str(self.adapter_file))
        atomic_write_json(self.adapter_meta_file, meta)
        atomic_write_text(self.config_file, config_json(family, config))

    def write_tokenizer(self, tokenizer: Tokenizer) -> None:
        save_tokenizer(tokenizer, self.tokenizer_file)

    def write_encoder_tokenizer(self, tokenizer: EncoderTokenizer) -> None:
        atomic_write_text(self.encoder_tokenizer_file, tokenizer.to_json())

    def write_labels(self, class_names: list[str]) -> None:
        atomic_write_json(self.labels_file, list(class_names))

    def write_chat_template(self, template: dict[str, Any]) -> None:
        atomic_write_json(self.chat_template_file, template)

    def write_card(self, markdown: str) -> None:
        atomic_write_text(self.card_file, markdown)

    def write_record(self, *, recipe_yaml: str, metrics: dict[str, float], lineage: dict[str, Any],
                     samples: list[str]) -> None:
        """The frozen recipe, final metrics, lineage and end-of-training samples."""
        atomic_write_text(self.recipe_file, recipe_yaml)
        atomic_write_json(self.metrics_file, metrics)
        atomic_write_json(self.lineage_file, lineage)
        atomic_write_json(self.samples_file, samples)

    def write_sample_grid(self, png: Path) -> str:
        """Copy a grid image in; its name inside the directory (what ``samples.json`` lists)."""
        shutil.copyfile(png, self.sample_grid_file)
        return self.sample_grid_file.name

    # --- reading ---------------------------------------------------------------------------
    def family_config(self) -> tuple[Family, ModelConfig]:
        return read_config(self.config_file)

    @property
    def is_adapter(self) -> bool:
        return self.adapter_meta_file.is_file()

    def adapter(self) -> dict[str, Any] | None:
        """An adapter version's ``adapter.json`` (None for a version with full weights)."""
        meta = self._json(self.adapter_meta_file)
        if meta is not None and not (isinstance(meta, dict) and {"base", "base_sha256", "lora"} <= set(meta)):
            raise CorruptArtifact(f"{self.adapter_meta_file}: not an adapter description")
        return meta

    def weights_sha256(self) -> str:
        """The sha256 of the file that holds this version's own weights (an adapter's base
        records it, so the adapter is never applied to other weights)."""
        path = self.adapter_file if self.is_adapter else self.weights_file
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def load(self, *, ema: bool = False, base: Callable[[str], ModelDir] | None = None,
             merged: bool = False) -> tuple[Family, ModelConfig, torch.nn.Module]:
        """Family, config and network (in eval mode); ``ema``: the averaged weights. An adapter
        version loads its base (``base`` maps the base's ref to its directory: the store's),
        then its adapters; ``merged``: folded into the base's weights (a plain network)."""
        family, config = self.family_config()
        meta = self.adapter()
        if meta is None:
            model = family.build(config)
            load_weights(model, self.ema_file if ema else self.weights_file)
            return family, config, model.eval()
        if base is None:
            raise CorruptArtifact(f"{self.path}: an adapter of {meta['base']}; load it through "
                                  "the store, which finds its base")
        base_dir = base(str(meta["base"]))
        if base_dir.weights_sha256() != meta["base_sha256"]:
            raise CorruptArtifact(f"{self.path}: adapter of {meta['base']} applied to a different "
                                  f"base ({base_dir.path}'s weights are not the ones it was "
                                  "trained on)")
        _family, _config, model = base_dir.load(base=base, merged=True)
        try:
            section = lora.LoraSection.model_validate(meta["lora"])
        except ValueError as e:
            raise CorruptArtifact(f"{self.adapter_meta_file}: unreadable lora section ({e})") from None
        lora.inject(model, section, list(section.target_modules or []), family)
        lora.load_adapter(model, read_safetensors(self.adapter_file), str(self.adapter_file),
                          section.modules_to_save)
        if merged:
            model = lora.merge(model)
        return family, config, model.requires_grad_(False).eval()

    def load_weights_into(self, model: torch.nn.Module, *, ema: bool = False) -> None:
        load_weights(model, self.ema_file if ema else self.weights_file)

    def tokenizer(self) -> Tokenizer | None:
        if self.tokenizer_file.is_file():
            return load_tokenizer(self.tokenizer_file)
        if self.encoder_tokenizer_file.is_file():
            return EncoderTokenizer.load(self.encoder_tokenizer_file)
        return None

    def labels(self) -> list[str] | None:
        return self._json(self.labels_file)

    def chat_template(self) -> dict[str, Any] | None:
        return self._json(self.chat_template_file)

    def variants(self) -> list[str]:
        """Names of the servable variants this version holds, sorted (finished ones only: a
        variant is staged in a hidden temp dir and renamed into place)."""
        if not self.variants_dir.is_dir():
            return []
        return sorted(p.name for p in self.variants_dir.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def card(self) -> str:
        return self.card_file.read_text(encoding="utf-8") if self.card_file.is_file() else ""

    def lineage(self) -> dict[str, Any]:
        lineage = self._json(self.lineage_file)
        if not isinstance(lineage, dict):
            raise CorruptArtifact(f"{self.lineage_file}: missing or not an object")
        return lineage

    def _json(self, path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CorruptArtifact(f"{path}: unreadable ({e})") from None
