"""Batches of the ``preferences`` kind, as the preference objectives read them.

Paired records (prompt, chosen, rejected) become a ``PreferenceBatch``: the same prompts with
each completion, as two masked ``SequenceBatch``es (``models.family.sequence_batch``), so an
objective compares log p(chosen | prompt) with log p(rejected | prompt) row by row (DPO, a
reward model's Bradley–Terry loss). Unpaired records (prompt, completion, desirable) become a
``LabelledBatch`` (KTO), which also holds the batch's mismatched pairs — prompt i with the
completion of record i+1 (the last with the first) — from which KTO estimates the KL divergence
of the model from its parent. Training batches are pure functions of (seed, step, micro-batch,
rank).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from genloop.data.preferences import PreferencesDataset
from genloop.data.records import RecordSplit
from genloop.models.family import SequenceBatch, sequence_batch
from genloop.training.batches import step_generator
from genloop.training.pair_batches import RecordBatches


@dataclass
class PreferenceBatch:
    chosen: SequenceBatch  # row i: prompt i + its preferred completion
    rejected: SequenceBatch  # row i: prompt i + its rejected completion


@dataclass
class LabelledBatch:
    completions: SequenceBatch  # row i: prompt i + its completion
    desirable: torch.Tensor  # (B,) bool
    mismatched: SequenceBatch  # row i: prompt i + the completion of row i+1 (mod B)


def _to(b: SequenceBatch, device: torch.device) -> SequenceBatch:
    return SequenceBatch(b.inputs.to(device), b.targets.to(device), b.mask.to(device))


class PreferenceBatches(RecordBatches):
    unit = "pairs"
    default_objective = "dpo"
    dataset: PreferencesDataset

    def units(self, config: Any, batch: int) -> int:
        return batch

    def _batch(self, split: RecordSplit, idx: Sequence[int], block: int,
               device: torch.device) -> PreferenceBatch | LabelledBatch:
        f = split.fields
        prompts = [f["prompt"][i] for i in idx]
        if split.labels is None:
            return PreferenceBatch(
                _to(sequence_batch(prompts, [f["chosen"][i] for i in idx], block, self.pad), device),
                _to(sequence_batch(prompts, [f["rejected"][i] for i in idx], block, self.pad), device))
        completions = [f["completion"][i] for i in idx]
        shifted = completions[1:] + completions[:1]
        return LabelledBatch(
            _to(sequence_batch(prompts, completions, block, self.pad), device),
            torch.from_numpy(split.labels[list(idx)].astype(bool)).to(device),
            _to(sequence_batch(prompts, shifted, block, self.pad), device))

    def train_batch(self, config: Any, step: int, micro: int, *, seed: int, rank: int, batch: int,
                    device: torch.device) -> PreferenceBatch | LabelledBatch:
        g = step_generator(seed, step, micro, rank)
        idx = torch.randint(0, len(self.dataset.train), (batch,), generator=g).tolist()
        return self._batch(self.dataset.train, idx, config.block_size, device)

    def val_batches(self, config: Any, count: int, batch: int, *, seed: int,
                    device: torch.device) -> Iterator[PreferenceBatch | LabelledBatch]:
        n = min(len(self.dataset.val), count * batch)
        for start in range(0, n, batch):
            yield self._batch(self.dataset.val, range(start, min(n, start + batch)),
                              config.block_size, device)
