"""Evaluation of the ``pairs`` kind: how well a text model predicts held-out completions.

For each validation record, the log-likelihood of its completion given its prompt
(``Family.log_probs`` over the completion tokens only, the end-of-text token included):
``val_loss`` in nats per completion token (what the ``pairs`` objective minimises) and
``completion_bits_per_char``, the same total in bits per character of the completions' text.
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field

from genloop.data.pairs import PairsDataset
from genloop.models.family import Family, TextModelConfig, sequence_batch


class PairsEvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["pairs"] = "pairs"
    max_records: int | None = Field(None, ge=1, description="validation records scored (None: all)")


@torch.no_grad()
def evaluate_pairs(family: Family, model: torch.nn.Module, dataset: PairsDataset, *,
                   batch_size: int = 32, max_records: int | None = None) -> dict[str, float]:
    if family.log_probs is None:
        raise ValueError(f"{family.name} has no log_probs: pairs are evaluated on text families")
    block = cast(TextModelConfig, model.config).block_size
    pad = dataset.tokenizer.eos_id
    prompts, completions = dataset.val.fields["prompt"], dataset.val.fields["completion"]
    n = len(dataset.val) if max_records is None else min(len(dataset.val), max_records)
    total, tokens, chars = 0.0, 0, 0
    model.eval()
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        batch = sequence_batch([prompts[i] for i in idx], [completions[i] for i in idx], block, pad)
        total += float(family.log_probs(model, batch).sum())
        tokens += int(batch.mask.sum())
        chars += sum(len(dataset.tokenizer.decode(completions[i][:-1].tolist())) + 1 for i in idx)
    nats = -total / max(tokens, 1)
    return {"val_loss": nats, "completion_bits_per_char": -total / max(chars, 1) / math.log(2),
            "val_records": float(n)}


def evaluate(family: Family, model: torch.nn.Module, model_config: Any, dataset: PairsDataset,
             config: PairsEvalConfig, *, seed: int, context: Any) -> tuple[dict[str, float], list[str]]:
    """The loop's final evaluation of a model tuned on pairs (``evaluation/kinds.py``)."""
    return evaluate_pairs(family, model, dataset, max_records=config.max_records), []
