"""Feedback → training data: what people said about a model's outputs, as the records its
fine-tuning reads.

- ``dpo`` / ``reward`` (``preferences``, paired): every A/B preference between two text outputs
  of one prompt, and every two rated outputs of one prompt (the higher rating is chosen; equal
  ratings are skipped, as is a pair a preference already compares).
- ``kto`` (``preferences``, unpaired): every rated output, desirable when its votes say so — a
  thumbs up, or a rating at or above ``threshold``, is one vote for; a thumbs down or a lower
  rating one against; outputs with as many of each are skipped.
- ``sft`` (``pairs``): the liked outputs, the desirable ones of ``kto``.

Outputs are grouped by their text: the same completion of the same prompt, made twice, is one
output with both generations. Every record keeps the ``generation_ids`` and ``feedback_ids`` it
came from, and records are ordered by their newest feedback (oldest first), so the same feedback
gives the same file and the same dataset hash, and new feedback adds records at the end. The
counts, the threshold and what was skipped are the dataset's ``origin`` (its meta and its card).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations
from pathlib import Path
from typing import Any

from genloop.config import settings
from genloop.data.formats import write_records
from genloop.errors import InvalidInput
from genloop.store import FeedbackRecord, GenerationRecord, Store, parse_model_ref

# objective → (data kind, preferences form)
OBJECTIVES: dict[str, tuple[str, str | None]] = {
    "sft": ("pairs", None), "dpo": ("preferences", "paired"),
    "reward": ("preferences", "paired"), "kto": ("preferences", "unpaired")}
MIN_RECORDS = {"sft": 8, "dpo": 8, "reward": 8, "kto": 8}
DEFAULT_THRESHOLD = 4
_WHAT = {"sft": "liked outputs", "dpo": "preference pairs", "reward": "preference pairs",
         "kto": "rated outputs"}
SKIPPED = ("not_text", "empty_outputs", "different_prompts", "identical_outputs", "ties",
           "already_preferred", "mixed_votes")


@dataclass(frozen=True)
class FeedbackData:
    """A recipe's data section over the records file, what went into it, and the file."""

    data: dict[str, Any]  # {"kind", "form"?, "source", "name", "origin": summary}
    summary: dict[str, Any]
    path: Path


@dataclass
class _Output:
    """One distinct completion of one prompt, with its generations and the votes on it."""

    prompt: str
    text: str
    generation_ids: list[str] = field(default_factory=list)
    feedback: list[FeedbackRecord] = field(default_factory=list)  # ratings and thumbs

    def add(self, generation: GenerationRecord, feedback: FeedbackRecord) -> None:
        if generation.id not in self.generation_ids:
            self.generation_ids.append(generation.id)
        self.feedback.append(feedback)

    def ratings(self) -> list[int]:
        return [f.value for f in self.feedback if f.kind == "rating"]

    def votes(self, threshold: int) -> int:
        """Votes for minus votes against."""
        return sum((1 if f.value == 1 else -1) if f.kind == "thumbs" else
                   (1 if f.value >= threshold else -1) for f in self.feedback)


@dataclass
class _Record:
    fields: dict[str, Any]
    generation_ids: list[str]
    feedback: list[FeedbackRecord]

    def when(self) -> tuple[datetime, str]:
        newest = max(self.feedback, key=lambda f: (f.created_at, f.id))
        return newest.created_at, newest.id

    def row(self) -> dict[str, Any]:
        once = sorted({f.id: f for f in self.feedback}.values(), key=lambda f: (f.created_at, f.id))
        return {**self.fields, "generation_ids": self.generation_ids,
                "feedback_ids": [f.id for f in once]}


@dataclass
class _Collected:
    counts: dict[str, int]
    skipped: Counter[str]
    records: dict[str, list[_Record]]  # "paired" (preferences, rating_pairs), "unpaired"
    sources: dict[str, int]


def _prompt(g: GenerationRecord) -> str | None:
    """The prompt of a text generation (a chat's is its rendered transcript); None for an image
    (images live in files)."""
    prompt = g.request.get("prompt")
    return prompt if g.file is None and g.output is not None and isinstance(prompt, str) else None


def _collect(store: Store, model: str, threshold: int, visible_to: str | None) -> _Collected:
    store.resolve(model)  # NotFound, listing what exists
    counts = {"ratings": 0, "thumbs_up": 0, "thumbs_down": 0, "preferences": 0}
    skipped: Counter[str] = Counter({k: 0 for k in SKIPPED})
    outputs: dict[tuple[str, str], _Output] = {}
    preferred: dict[tuple[str, str, str], _Record] = {}
    for f, g, other in store.model_feedback(model, visible_to):
        if f.kind == "preference":
            counts["preferences"] += 1
        elif f.kind == "rating":
            counts["ratings"] += 1
        else:
            counts["thumbs_up" if f.value == 1 else "thumbs_down"] += 1
        sides = [g] if other is None else [g, other]
        prompts = [_prompt(s) for s in sides]
        if None in prompts:
            skipped["not_text"] += 1
        elif len(set(prompts)) > 1:
            skipped["different_prompts"] += 1
        elif not all(s.output for s in sides):
            skipped["empty_outputs"] += 1
        elif other is not None and g.output == other.output:
            skipped["identical_outputs"] += 1
        elif other is not None:
            prompt, chosen, rejected = str(prompts[0]), g.output or "", other.output or ""
            record = preferred.setdefault((prompt, chosen, rejected), _Record(
                {"prompt": prompt, "chosen": chosen, "rejected": rejected}, [], []))
            record.generation_ids += [i for i in (g.id, other.id) if i not in record.generation_ids]
            record.feedback.append(f)
        else:
            key = (prompts[0] or "", g.output or "")
            outputs.setdefault(key, _Output(*key)).add(g, f)

    # two rated outputs of one prompt: the higher rating is chosen
    compared = {(p, frozenset((c, r))) for p, c, r in preferred}
    by_prompt: dict[str, list[_Output]] = {}
    for out in outputs.values():
        if out.ratings():
            by_prompt.setdefault(out.prompt, []).append(out)
    rating_pairs = []
    for prompt, rated in by_prompt.items():
        for a, b in combinations(rated, 2):
            mean_a, mean_b = (sum(o.ratings()) / len(o.ratings()) for o in (a, b))
            if (prompt, frozenset((a.text, b.text))) in compared:
                skipped["already_preferred"] += 1
            elif mean_a == mean_b:
                skipped["ties"] += 1
            else:
                better, worse = (a, b) if mean_a > mean_b else (b, a)
                rating_pairs.append(_Record(
                    {"prompt": prompt, "chosen": better.text, "rejected": worse.text},
                    better.generation_ids + worse.generation_ids,
                    [f for o in (better, worse) for f in o.feedback if f.kind == "rating"]))

    # every voted output, desirable or not
    unpaired = []
    for out in outputs.values():
        votes = out.votes(threshold)
        if votes == 0:
            skipped["mixed_votes"] += 1
            continue
        unpaired.append(_Record({"prompt": out.prompt, "completion": out.text, "label": votes > 0},
                                out.generation_ids, out.feedback))

    def ordered(records: list[_Record]) -> list[_Record]:
        return sorted(records, key=_Record.when)

    desirable = sum(r.fields["label"] for r in unpaired)
    return _Collected(
        counts, skipped,
        {"paired": ordered([*preferred.values(), *rating_pairs]), "unpaired": ordered(unpaired)},
        {"preferences": len(preferred), "rating_pairs": len(rating_pairs),
         "desirable": desirable, "undesirable": len(unpaired) - desirable})


def _check_threshold(threshold: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= 5:
        raise InvalidInput(f"threshold {threshold!r} is invalid: a rating from 1 to 5 (ratings at "
                           "or above it are liked)")


def _usable(c: _Collected) -> dict[str, int]:
    paired = len(c.records["paired"])
    return {"sft": c.sources["desirable"], "dpo": paired, "reward": paired,
            "kto": len(c.records["unpaired"])}


def feedback_summary(store: Store, model: str, visible_to: str | None = None, *,
                     threshold: int = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """How much feedback ``model`` ('name' or 'name@N') has, and how many records each
    objective would get from it (``needed``: how many more it takes to tune)."""
    _check_threshold(threshold)
    c = _collect(store, model, threshold, visible_to)
    usable = _usable(c)
    return {"model": model, "generations": store.count_generations(model, visible_to),
            "threshold": threshold, "owner": visible_to, "feedback": c.counts, "usable": usable,
            "min_records": dict(MIN_RECORDS),
            "needed": {k: max(0, MIN_RECORDS[k] - n) for k, n in usable.items()},
            "sources": c.sources, "skipped": dict(c.skipped)}


def feedback_data(store: Store, model: str, objective: str, *, threshold: int = DEFAULT_THRESHOLD,
                  min_records: int | None = None, visible_to: str | None = None) -> FeedbackData:
    """The records ``objective`` (sft, dpo, reward, kto) takes from the feedback on ``model``
    ('name': all its versions; 'name@N': that one), written to a content-hashed JSONL file,
    and the data section that prepares them. Fewer than ``min_records`` (default
    MIN_RECORDS[objective]) is InvalidInput saying how many more are needed; nothing is written."""
    if objective not in OBJECTIVES:
        raise InvalidInput(f"objective {objective!r} is unknown: use one of {', '.join(OBJECTIVES)}")
    _check_threshold(threshold)
    least = MIN_RECORDS[objective] if min_records is None else min_records
    c = _collect(store, model, threshold, visible_to)
    kind, form = OBJECTIVES[objective]
    if objective == "sft":
        records = [_Record({"prompt": r.fields["prompt"], "completion": r.fields["completion"]},
                           r.generation_ids, r.feedback)
                   for r in c.records["unpaired"] if r.fields["label"]]
    else:
        records = c.records[form or "paired"]
    if len(records) < least:
        raise InvalidInput(f"model {model} has {len(records)} usable {_WHAT[objective]} for "
                           f"{objective}; {least - len(records)} more needed (at least {least})")
    sources = ({"preferences": c.sources["preferences"], "rating_pairs": c.sources["rating_pairs"]}
               if form == "paired" else
               {"desirable": c.sources["desirable"], "undesirable": c.sources["undesirable"]}
               if form == "unpaired" else {"liked": len(records)})
    summary = {"from": "feedback", "model": model, "objective": objective, "kind": kind,
               "form": form, "records": len(records), "threshold": threshold,
               "owner": visible_to, "feedback": c.counts, "sources": sources,
               "skipped": dict(c.skipped)}
    path = write_records([r.row() for r in records], settings().home / "records")
    name, version = parse_model_ref(model)
    data: dict[str, Any] = {"kind": kind, "source": str(path), "origin": summary,
                            "name": f"{name}{'' if version is None else f'-v{version}'}"
                                    f"-feedback-{objective}"}
    if form is not None:
        data["form"] = form
    return FeedbackData(data, summary, path)
