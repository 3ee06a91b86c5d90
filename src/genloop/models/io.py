"""Saving and loading a network's weights: safetensors only, never pickle.

``models/modeldir.py`` (``ModelDir``) says where a model directory keeps them.
Anything that is not a well-formed safetensors file — a pickle (``torch.save``), a truncated
download, random bytes — is refused with a ``CorruptArtifact`` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genloop.errors import CorruptArtifact
from genloop.models.family import Family, ModelConfig
from genloop.models.registry import get_family

PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tied (shared) tensors stored once, contiguous, as safetensors wants."""
    seen: dict[int, str] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        key = t.data_ptr()
        if key in seen and t.numel() > 0:
            continue
        seen[key] = name
        out[name] = t.detach().contiguous().cpu()
    return out


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write weights to ``path`` (the caller makes the write atomic, e.g. inside a temp dir)."""
    save_file(state_tensors(model), str(path))


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; anything else is refused, pickles by name."""
    path = Path(path)
    if not path.is_file():
        raise CorruptArtifact(f"{path}: no such file")
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(PICKLE_MAGIC):
        raise CorruptArtifact(
            f"{path}: this is a pickle/torch.save file; genloop loads weights only from "
            "safetensors (convert it with safetensors.torch.save_file in a trusted environment)"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CorruptArtifact(f"{path}: not a readable safetensors file ({e})") from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load weights into ``model``; missing or unexpected tensors name the first offender."""
    tensors = read_safetensors(path)
    own = model.state_dict()
    # tied parameters were saved once: fill the other names from their twin
    missing = [k for k in own if k not in tensors]
    by_ptr = {own[k].data_ptr(): k for k in own if k in tensors}
    for k in list(missing):
        twin = by_ptr.get(own[k].data_ptr())
        if twin is not None:
            tensors[k] = tensors[twin]
            missing.remove(k)
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CorruptArtifact(f"{path}: weights do not match the model config ({what})")
    for k, t in tensors.items():
        if t.shape != own[k].shape:
            raise CorruptArtifact(
                f"{path}: tensor {k!r} has shape {tuple(t.shape)}, model expects {tuple(own[k].shape)}"
            )
    model.load_state_dict(tensors)


def config_json(family: Family, config: ModelConfig) -> str:
    return json.dumps({"family": family.name, "config": config.model_dump()}, indent=2)


def read_config(path: Path) -> tuple[Family, ModelConfig]:
    try:
        raw = json.loads(Path(path).read_text())
        family = get_family(raw["family"])
        return family, family.config.model_validate(raw["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptArtifact(f"{path}: unreadable model config ({e})") from None
