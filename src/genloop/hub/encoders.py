"""BERT-family encoder checkpoints → the ``embedder`` family (being built)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genloop.errors import InvalidInput
from genloop.store import ModelVersion, Store


def is_encoder(hf_config: dict[str, Any]) -> bool:
    """Whether a Hugging Face ``config.json`` describes an encoder (BERT family), not a causal LM."""
    archs = hf_config.get("architectures") or []
    return any(not a.endswith("ForCausalLM") for a in archs) and hf_config.get("model_type") in {
        "bert", "roberta", "distilbert", "xlm-roberta", "mpnet", "electra"}


def import_encoder(src: Path, name: str, store: Store, hashes: dict[str, str]) -> ModelVersion:
    raise InvalidInput(f"{src}: importing encoders is not built yet")
