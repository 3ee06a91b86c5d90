"""Captioned image sources: a folder of images with a ``captions.jsonl``, and COCO-style captions.

- **captions.jsonl folder**: a folder holding ``captions.jsonl``, one JSON object a line,
  ``{"file": "a.png", "caption": "..."}`` or ``{"file": "a.png", "captions": ["...", ...]}``; the
  ``file`` is relative to the folder (it may sit in a sub-folder, never outside). Images the file
  does not list are left out (named in ``skipped``).
- **COCO captions** (a ``.json`` file, as ``captions_train2017.json``): ``{"images": [{"id",
  "file_name"}, ...], "annotations": [{"image_id", "caption"}, ...]}``; file names are relative to
  the JSON file's folder; an image with no annotation is left out.

An image's first caption is the one training uses; all of them are its references (BLEU, CIDEr).
Each image goes through ``data/image_files.py`` (limits, formats, modes) like any other; every
problem is one line naming the file and the line (or the entry) at fault.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genloop.data.image_files import read_image
from genloop.errors import InvalidInput

CAPTIONS_FILE = "captions.jsonl"


@dataclass
class Captioned:
    """Images as read (N, H, W, C) uint8 (C 1 or 3), each with its captions, and a sha256 key
    of its file (the order of the split)."""

    images: np.ndarray
    captions: list[list[str]]
    keys: np.ndarray
    grey: bool
    conversions: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)


def is_captioned(path: Path) -> bool:
    """Whether ``path`` is a captioned source (a folder with captions.jsonl, or a .json)."""
    return (path.is_dir() and (path / CAPTIONS_FILE).is_file()) or (
        path.is_file() and path.suffix.lower() == ".json")


def _captions(value: Any, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(c, str) and c.strip() for c in items):
        raise InvalidInput(f"{where}: a caption must be a non-empty string (or a list of them)")
    return [c.strip() for c in items]


def _inside(root: Path, name: Any, where: str) -> Path:
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}: the image file name must be a non-empty string")
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise InvalidInput(f"{where}: {name!r} is outside {root}")
    if not path.is_file():
        raise InvalidInput(f"{where}: no image file {name!r} in {root}")
    return path


def _jsonl_entries(root: Path) -> list[tuple[Path, list[str], str]]:
    path = root / CAPTIONS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{path} is not UTF-8 text (byte {e.start})") from None
    entries: dict[Path, tuple[list[str], str]] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or "file" not in obj or ("caption" in obj) == ("captions" in obj):
            raise InvalidInput(f'{where}: give {{"file": ..., "caption": ...}} or '
                               '{"file": ..., "captions": [...]}')
        image = _inside(root, obj["file"], where)
        if image in entries:
            raise InvalidInput(f"{where}: {obj['file']!r} is listed twice (first at {entries[image][1]})")
        entries[image] = (_captions(obj.get("caption", obj.get("captions")), where), where)
    if not entries:
        raise InvalidInput(f"{path} lists no images")
    return [(p, caps, where) for p, (caps, where) in entries.items()]


def _coco_entries(path: Path) -> list[tuple[Path, list[str], str]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"{path} is not a JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(
            doc.get("annotations"), list):
        raise InvalidInput(f'{path}: a COCO captions file has "images" and "annotations" lists')
    files: dict[Any, tuple[Path, str]] = {}
    for i, img in enumerate(doc["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise InvalidInput(f'{where}: an image needs "id" and "file_name"')
        if img["id"] in files:
            raise InvalidInput(f"{where}: image id {img['id']!r} is used twice")
        files[img["id"]] = (_inside(path.parent, img["file_name"], where), where)
    captions: dict[Any, list[str]] = {}
    for i, ann in enumerate(doc["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            raise InvalidInput(f'{where}: an annotation needs "image_id" and "caption"')
        if ann["image_id"] not in files:
            raise InvalidInput(f"{where}: no image has id {ann['image_id']!r}")
        captions.setdefault(ann["image_id"], []).extend(_captions(ann["caption"], where))
    entries = [(p, captions[k], where) for k, (p, where) in files.items() if k in captions]
    if not entries:
        raise InvalidInput(f"{path}: no image has a caption")
    return entries


def read_captioned(path: Path, image_size: int | None, say=lambda _m: None) -> Captioned:
    """Read a captioned source (see the module docstring); every image one size (or
    ``image_size``), square."""
    entries = _coco_entries(path) if path.is_file() else _jsonl_entries(path)
    root = path.parent if path.is_file() else path
    listed = {p for p, _, _ in entries}
    skipped = [] if path.is_file() else sorted(
        str(p.relative_to(root)) for p in root.rglob("*")
        if p.is_file() and p.name != CAPTIONS_FILE and not p.name.startswith(".")
        and p.resolve() not in listed)
    say(f"reading {len(entries)} captioned images from {path}")
    conversions: Counter[str] = Counter()
    arrays, keys, first = [], [], None
    for image, _caps, where in entries:
        try:
            a = read_image(image, image_size, conversions)
        except InvalidInput as e:
            raise InvalidInput(f"{where}: {e}") from None
        if first is None:
            first = (a.shape, image)
        elif a.shape[:2] != first[0][:2]:
            raise InvalidInput(f"{where}: {image.name} is {a.shape[1]}x{a.shape[0]}, {first[1].name} is "
                               f"{first[0][1]}x{first[0][0]}; set data.image_size to resize them all")
        arrays.append(a)
        keys.append(int.from_bytes(hashlib.sha256(image.read_bytes()).digest()[:8], "big"))
    assert first is not None
    if first[0][0] != first[0][1]:
        raise InvalidInput(f"images are {first[0][1]}x{first[0][0]} (e.g. {first[1]}), not square; "
                           "set data.image_size to centre-crop them")
    grey = all(a.shape[2] == 1 for a in arrays)
    stacked = np.stack([np.repeat(a, 3, axis=2) if a.shape[2] == 1 and not grey else a for a in arrays])
    return Captioned(stacked, [caps for _, caps, _ in entries], np.asarray(keys, dtype=np.uint64), grey,
                     conversions, skipped)


__all__ = ["CAPTIONS_FILE", "Captioned", "is_captioned", "read_captioned"]
