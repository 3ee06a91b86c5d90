"""Batches of the ``pairs`` kind: prompt → completion records as masked token sequences.

Each record becomes one sequence ``prompt + completion`` (the completion ends with end-of-text),
cut to the model's context: when it is longer, the prompt loses its oldest tokens first (the
completion is what is learned), then the completion its last ones. ``inputs`` are the sequence
without its last token, ``targets`` without its first; ``mask`` is True on targets that are
completion tokens, so the ``pairs`` objective learns the completion given the prompt and never
the prompt itself. Sequences of a batch are right-padded with end-of-text (masked out).

A training batch is a pure function of (seed, step, micro-batch, rank), like every kind's, so a
resumed run replays exactly; the validation batches are the first validation records, in order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from genloop.data.pairs import PairsDataset
from genloop.data.preferences import PreferencesDataset
from genloop.data.records import RecordSplit
from genloop.errors import GenloopError
from genloop.models.family import SequenceBatch, sequence_batch
from genloop.training.batches import step_generator


def _records(split: RecordSplit, idx: Sequence[int], block: int, pad: int) -> SequenceBatch:
    prompts, completions = split.fields["prompt"], split.fields["completion"]
    return sequence_batch([prompts[i] for i in idx], [completions[i] for i in idx], block, pad)


class RecordBatches:
    """What the batches of every record kind share: the tokenizer's vocabulary fills the model
    config, sequences are padded with end-of-text, and both splits must hold records."""

    def __init__(self, dataset: PairsDataset | PreferencesDataset):
        self.dataset = dataset
        self.pad = dataset.tokenizer.eos_id

    def fill(self) -> dict[str, Any]:
        return {"vocab_size": self.dataset.tokenizer.vocab_size}

    def check(self, config: Any) -> None:
        if len(self.dataset.train) == 0 or len(self.dataset.val) == 0:
            raise GenloopError(f"dataset {self.dataset.name} has no training or validation records")


class PairBatches(RecordBatches):
    """Random prompt → completion records, masked on the completion."""

    unit = "tokens"
    default_objective = "pairs"
    dataset: PairsDataset

    def units(self, config: Any, batch: int) -> int:
        return batch * config.block_size  # an upper bound: records are often shorter

    def train_batch(self, config: Any, step: int, micro: int, *, seed: int, rank: int, batch: int,
                    device: torch.device) -> SequenceBatch:
        g = step_generator(seed, step, micro, rank)
        idx = torch.randint(0, len(self.dataset.train), (batch,), generator=g).tolist()
        return _to(_records(self.dataset.train, idx, config.block_size, self.pad), device)

    def val_batches(self, config: Any, count: int, batch: int, *, seed: int,
                    device: torch.device) -> Iterator[SequenceBatch]:
        n = min(len(self.dataset.val), count * batch)
        for start in range(0, n, batch):
            idx = list(range(start, min(n, start + batch)))
            yield _to(_records(self.dataset.val, idx, config.block_size, self.pad), device)


def _to(b: SequenceBatch, device: torch.device) -> SequenceBatch:
    return SequenceBatch(b.inputs.to(device), b.targets.to(device), b.mask.to(device))
