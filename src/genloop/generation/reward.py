"""Scores of completions, and the ranking best-of-n generation uses.

    score(model, prompts, completions) -> list[float]   a reward model's score of each pair
    mean_logprobs(family, network, tokenizer, prompts, completions) -> list[float]
    ranked(scores, prompts, best_of, n) -> per prompt, the n best candidates' indices

A (prompt, completion) pair is tokenized as the ``preferences`` kind tokenizes its records (the
completion followed by end-of-text) and cut to the context as training cuts it
(``models.family.sequence_batch``), so the score at generation is the one training learned.
Candidates are ranked by a reward model when the request names one, else by the mean log-prob per
token of the completion given the prompt (OpenAI's rule for ``best_of``), teacher-forced: the
model's own log-softmax, before temperature and penalties, as the faces' ``logprobs`` are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch

from genloop.errors import CorruptArtifact, InvalidInput
from genloop.hub.adapters import load_network
from genloop.models.family import Family, SequenceBatch, TextModelConfig, sequence_batch
from genloop.models.modeldir import ModelDir
from genloop.store import Store
from genloop.tokenizers import Tokenizer

BATCH = 32


class Scorer(Protocol):
    """What scoring needs of a loaded model (``generation.service.TextModel`` has it)."""

    family: Family
    network: torch.nn.Module
    tokenizer: Tokenizer


@dataclass
class LoadedReward:
    """A reward model version loaded on its own (``score`` with a ref)."""

    ref: str
    family: Family
    network: torch.nn.Module
    tokenizer: Tokenizer


def load_reward(ref: str, store: Store | None = None) -> LoadedReward:
    """Reward model ``name`` or ``name@N``, loaded (uncached: pass a loaded model to score often)."""
    store = store or Store()
    version = store.resolve(ref)
    directory = ModelDir(Path(version.path))
    family, _config, network = load_network(version, store)
    tokenizer = directory.tokenizer()
    if tokenizer is None:
        raise CorruptArtifact(f"{directory.path}: a text model without its tokenizer")
    model = LoadedReward(version.ref, family, network, tokenizer)
    check_reward(model)
    return model


def check_reward(model: Scorer) -> None:
    """InvalidInput unless ``model`` is a reward model (its family scores sequences)."""
    if model.family.score is None:
        name = getattr(model, "ref", model.family.name)
        raise InvalidInput(f"reward_model: {name} is a {model.family.name} model, not a reward "
                           "model (train one with model.family: reward on preferences)")


def _pairs(tokenizer: Tokenizer, prompts: Sequence[str],
           completions: Sequence[str], eos: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(prompts) != len(completions):
        raise InvalidInput(f"{len(prompts)} prompts for {len(completions)} completions: give one each")
    p = [np.array(tokenizer.encode(t) if t else [], dtype=np.int64) for t in prompts]
    eos_ids = [tokenizer.eos_id]
    c = [np.array(((tokenizer.encode(t) if t else []) + (eos_ids if eos else [])) or eos_ids,
                  dtype=np.int64) for t in completions]
    return p, c


@torch.no_grad()
def _batched(fn: Callable[[SequenceBatch], torch.Tensor], network: torch.nn.Module,
             tokenizer: Tokenizer, prompts: list[np.ndarray], completions: list[np.ndarray],
             batch_size: int) -> list[torch.Tensor]:
    was_training = network.training  # a loaded model is in eval mode already: left untouched,
    if was_training:                 # as the batcher's thread may be running it meanwhile
        network.eval()
    block = cast(TextModelConfig, network.config).block_size
    device = next(network.parameters()).device
    out = []
    try:
        for start in range(0, len(prompts), batch_size):
            b = sequence_batch(prompts[start:start + batch_size],
                               completions[start:start + batch_size], block, tokenizer.eos_id)
            b = SequenceBatch(b.inputs.to(device), b.targets.to(device), b.mask.to(device))
            out.append(torch.stack([fn(b).float().cpu(), b.mask.sum(dim=1).float().cpu()]))
    finally:
        if was_training:
            network.train()
    return out


def score(model: str | Scorer, prompts: Sequence[str], completions: Sequence[str], *,
          batch_size: int = BATCH, store: Store | None = None) -> list[float]:
    """The reward model's score of each (prompt, completion), batched, without gradients;
    ``model`` is a reward model version (``name`` or ``name@N``) or one already loaded
    (``genloop.load``)."""
    scorer = load_reward(model, store) if isinstance(model, str) else model
    check_reward(scorer)
    family_score = scorer.family.score
    assert family_score is not None
    p, c = _pairs(scorer.tokenizer, prompts, completions, eos=True)
    parts = _batched(lambda b: family_score(scorer.network, b), scorer.network, scorer.tokenizer,
                     p, c, batch_size)
    return [float(v) for part in parts for v in part[0]]


def mean_logprobs(family: Family, network: torch.nn.Module, tokenizer: Tokenizer,
                  prompts: Sequence[str], completions: Sequence[str], *,
                  batch_size: int = BATCH) -> list[float]:
    """Per (prompt, completion), the mean log-prob per token of the completion's tokens given
    the prompt (an empty completion: of end-of-text, the model's choice to stop at once)."""
    log_probs = family.log_probs
    if log_probs is None:
        raise InvalidInput(f"best_of: a {family.name} model has no log-probs to rank candidates "
                           "by; name a reward_model")
    p, c = _pairs(tokenizer, prompts, completions, eos=False)
    parts = _batched(lambda b: log_probs(network, b), network, tokenizer, p, c, batch_size)
    return [float(total / max(count, 1.0)) for part in parts
            for total, count in zip(part[0], part[1], strict=True)]


def ranked(scores: Sequence[float], prompts: int, best_of: int, n: int) -> list[list[int]]:
    """Candidate k of prompt j is ``scores[j * best_of + k]``: per prompt, the indices of its
    ``n`` best candidates, highest score first (ties: the earlier candidate)."""
    if len(scores) != prompts * best_of or not 1 <= n <= best_of:
        raise ValueError(f"{len(scores)} scores for {prompts} prompts × best_of {best_of}, n {n}")
    out = []
    for j in range(prompts):
        group = range(j * best_of, (j + 1) * best_of)
        out.append(sorted(group, key=lambda i: (-scores[i], i))[:n])
    return out


__all__ = ["LoadedReward", "Scorer", "check_reward", "load_reward", "mean_logprobs", "ranked",
           "score"]
