"""Datasets: fetch public corpora and image sets, read user corpora and image folders, and turn
them into immutable, content-hashed token or image files that training memory-maps."""

from __future__ import annotations

from genloop.data.download import fetch
from genloop.data.images import (
    ImageDataConfig,
    ImageDataset,
    load_image_dataset,
    prepare_images,
)
from genloop.data.text import (
    TextDataConfig,
    TextDataset,
    iter_documents,
    load_text_dataset,
    prepare_text,
)

__all__ = [
    "ImageDataConfig",
    "ImageDataset",
    "TextDataConfig",
    "TextDataset",
    "fetch",
    "iter_documents",
    "load_image_dataset",
    "load_text_dataset",
    "prepare_images",
    "prepare_text",
]
