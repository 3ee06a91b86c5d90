"""The one dataset folder: how every data kind stores a prepared dataset, immutably.

    datasets/<name>/<hash[:16]>/
        dataset.json     kind, name, content hash, source, config, counts, and each array's
                         dtype and shape (plus whatever the kind adds to describe itself)
        <array>.npy      one file per array (``train_ids``, ``val_ids``, ``train_images`` ...),
                         saved without pickle and memory-mapped read-only on open
        tokenizer.json   kinds that hold text: the tokenizer the ids were made with

The folder is built in a temp dir beside its final place and renamed in one step, so an error or
a crash never leaves a half-written dataset; a folder with the same hash is the same dataset, so
it is reused. Every kind writes and reads through ``write_folder``/``read_folder``: nothing else
spells these names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genloop.atomic import atomic_dir
from genloop.config import settings
from genloop.errors import CorruptArtifact, NotFound
from genloop.tokenizers import Tokenizer, load_tokenizer, save_tokenizer

META_FILE = "dataset.json"
TOKENIZER_FILE = "tokenizer.json"


@dataclass
class Folder:
    """A prepared dataset as stored: its metadata, its arrays (read-only memory maps), and its
    tokenizer when the kind holds text."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    tokenizer: Tokenizer | None

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def hash(self) -> str:
        return str(self.meta["hash"])

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])


def folder_for(name: str, digest: str) -> Path:
    """Where the dataset ``name`` with content hash ``digest`` lives in this workspace."""
    return settings().datasets_dir / name / digest[:16]


def stored(name: str, digest: str) -> Folder | None:
    """The already prepared dataset with this hash, if there is one (datasets are immutable)."""
    path = folder_for(name, digest)
    return read_folder(path) if (path / META_FILE).is_file() else None


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def write_folder(meta: dict[str, Any], arrays: dict[str, np.ndarray],
                 tokenizer: Tokenizer | None = None) -> Folder:
    """Store a dataset (``meta`` names its ``kind``, ``name`` and ``hash``) in one rename.

    If another process finished the same dataset first, theirs is identical and is returned."""
    for key in ("kind", "name", "hash"):
        if key not in meta:
            raise ValueError(f"dataset metadata needs {key!r}")
    final = folder_for(meta["name"], meta["hash"])
    meta = {**meta, "arrays": {k: {"dtype": a.dtype.str, "shape": list(a.shape)}
                               for k, a in arrays.items()}}
    try:
        with atomic_dir(final) as tmp:
            for key, arr in arrays.items():
                _save_npy(tmp / f"{key}.npy", arr)
            if tokenizer is not None:
                save_tokenizer(tokenizer, tmp / TOKENIZER_FILE)
            with open(tmp / META_FILE, "w", encoding="utf-8") as f:
                json.dump(meta, f, ensure_ascii=False, indent=2)
                f.flush()
                os.fsync(f.fileno())
    except OSError:
        if not (final / META_FILE).is_file():
            raise
    return read_folder(final)


def read_folder(path: str | os.PathLike[str], kind: str | None = None) -> Folder:
    """Open a prepared dataset; each array is checked against the dtype and shape its metadata
    records. ``kind``: refuse a folder of another kind."""
    path = Path(path)
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise NotFound(f"no dataset at {path} (missing {META_FILE})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptArtifact(f"dataset metadata {meta_path} is corrupt: {e}") from e
    if kind is not None and meta.get("kind") != kind:
        raise NotFound(f"{path} holds a {meta.get('kind')!r} dataset, not {kind!r}")
    arrays: dict[str, np.ndarray] = {}
    try:
        for key, spec in meta["arrays"].items():
            file = path / f"{key}.npy"
            a = np.load(file, mmap_mode="r", allow_pickle=False)
            if a.dtype.str != spec["dtype"] or list(a.shape) != list(spec["shape"]):
                raise CorruptArtifact(
                    f"{file} is {a.dtype} {tuple(a.shape)}, expected {np.dtype(spec['dtype']).name} "
                    f"{tuple(spec['shape'])}; delete {path} and prepare it again"
                )
            arrays[key] = a
    except (KeyError, TypeError) as e:
        raise CorruptArtifact(f"dataset metadata {meta_path} lacks {e}") from e
    except FileNotFoundError as e:
        raise CorruptArtifact(f"dataset {path} is missing {Path(e.filename).name}") from e
    except ValueError as e:
        raise CorruptArtifact(f"dataset {path} has an unreadable array ({e}); prepare it again") from e
    tok_file = path / TOKENIZER_FILE
    tokenizer = load_tokenizer(tok_file) if tok_file.is_file() else None
    return Folder(path, meta, arrays, tokenizer)
