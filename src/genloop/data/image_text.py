"""The ``image_text`` kind: images with a caption each (text → image, image → text).

The images go through the image pipeline unchanged (``data/images.py``: safe decoding, one
shape, the split), from a source that has captions (the built-in ``shapes`` draws a caption read
off its geometry: "a small red circle at the top left"). The captions are then tokenized — by a
tokenizer trained on the training captions, or a given one — and stored beside the images in the
folder every kind shares: ``<split>_images``, ``<split>_labels`` and the captions as ragged
arrays ``<split>_caption_ids`` / ``<split>_caption_offsets``, plus ``tokenizer.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from genloop.data.folder import Folder, read_folder, stored, write_folder
from genloop.data.images import ImageDataConfig, ImageDataset, prepare_images
from genloop.data.records import Ragged, encode_ragged
from genloop.errors import InvalidInput
from genloop.tokenizers import Tokenizer, train_tokenizer

FORMAT_VERSION = 1


class ImageTextDataConfig(ImageDataConfig):
    """An image source with captions, and how to tokenize the captions."""

    kind: Literal["image_text"] = "image_text"  # type: ignore[assignment]
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = Field(1024, ge=16, le=65535, description="BPE vocabulary size")

    def prepare(self, progress: Callable[[str], None] | None = None,
                tokenizer: Tokenizer | None = None) -> ImageTextDataset:
        return prepare_image_text(self, progress, tokenizer)


@dataclass
class ImageTextDataset(ImageDataset):
    """An image dataset whose every image has a tokenized caption."""

    tokenizer: Tokenizer = None  # type: ignore[assignment]
    train_captions: Ragged = None  # type: ignore[assignment]
    test_captions: Ragged = None  # type: ignore[assignment]

    @property
    def kind(self) -> str:
        return "image_text"


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
        meta = {**images.meta, "kind": "image_text", "name": name, "hash": digest,
                "images_hash": images.hash, "config": config.model_dump() | {"name": name},
                "vocab_size": tokenizer.vocab_size}
        say(f"writing {name}/{digest[:16]}")
        done = write_folder(meta, arrays, tokenizer)
    return _from_folder(done, images.captions)


def _from_folder(folder: Folder, captions: dict[str, list[str]] | None) -> ImageTextDataset:
    a = folder.arrays
    assert folder.tokenizer is not None
    return ImageTextDataset(
        name=folder.name, hash=folder.hash, path=folder.path,
        train=a["train_images"], train_labels=a["train_labels"],
        test=a["test_images"], test_labels=a["test_labels"],
        class_names=list(folder.meta["class_names"]), captions=captions, meta=folder.meta,
        tokenizer=folder.tokenizer,
        train_captions=Ragged(a["train_caption_ids"], a["train_caption_offsets"]),
        test_captions=Ragged(a["test_caption_ids"], a["test_caption_offsets"]),
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
