"""Text evaluation: likelihood on held-out data and diversity of samples.

Validation loss is the mean next-token cross-entropy (nats) over *every* token of the validation
split, read in non-overlapping windows of the model's context; bits per token = loss / ln 2;
bits per character divides the same total by the number of characters those tokens decode to
(for a character tokenizer the two agree); perplexity = exp(loss).
Diversity: distinct-n (Li et al. 2016) = unique n-grams / all n-grams across samples; repetition
rate = share of n-grams within a sample that already occurred earlier in it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from genloop.generation.text import TextRequest, generate_texts
from genloop.models.family import Family
from genloop.tokenizers import Tokenizer


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["text"] = "text"

    full_validation: bool = Field(True, description="final loss over the whole validation split")
    num_samples: int = Field(4, ge=0, le=64, description="samples for diversity and the card")
    sample_tokens: int = Field(200, ge=1, le=10000)
    prompt: str = Field("", description="prompt for the card's samples ('' = start of text)")
    temperature: float = Field(0.8, ge=0, le=5)
    top_k: int | None = Field(None, ge=1)


def windows(ids: np.ndarray, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (N, block) covering every token of ``ids`` once; the tail window is
    right-aligned so no token is skipped (its overlap is masked out of the targets with -100)."""
    n = len(ids) - 1
    if n < 1:
        raise ValueError("validation split needs at least 2 tokens")
    block = min(block, n)
    starts = list(range(0, n - block + 1, block))
    tail = n - (starts[-1] + block)
    arr = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    x = torch.stack([arr[s : s + block] for s in starts])
    y = torch.stack([arr[s + 1 : s + 1 + block] for s in starts])
    if tail > 0:
        s = n - block
        xt, yt = arr[s : s + block].clone(), arr[s + 1 : s + 1 + block].clone()
        yt[: block - tail] = -100  # already scored by the previous window
        x, y = torch.cat([x, xt[None]]), torch.cat([y, yt[None]])
    return x, y


@torch.no_grad()
def validation_nll(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    ids: np.ndarray,
    block: int,
    batch_size: int = 64,
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) and token count over all of ``ids``."""
    x, y = windows(ids, block)
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = logits_fn(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        total += F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), yb.reshape(-1),
            ignore_index=-100, reduction="sum",
        ).item()
        count += int((yb != -100).sum())
    return total, count


def likelihood_metrics(total_nll: float, tokens: int, characters: int) -> dict[str, float]:
    loss = total_nll / tokens
    return {
        "val_loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "bits_per_token": loss / math.log(2),
        "bits_per_char": total_nll / max(characters, 1) / math.log(2),
    }


def count_characters(tokenizer: Tokenizer, ids: np.ndarray) -> int:
    """Characters the scored tokens stand for (every token after the first; <eos> counts one)."""
    if tokenizer.kind == "char":
        return len(ids) - 1
    tail = [int(i) for i in ids[1:]]
    eos = sum(1 for i in tail if i == tokenizer.eos_id)
    return len(tokenizer.decode(tail)) + eos


def evaluate_text(
    family: Family,
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    val_ids: np.ndarray,
    config: EvalConfig,
    seed: int = 0,
) -> tuple[dict[str, float], list[str]]:
    """Likelihood over ``val_ids`` and diversity of ``config.num_samples`` seeded samples."""
    model.eval()
    block = model.config.block_size

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out[0] if isinstance(out, tuple) else out  # recurrent families return a state too

    nll, tokens = validation_nll(logits_fn, val_ids, block)
    metrics = likelihood_metrics(nll, tokens, count_characters(tokenizer, val_ids))
    samples: list[str] = []
    if config.num_samples:
        request = TextRequest(
            prompt=config.prompt, max_new_tokens=config.sample_tokens,
            temperature=config.temperature, top_k=config.top_k,
            num_samples=config.num_samples, seed=seed,
        )
        samples = [o.text for o in generate_texts(family, model, tokenizer, request)]
        metrics.update(diversity_metrics(samples))
    return metrics, samples


def units(text: str) -> list[str]:
    """Words for spaced scripts, characters otherwise (Chinese has no spaces between words)."""
    words = text.split()
    return words if len(words) > 1 else list(text)


def ngrams(tokens: Sequence, n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(samples: Sequence[Sequence], n: int) -> float:
    """Unique n-grams / total n-grams, pooled over all samples (0 when there are none)."""
    grams = [g for s in samples for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(samples: Sequence[Sequence], n: int = 4) -> float:
    """Share of n-grams that repeat an earlier n-gram of the same sample, averaged over samples."""
    rates = []
    for s in samples:
        grams = ngrams(s, n)
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def diversity_metrics(samples: Sequence[str]) -> dict[str, float]:
    """distinct-1/2 and 4-gram repetition of generated texts, over words (or characters)."""
    split = [units(s) for s in samples]
    return {
        "distinct_1": distinct_n(split, 1),
        "distinct_2": distinct_n(split, 2),
        "repetition_rate": repetition_rate(split, 4),
    }
