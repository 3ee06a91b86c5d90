"""The ``image_text`` kind: images with a caption each (text → image, image → text).

The images go through the image pipeline unchanged (``data/images.py``: safe decoding, one
shape, the split), from a source that has captions (the built-in ``shapes`` draws a caption read
off its geometry: "a small red circle at the top left"). The captions are then tokenized — by a
tokenizer trained on the training captions, or a given one — and stored beside the images in the
folder every kind shares: ``<split>_images``, ``<split>_labels`` and the captions as ragged
arrays ``<split>_caption_ids`` / ``<split>_caption_offsets``, plus ``tokenizer.json``.

The world whose truth is known (``shapes``, ``shapes-pairs``) stores more: ``<split>_attributes``
(N, A) int64, each caption's attribute ids (``data/scenes.py``: parse, then ``attribute_ids``),
``test_heldout`` (N,) bool, the test images of held-out compositions, and the attribute schema in
the metadata (``attributes``). ``references(split, i)`` gives an image's reference captions: the
six phrasings of its scene for the shapes, every caption the file gives it for a captions.jsonl
folder or a COCO file (``data/captioned.py``), else its one caption.

The tokenizer is ``word`` unless asked otherwise: the shapes captions are a closed language, one
token a word.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from genloop.data import scenes
from genloop.data.folder import Folder, read_folder, stored, write_folder
from genloop.data.images import ImageDataConfig, ImageDataset, prepare_images
from genloop.data.records import Ragged, encode_ragged
from genloop.errors import CorruptArtifact, InvalidInput
from genloop.tokenizers import Tokenizer, TrainedKind, train_tokenizer

FORMAT_VERSION = 2
SCENE_SOURCES = {"shapes": "single", "shapes-pairs": "pairs"}  # built-ins whose captions parse


class ImageTextDataConfig(ImageDataConfig):
    """An image source with captions, and how to tokenize the captions."""

    kind: Literal["image_text"] = "image_text"  # type: ignore[assignment]
    tokenizer: TrainedKind = "word"
    vocab_size: int = Field(1024, ge=16, le=65535, description="BPE (or word) vocabulary size")

    def prepare(self, progress: Callable[[str], None] | None = None,
                tokenizer: Tokenizer | None = None) -> ImageTextDataset:
        return prepare_image_text(self, progress, tokenizer)


@dataclass
class ImageTextDataset(ImageDataset):
    """An image dataset whose every image has a tokenized caption."""

    tokenizer: Tokenizer = None  # type: ignore[assignment]
    train_captions: Ragged = None  # type: ignore[assignment]
    test_captions: Ragged = None  # type: ignore[assignment]
    attributes: dict[str, np.ndarray] | None = None  # {"train": (N, A) int64, "test": (M, A)}
    test_heldout: np.ndarray | None = None  # (M,) bool: a held-out composition
    schema: dict | None = None  # data/scenes.py schema: {"kind", "names", "values"}

    @property
    def kind(self) -> str:
        return "image_text"

    def references(self, split: str, i: int) -> list[str]:
        """The reference captions of image ``i`` of ``split`` (BLEU, CIDEr): the phrasings of
        its scene (shapes), every caption its file gives (captioned files), else its caption."""
        if self.captions is None:
            raise CorruptArtifact(f"dataset {self.name} was opened without its captions")
        text = self.captions[split][i]
        if self.schema is not None and (scene := scenes.parse(text)) is not None:
            return scenes.references(scene)
        if self.all_captions is not None:
            return list(self.all_captions[split][i])
        return [text]


def prepare_image_text(config: ImageTextDataConfig, progress: Callable[[str], None] | None = None,
                       tokenizer: Tokenizer | None = None) -> ImageTextDataset:
    say = progress or (lambda _msg: None)
    image_fields = set(ImageDataConfig.model_fields) - {"kind"}
    images = prepare_images(ImageDataConfig(**config.model_dump(include=image_fields)), progress)
    if images.captions is None:
        raise InvalidInput(f"image source {config.source!r} has no captions: image_text data needs "
                           "a caption per image (the built-in shapes has them)")
    settings = {"format": FORMAT_VERSION, "images": images.hash, "tokenizer": config.tokenizer,
                "vocab_size": config.vocab_size,
                "given_tokenizer": tokenizer.to_json() if tokenizer is not None else None}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    name = config.name or images.name
    if (done := stored(name, digest)) is None:
        if tokenizer is None:
            say(f"training {config.tokenizer} tokenizer on {len(images.captions['train'])} captions")
            tokenizer = train_tokenizer(config.tokenizer, images.captions["train"],
                                        vocab_size=config.vocab_size)
        arrays = {"train_images": images.train, "train_labels": images.train_labels,
                  "test_images": images.test, "test_labels": images.test_labels}
        for split in ("train", "test"):
            r = encode_ragged(tokenizer, images.captions[split])
            arrays[f"{split}_caption_ids"], arrays[f"{split}_caption_offsets"] = r.ids, r.offsets
        schema = None
        if (scene_kind := SCENE_SOURCES.get(str(images.meta.get("source")))) is not None:
            schema = scenes.schema(scene_kind)
            arrays.update(_attribute_arrays(images.captions))
        meta = {**images.meta, "kind": "image_text", "name": name, "hash": digest,
                "images_hash": images.hash, "config": config.model_dump() | {"name": name},
                "vocab_size": tokenizer.vocab_size, "attributes": schema,
                "all_captions": images.all_captions}
        say(f"writing {name}/{digest[:16]}")
        done = write_folder(meta, arrays, tokenizer)
    return _from_folder(done, images.captions)


def _attribute_arrays(captions: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """``<split>_attributes`` and ``test_heldout`` from captions that all parse to scenes."""
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        parsed = [scenes.parse(c) for c in captions[split]]
        if (bad := next((i for i, p in enumerate(parsed) if p is None), None)) is not None:
            raise CorruptArtifact(f"{split} caption {bad} ({captions[split][bad]!r}) names no scene")
        out[f"{split}_attributes"] = np.asarray([scenes.attribute_ids(p) for p in parsed if p],
                                                dtype=np.int64).reshape(len(parsed), -1)
        if split == "test":
            out["test_heldout"] = np.asarray([scenes.heldout(p) for p in parsed if p], dtype=bool)
    return out


def _from_folder(folder: Folder, captions: dict[str, list[str]] | None) -> ImageTextDataset:
    a, meta = folder.arrays, folder.meta
    assert folder.tokenizer is not None
    schema = meta.get("attributes")
    return ImageTextDataset(
        name=folder.name, hash=folder.hash, path=folder.path,
        train=a["train_images"], train_labels=a["train_labels"],
        test=a["test_images"], test_labels=a["test_labels"],
        class_names=list(meta["class_names"]), captions=captions,
        meta={k: v for k, v in meta.items() if k != "all_captions"},
        tokenizer=folder.tokenizer,
        train_captions=Ragged(a["train_caption_ids"], a["train_caption_offsets"]),
        test_captions=Ragged(a["test_caption_ids"], a["test_caption_offsets"]),
        attributes=({"train": a["train_attributes"], "test": a["test_attributes"]}
                    if schema is not None else None),
        test_heldout=a["test_heldout"] if schema is not None else None,
        schema=schema, all_captions=meta.get("all_captions"),
    )


def load_image_text_dataset(path: str | os.PathLike[str]) -> ImageTextDataset:
    folder = read_folder(path, "image_text")
    tok = folder.tokenizer
    assert tok is not None
    captions = {split: [tok.decode(Ragged(folder.arrays[f"{split}_caption_ids"],
                                          folder.arrays[f"{split}_caption_offsets"])[i].tolist())
                        for i in range(len(folder.arrays[f"{split}_caption_offsets"]) - 1)]
                for split in ("train", "test")}
    return _from_folder(folder, captions)
