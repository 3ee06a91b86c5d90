"""Text evaluation: likelihood on held-out data and diversity of samples.

Validation loss is the mean next-token cross-entropy (nats) over *every* token of the validation
split, read in non-overlapping windows of the model's context; bits per token = loss / ln 2;
bits per character divides the same total by the number of characters those tokens decode to
(for a character tokenizer the two agree); perplexity = exp(loss).
Any held-out text (``score_text``, ``genloop eval NAME --data FILE``) is read in overlapping
windows instead: a window of the model's context every ``stride`` tokens (half a context by
default), each token scored once, in the first window that holds it after the previous one, so
every token after the first window sees at least ``context - stride`` tokens before it.
Diversity: distinct-n (Li et al. 2016) = unique n-grams / all n-grams across samples; repetition
rate = share of n-grams within a sample that already occurred earlier in it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from genloop.data.text import jsonl_texts, read_text_file
from genloop.errors import InvalidInput
from genloop.generation.text import TextRequest, generate_texts
from genloop.models.family import Family, TextModelConfig
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


def window_bounds(n: int, block: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """``(start, end, first)`` of the windows over ``n`` targets: window ``ids[start:end]``
    predicts ``ids[start + 1:end + 1]`` and scores the targets from position ``first`` on (the
    earlier ones were scored by the window before). A window ends every ``stride`` targets
    (``None``: one context, no overlap) and the last one ends at ``n``, right-aligned, so every
    target is scored exactly once."""
    if n < 1:
        raise ValueError("validation split needs at least 2 tokens")
    block = min(block, n)
    stride = block if stride is None else min(stride, block)
    if stride < 1:
        raise ValueError(f"stride must be at least 1, not {stride}")
    ends = list(range(block, n + 1, stride))
    if ends[-1] != n:
        ends.append(n)
    bounds, scored = [], 0
    for end in ends:
        start = end - block
        bounds.append((start, end, scored - start))
        scored = end
    return bounds


def _window_batch(
    arr: torch.Tensor, bounds: Sequence[tuple[int, int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([arr[s:e] for s, e, _ in bounds])
    y = torch.stack([arr[s + 1 : e + 1] for s, e, _ in bounds])
    for row, (_, _, first) in enumerate(bounds):
        y[row, :first] = -100  # already scored by the previous window
    return x, y


def windows(ids: np.ndarray, block: int, stride: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (N, block) covering every token of ``ids`` once; the tail window is
    right-aligned so no token is skipped (its overlap is masked out of the targets with -100).
    With ``stride`` the windows overlap: see ``window_bounds``."""
    bounds = window_bounds(len(ids) - 1, block, stride)
    return _window_batch(torch.from_numpy(np.asarray(ids, dtype=np.int64)), bounds)


@torch.no_grad()
def validation_nll(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    ids: np.ndarray,
    block: int,
    batch_size: int = 64,
    stride: int | None = None,
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) and token count over all of ``ids``, in windows of
    ``block`` every ``stride`` tokens (``None``: no overlap); built a batch at a time."""
    bounds = window_bounds(len(ids) - 1, block, stride)
    arr = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    total, count = 0.0, 0
    for i in range(0, len(bounds), batch_size):
        xb, yb = _window_batch(arr, bounds[i : i + batch_size])
        logits = logits_fn(xb)
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


def logits_of(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The next-token logits (B, T, V) of a text network for inputs (B, T)."""

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out[0] if isinstance(out, tuple) else out  # recurrent families return a state too

    return logits_fn


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
    nll, tokens = validation_nll(logits_of(model), val_ids, cast(TextModelConfig, model.config).block_size)
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


# --- any held-out text ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TextScore:
    """How well a text model predicts a given text: totals, and the rates derived from them."""

    nll: float  # nats, summed over the scored tokens
    tokens: int  # tokens scored: every token of the text (and one <eos> between documents)
    characters: int  # characters those tokens stand for (an <eos> counts one)
    unknown_characters: int  # characters of the text the tokenizer maps to <unk> (still scored)
    unknown: str  # those characters, distinct, most frequent first
    context: int  # tokens per window: the model's context
    stride: int  # tokens between the starts of two windows

    @property
    def nats_per_token(self) -> float:
        return self.nll / self.tokens

    @property
    def nats_per_char(self) -> float:
        return self.nll / self.characters

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)

    @property
    def unknown_share(self) -> float:
        return self.unknown_characters / self.characters

    def metrics(self) -> dict[str, float | int | str]:
        return {
            "nats_per_token": self.nats_per_token, "nats_per_char": self.nats_per_char,
            "bits_per_token": self.nats_per_token / math.log(2), "bits_per_char": self.bits_per_char,
            "perplexity": math.exp(min(self.nats_per_token, 50.0)), "tokens": self.tokens,
            "characters": self.characters, "unknown_characters": self.unknown_characters,
            "unknown_share": self.unknown_share, "unknown": self.unknown, "context": self.context,
            "stride": self.stride,
        }


def unknown_characters(tokenizer: Tokenizer, text: str) -> Counter[str]:
    """The characters of ``text`` that ``tokenizer`` turns into ``<unk>``, with their counts
    (a character tokenizer knows only the characters it was trained on; byte-level BPE all)."""
    counts = Counter(text)
    return Counter({c: n for c, n in counts.items() if tokenizer.unk_id in tokenizer.encode(c)})


@torch.no_grad()
def score_text(
    family: Family,
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    text: str | Sequence[str],
    *,
    stride: int | None = None,
    batch_size: int = 64,
) -> TextScore:
    """Negative log-likelihood of ``text`` (one string, or documents) under a text model.

    Each document is read as the training data is: preceded by ``<eos>``, so its first token is
    predicted from the start of a document and scored like the rest (between documents, that
    ``<eos>`` is itself a scored token and counts one character). The tokens are read in windows
    of the model's context ``C``, one every ``stride`` tokens (default ``C // 2``): each token is
    scored once, in the window where it first appears after the previous window's end, so every
    token past the first window is predicted from at least ``C - stride`` (half a context by
    default) tokens before it. Characters the tokenizer does not know are scored as ``<unk>``
    and counted. ``family`` is the model's family, as for ``evaluate_text``: the network's
    logits are read directly today (``logits_of``); the contract's ``log_probs`` can take over.
    """
    docs = [text] if isinstance(text, str) else [d for d in text if d]
    if not any(d.strip() for d in docs):
        raise InvalidInput("no text to evaluate: the text is empty or only whitespace")
    context = int(cast(TextModelConfig, model.config).block_size)
    stride = max(1, context // 2) if stride is None else stride
    if not 1 <= stride <= context:
        raise InvalidInput(f"stride must be between 1 and the model's context {context}, not {stride}")
    ids = [i for d in docs for i in (tokenizer.eos_id, *tokenizer.encode(d))]
    unknown = Counter[str]()
    for d in docs:
        unknown.update(unknown_characters(tokenizer, d))
    model.eval()
    nll, tokens = validation_nll(logits_of(model), np.asarray(ids), context, batch_size, stride)
    return TextScore(
        nll=nll, tokens=tokens, characters=sum(len(d) for d in docs) + len(docs) - 1,
        unknown_characters=sum(unknown.values()), unknown="".join(c for c, _ in unknown.most_common()),
        context=context, stride=stride,
    )


def read_documents(path: str | Path, field: str = "text") -> list[str]:
    """The text of a ``.txt`` (one document) or of each row of a ``.jsonl`` (its ``field``; a
    list of strings is joined), as UTF-8 with line ends made ``\\n``; bad files name the fault."""
    path = Path(path)
    if path.suffix.lower() not in (".txt", ".jsonl"):
        raise InvalidInput(f"{path}: give a .txt or .jsonl file")
    docs = [read_text_file(path)] if path.suffix.lower() == ".txt" else jsonl_texts(path, field)
    if not any(d.strip() for d in docs):
        raise InvalidInput(f"{path} holds no text to evaluate")
    return docs


def evaluate(family: Family, model: torch.nn.Module, model_config: Any, dataset: Any,
             config: EvalConfig, *, seed: int, context: Any) -> tuple[dict[str, float], list[str]]:
    """The loop's final evaluation of a text model (``evaluation/kinds.py``): the whole
    validation split (or its first 64 contexts unless ``full_validation``) and seeded samples."""
    val_ids = np.asarray(dataset.val)
    if not config.full_validation:
        val_ids = val_ids[: 64 * model_config.block_size]
    if family.embed is not None:  # an encoder: no next-token head, no samples; its masked-LM figures
        return evaluate_masked(model, val_ids, model_config.block_size), []
    return evaluate_text(family, model, dataset.tokenizer, val_ids, config, seed=seed)


@torch.no_grad()
def evaluate_masked(model: torch.nn.Module, val_ids: np.ndarray, block: int,
                    batch: int = 32) -> dict[str, float]:
    """An encoder's masked-LM loss and accuracy over the validation split cut into ``block``-token
    rows, masked as in training (``models/embedder.py`` ``mlm_loss``; seeded per row batch)."""
    from genloop.models.embedder import mlm_loss

    model.eval()
    rows = torch.from_numpy(np.asarray(val_ids[: len(val_ids) // block * block], dtype=np.int64))
    rows = rows.view(-1, block).to(next(model.parameters()).device)
    if len(rows) == 0:
        raise InvalidInput(f"the validation split holds fewer than {block} tokens: nothing to evaluate")
    loss = correct = 0.0
    for start in range(0, len(rows), batch):
        part = rows[start: start + batch]
        out = mlm_loss(model, part, generator=torch.Generator().manual_seed(start))  # type: ignore[arg-type]
        loss += float(out["loss"]) * len(part)
        correct += float(out["masked_accuracy"]) * len(part)
    return {"mlm_loss": loss / len(rows), "masked_accuracy": correct / len(rows)}
