"""Datasets: fetch public corpora, read user corpora, and turn them into immutable,
content-hashed token files that training memory-maps."""

from __future__ import annotations

from genloop.data.download import fetch
from genloop.data.text import (
    TextDataConfig,
    TextDataset,
    iter_documents,
    load_text_dataset,
    prepare_text,
)

__all__ = [
    "TextDataConfig",
    "TextDataset",
    "fetch",
    "iter_documents",
    "load_text_dataset",
    "prepare_text",
]
