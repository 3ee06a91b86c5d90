"""Embeddings: texts → one vector each, from a registered embedder (``models/embedder.py``).

The one path every face takes to embed: resolve and load the version (cached with the text and
image models, ``service.load``), tokenize with its own tokenizer (its special tokens, cut to its
``block_size``), run the encoder on batches of similar length and pool. Nothing is recorded:
an embedding is a pure function of the version and the text (no seed, no sampling).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genloop.errors import InvalidInput
from genloop.generation.service import TextModel, load
from genloop.store import Store
from genloop.tokenizers.encoder import EncoderTokenizer

BATCH = 32  # texts per forward pass (sentence-transformers' default)

_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


@dataclass
class Embeddings:
    """The vectors of some texts, in their order, and the tokens the encoder read."""

    model: str  # name@N
    vectors: np.ndarray  # (N, D) float32
    tokens: int

    def lists(self) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.vectors]


def load_embedder(ref: str, store: Store | None = None, cache_size: int | None = None) -> TextModel:
    """Embedder ``ref``, loaded; a one-line InvalidInput when it is a model that does not embed."""
    model = load(ref, store, cache_size)
    if not isinstance(model, TextModel):
        raise InvalidInput(f"model {model.ref} generates images, it does not embed text: use "
                           "/v1/images/generations")
    if model.family.embed is None:
        raise InvalidInput(f"model {model.ref} is a {model.family.name} model: it does not embed "
                           "text (use /v1/completions); embedders are imported encoders "
                           "(genloop import DIR, family embedder)")
    return model


def embed_texts(model: TextModel, texts: Sequence[str], batch_size: int = BATCH) -> Embeddings:
    """The embeddings of ``texts`` by embedder ``model`` (from ``load_embedder``)."""
    if isinstance(texts, str) or not texts:
        raise InvalidInput("input: give one or more texts")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t:
            raise InvalidInput(f"input[{i}]: an empty string cannot be embedded")
    tokenizer, embed = model.tokenizer, model.family.embed
    assert isinstance(tokenizer, EncoderTokenizer) and embed is not None
    lengths = [len(ids) for ids in (tokenizer.encode(t) for t in texts)]
    order = np.argsort([-n for n in lengths], kind="stable")  # similar lengths share a batch
    parts: list[np.ndarray] = []
    with _lock(model.ref), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            ids, mask = tokenizer.encode_batch([texts[i] for i in order[start:start + batch_size]])
            parts.append(embed(model.network, torch.from_numpy(ids), torch.from_numpy(mask)).numpy())
    vectors = np.empty_like(np.concatenate(parts))
    vectors[order] = np.concatenate(parts)
    return Embeddings(model.ref, vectors, sum(lengths))


def embed(ref: str, texts: Sequence[str], store: Store | None = None) -> list[list[float]]:
    """One vector per text from embedder ``ref`` (``name`` or ``name@N``), in order."""
    return embed_texts(load_embedder(ref, store), texts).lists()


def _lock(ref: str) -> threading.Lock:
    """One forward pass at a time per embedder (the cores are few; threads only fight)."""
    with _GUARD:
        return _LOCKS.setdefault(ref, threading.Lock())
