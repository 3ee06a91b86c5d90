"""Evaluation of the ``preferences`` kind: does the model prefer what people preferred?

Paired records: the share of validation pairs whose chosen completion the model finds more likely
than the rejected one (``preference_accuracy``, by the log-likelihood of each completion given
the prompt, ``Family.log_probs``) and the mean margin in nats. Unpaired records: the mean
log-likelihood per token of desirable and of undesirable completions, and their gap.

A reward model (``Family.score``) is judged by its score instead: the share of validation pairs
it scores chosen above rejected (held-out pair accuracy) and the mean margin r(chosen) −
r(rejected) (``reward_margin``); unpaired, the mean score of desirable and undesirable
completions and their gap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field

from genloop.data.preferences import PreferencesDataset
from genloop.models.family import Family, SequenceBatch, TextModelConfig, sequence_batch


class PreferencesEvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["preferences"] = "preferences"
    max_records: int | None = Field(None, ge=1, description="validation records scored (None: all)")


@torch.no_grad()
def evaluate_preferences(family: Family, model: torch.nn.Module, dataset: PreferencesDataset, *,
                         batch_size: int = 32, max_records: int | None = None) -> dict[str, float]:
    if family.score is not None:
        return _evaluate_scores(family.score, model, dataset, batch_size, max_records)
    log_probs = family.log_probs
    if log_probs is None:
        raise ValueError(f"{family.name} has no log_probs: preferences are evaluated on text families")
    block, pad = cast(TextModelConfig, model.config).block_size, dataset.tokenizer.eos_id
    split = dataset.val
    f = split.fields
    n = len(split) if max_records is None else min(len(split), max_records)
    model.eval()

    def scores(name: str, idx: range) -> tuple[torch.Tensor, torch.Tensor]:
        b = sequence_batch([f["prompt"][i] for i in idx], [f[name][i] for i in idx], block, pad)
        return log_probs(model, b), b.mask.sum(dim=1)

    if dataset.paired:
        wins, margin = 0.0, 0.0
        for start in range(0, n, batch_size):
            idx = range(start, min(n, start + batch_size))
            chosen, _ = scores("chosen", idx)
            rejected, _ = scores("rejected", idx)
            wins += float((chosen > rejected).sum())
            margin += float((chosen - rejected).sum())
        return {"preference_accuracy": wins / n, "preference_margin_nats": margin / n,
                "val_records": float(n)}
    assert split.labels is not None
    totals = {True: [0.0, 0], False: [0.0, 0]}
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        lp, tokens = scores("completion", idx)
        for j, i in enumerate(idx):
            t = totals[bool(split.labels[i])]
            t[0] += float(lp[j])
            t[1] += int(tokens[j])
    good = totals[True][0] / max(totals[True][1], 1)
    bad = totals[False][0] / max(totals[False][1], 1)
    return {"desirable_nats_per_token": good, "undesirable_nats_per_token": bad,
            "desirability_gap_nats": good - bad, "val_records": float(n)}


def _evaluate_scores(score: Callable[[Any, SequenceBatch], torch.Tensor], model: torch.nn.Module,
                     dataset: PreferencesDataset, batch_size: int,
                     max_records: int | None) -> dict[str, float]:
    """A reward model's figures: by its score of each completion given the prompt."""
    block, pad = cast(TextModelConfig, model.config).block_size, dataset.tokenizer.eos_id
    split = dataset.val
    f = split.fields
    n = len(split) if max_records is None else min(len(split), max_records)
    model.eval()

    def scores(name: str) -> torch.Tensor:
        parts = [score(model, sequence_batch([f["prompt"][i] for i in idx], [f[name][i] for i in idx],
                                             block, pad))
                 for idx in (range(s, min(n, s + batch_size)) for s in range(0, n, batch_size))]
        return torch.cat(parts) if parts else torch.zeros(0)

    if dataset.paired:
        margin = scores("chosen") - scores("rejected")
        return {"preference_accuracy": float((margin > 0).float().mean()) if n else 0.0,
                "reward_margin": float(margin.mean()) if n else 0.0, "val_records": float(n)}
    assert split.labels is not None
    values, labels = scores("completion"), torch.from_numpy(split.labels[:n].astype(bool))
    good = float(values[labels].mean()) if labels.any() else 0.0
    bad = float(values[~labels].mean()) if (~labels).any() else 0.0
    return {"desirable_score": good, "undesirable_score": bad, "desirability_gap_score": good - bad,
            "val_records": float(n)}


def evaluate(family: Family, model: torch.nn.Module, model_config: Any, dataset: PreferencesDataset,
             config: PreferencesEvalConfig, *, seed: int, context: Any) -> tuple[dict[str, float], list[str]]:
    """The loop's final evaluation of a model tuned on preferences (``evaluation/kinds.py``)."""
    return evaluate_preferences(family, model, dataset, max_records=config.max_records), []
