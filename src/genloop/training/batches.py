"""Batches of the text, images and image_text kinds (found through ``training/kinds.py``, like every kind's).

The loop asks only this of its data: the shape fields it fills into the model config, the unit it
counts throughput in, a training batch that is a pure function of (seed, step, micro-batch, rank)
— so a resumed run replays exactly — and a fixed set of validation batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from genloop.data.image_text import ImageTextDataset
from genloop.data.images import ImageDataset
from genloop.data.records import Ragged
from genloop.data.text import TextDataset
from genloop.errors import GenloopError, RecipeError
from genloop.models.family import ImageBatch, ImageTextBatch


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """The generator of one micro-batch: a pure function of (seed, step, micro-batch, rank)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 4099 + micro * 131 + rank)


def batch_at(
    data: torch.Tensor, step: int, micro: int, *, seed: int, rank: int, batch: int, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of ``data``, a pure function of (seed, step, micro-batch, rank)."""
    g = step_generator(seed, step, micro, rank)
    starts = torch.randint(0, len(data) - block - 1, (batch,), generator=g)
    idx = starts[:, None] + torch.arange(block + 1)  # (B, T+1)
    window = data[idx]
    return window[:, :-1], window[:, 1:]


def warmup_size(step: int, steps: int, floor: int, full: int) -> int:
    """A size that grows over the first ``steps`` steps: floor, 2·floor, 4·floor, … (each held for
    an equal share of the steps), then ``full``. Few distinct sizes, so a compiled model
    recompiles only a few times."""
    if steps <= 0 or step >= steps or floor >= full:
        return full
    sizes = [floor]
    while sizes[-1] * 2 < full:
        sizes.append(sizes[-1] * 2)
    return sizes[step * len(sizes) // steps]


def warm_up(batches: Any, cfg: Any) -> Any:
    """``batches`` with the recipe's sequence-length and batch-size warmup (``train.*_warmup_steps``);
    text batches only."""
    if not (cfg.seq_len_warmup_steps or cfg.batch_warmup_steps):
        return batches
    if not isinstance(batches, TextBatches):
        raise RecipeError("train.seq_len_warmup_steps and train.batch_warmup_steps apply to text "
                          "data only: set them to 0")
    batches.seq_len_warmup = (cfg.seq_len_warmup_steps, cfg.seq_len_floor)
    batches.batch_warmup = (cfg.batch_warmup_steps, cfg.batch_floor)
    return batches


class TextBatches:
    """Windows of ``block`` tokens (inputs, next-token targets); during a warmup (``warm_up``),
    shorter windows and/or fewer of them."""

    unit = "tokens"
    default_objective = "likelihood"

    def __init__(self, dataset: TextDataset):
        self.dataset = dataset
        self.train = torch.from_numpy(np.asarray(dataset.train, dtype=np.int64))
        self.val = torch.from_numpy(np.asarray(dataset.val, dtype=np.int64))
        self.seq_len_warmup = (0, 0)  # (steps, first window length)
        self.batch_warmup = (0, 0)  # (steps, first batch size)

    def fill(self) -> dict[str, Any]:
        return {"vocab_size": self.dataset.tokenizer.vocab_size}

    def check(self, config: Any) -> None:
        if len(self.train) < config.block_size + 2:
            raise GenloopError(
                f"training split has {len(self.train)} tokens, fewer than one context of "
                f"{config.block_size}: use more text or a smaller model.config.block_size"
            )

    def units(self, config: Any, batch: int) -> int:
        return batch * config.block_size

    def train_batch(self, config: Any, step: int, micro: int, *, seed: int, rank: int, batch: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        block = warmup_size(step, *self.seq_len_warmup, config.block_size)
        batch = warmup_size(step, *self.batch_warmup, batch)
        x, y = batch_at(self.train, step, micro, seed=seed, rank=rank, batch=batch, block=block)
        return x.to(device), y.to(device)

    def val_batches(self, config: Any, count: int, batch: int, *, seed: int,
                    device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        span = min(config.block_size, len(self.val) - 2)
        g = torch.Generator().manual_seed(seed + 1)  # the same windows every time
        for _ in range(count):
            starts = torch.randint(0, len(self.val) - span - 1, (batch,), generator=g)
            w = self.val[starts[:, None] + torch.arange(span + 1)].to(device)
            yield w[:, :-1], w[:, 1:]


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (B, C, H, W) → float in [−1, 1], the range every image family trains on."""
    return images.float().div_(127.5).sub_(1.0)


class ImageBatches:
    """Random images with their labels, and a generator for the objective's own noise."""

    unit = "images"
    default_objective = "likelihood"

    def __init__(self, dataset: ImageDataset):
        self.dataset = dataset
        self.train = torch.from_numpy(np.array(dataset.train))  # in memory, writable
        self.train_labels = torch.from_numpy(np.array(dataset.train_labels, dtype=np.int64))
        self.test = torch.from_numpy(np.array(dataset.test))
        self.test_labels = torch.from_numpy(np.array(dataset.test_labels, dtype=np.int64))

    def fill(self) -> dict[str, Any]:
        d = self.dataset
        return {"channels": d.channels, "image_size": d.image_size, "num_classes": d.num_classes}

    def check(self, config: Any) -> None:
        if len(self.train) == 0:
            raise GenloopError(f"dataset {self.dataset.name} has no training images")

    def units(self, config: Any, batch: int) -> int:
        return batch

    def train_batch(self, config: Any, step: int, micro: int, *, seed: int, rank: int, batch: int,
                    device: torch.device) -> ImageBatch:
        g = step_generator(seed, step, micro, rank)
        idx = torch.randint(0, len(self.train), (batch,), generator=g)
        # the same generator then draws the objective's noise: still a pure function of the step
        return ImageBatch(to_unit_range(self.train[idx]).to(device), self.train_labels[idx].to(device), g)

    def val_batches(self, config: Any, count: int, batch: int, *, seed: int,
                    device: torch.device) -> Iterator[ImageBatch]:
        images = self.test if len(self.test) else self.train
        labels = self.test_labels if len(self.test) else self.train_labels
        n = min(len(images), count * batch)
        order = torch.linspace(0, len(images) - 1, n).long()  # spread over the split, fixed
        for i, start in enumerate(range(0, n, batch)):
            idx = order[start : start + batch]
            g = torch.Generator().manual_seed(seed + 1 + i)  # the same noise every time
            yield ImageBatch(to_unit_range(images[idx]).to(device), labels[idx].to(device), g)


def padded_captions(captions: Ragged, pad: int,
                    width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every caption of a split as (N, T) int64 ids right-padded with ``pad`` and their (N, T)
    bool mask (True on the caption's own tokens); T = ``width``, or the longest caption."""
    lengths = captions.lengths()
    T = int(lengths.max(initial=0)) if width is None else width
    ids = np.full((len(captions), max(T, 1)), pad, dtype=np.int64)
    mask = np.zeros(ids.shape, dtype=bool)
    for i in range(len(captions)):
        row = captions[i][:T]
        ids[i, : len(row)], mask[i, : len(row)] = row, True
    return torch.from_numpy(ids), torch.from_numpy(mask)


class ImageTextBatches(ImageBatches):
    """Random images with their captions (padded with end-of-text, masked), their labels and,
    when the data has them, their attribute ids; a generator for the objective's own noise.

    Captions are padded to one width for the whole dataset (its longest caption), so every
    batch has the same shape; ``check`` refuses a model whose text encoder reads fewer tokens."""

    def __init__(self, dataset: ImageTextDataset):
        super().__init__(dataset)
        self.dataset: ImageTextDataset = dataset
        pad = dataset.tokenizer.eos_id
        width = max(int(dataset.train_captions.lengths().max(initial=0)),
                    int(dataset.test_captions.lengths().max(initial=0)), 1)
        self.width = width
        self.train_captions, self.train_mask = padded_captions(dataset.train_captions, pad, width)
        self.test_captions, self.test_mask = padded_captions(dataset.test_captions, pad, width)
        attributes = getattr(dataset, "attributes", None)  # shapes sources only
        self.train_attributes = self.test_attributes = None
        if attributes is not None:
            self.train_attributes = torch.from_numpy(np.array(attributes["train"], dtype=np.int64))
            self.test_attributes = torch.from_numpy(np.array(attributes["test"], dtype=np.int64))

    def fill(self) -> dict[str, Any]:
        fill = {**super().fill(), "vocab_size": self.dataset.tokenizer.vocab_size}
        schema = getattr(self.dataset, "schema", None)
        if schema is not None:
            fill["attribute_sizes"] = tuple(len(values) for values in schema["values"])
        return fill

    def check(self, config: Any) -> None:
        super().check(config)
        spec = getattr(config, "text_encoder", None)
        if spec is not None and self.width > spec.max_tokens:
            raise GenloopError(
                f"dataset {self.dataset.name} has captions of up to {self.width} tokens; the text "
                f"encoder reads at most {spec.max_tokens}: raise model.config.text_encoder.max_tokens "
                "or use a word tokenizer"
            )

    def _batch(self, split: str, idx: torch.Tensor, g: torch.Generator,
               device: torch.device) -> ImageTextBatch:
        train = split == "train"
        images, labels = (self.train, self.train_labels) if train else (self.test, self.test_labels)
        ids, mask = (self.train_captions, self.train_mask) if train else (self.test_captions, self.test_mask)
        attributes = self.train_attributes if train else self.test_attributes
        return ImageTextBatch(
            to_unit_range(images[idx]).to(device), labels[idx].to(device), g,
            captions=ids[idx].to(device), caption_mask=mask[idx].to(device),
            attributes=None if attributes is None else attributes[idx].to(device))

    def train_batch(self, config: Any, step: int, micro: int, *, seed: int, rank: int, batch: int,
                    device: torch.device) -> ImageTextBatch:
        g = step_generator(seed, step, micro, rank)
        idx = torch.randint(0, len(self.train), (batch,), generator=g)
        return self._batch("train", idx, g, device)

    def val_batches(self, config: Any, count: int, batch: int, *, seed: int,
                    device: torch.device) -> Iterator[ImageTextBatch]:
        split = "test" if len(self.test) else "train"
        n = min(len(self.test if split == "test" else self.train), count * batch)
        total = len(self.test if split == "test" else self.train)
        order = torch.linspace(0, total - 1, n).long()  # spread over the split, fixed
        for i, start in enumerate(range(0, n, batch)):
            g = torch.Generator().manual_seed(seed + 1 + i)  # the same noise every time
            yield self._batch(split, order[start : start + batch], g, device)
