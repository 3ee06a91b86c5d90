"""Human feedback on generations: ratings, thumbs and preferences, and the pairs they export.

The HTTP API validates bodies with :class:`RatingIn` and :class:`PreferenceIn` and records them
with :func:`record_feedback` and :func:`record_preference`. :func:`preference_pairs` turns the
preferences between text generations into ``{"prompt", "chosen", "rejected"}`` rows, the shape a
DPO (Rafailov et al. 2023) trainer reads.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from genloop.errors import check_unicode
from genloop.store import FeedbackRecord, Store

COMMENT_LIMIT = 2000



Comment = Annotated[str, Field(max_length=COMMENT_LIMIT), BeforeValidator(check_unicode)]
GenerationId = Annotated[str, Field(pattern=r"^[0-9a-f]{1,64}$")]


class RatingIn(BaseModel):
    """``{"rating": 1-5}`` or ``{"thumbs": "up"|"down"}``, exactly one, and an optional comment."""

    model_config = ConfigDict(extra="forbid")

    rating: Annotated[int, Field(ge=1, le=5, strict=True)] | None = None
    thumbs: Literal["up", "down"] | None = None
    comment: Comment | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RatingIn:
        if (self.rating is None) == (self.thumbs is None):
            raise ValueError("give exactly one of rating (1-5) or thumbs ('up' or 'down')")
        return self


class PreferenceIn(BaseModel):
    """``{"chosen": id, "rejected": id}``: the chosen generation beat the rejected one."""

    model_config = ConfigDict(extra="forbid")

    chosen: GenerationId
    rejected: GenerationId
    comment: Comment | None = None


def record_feedback(
    store: Store,
    generation_id: str,
    body: RatingIn,
    key_id: str | None = None,
    idempotency: tuple[str, str, str] | None = None,
    *,
    owner: str | None = None,
    visible_to: str | None = None,
) -> tuple[FeedbackRecord, bool]:
    """Store a rating (value 1-5) or thumbs (value 1 or -1); returns it and whether it is a
    replay of an earlier request with the same idempotency (scope, key, request_hash).
    ``owner`` is stamped on it; a generation ``visible_to`` does not see is NotFound."""
    if body.rating is not None:
        kind, value = "rating", body.rating
    else:
        kind, value = "thumbs", 1 if body.thumbs == "up" else -1
    return store.add_feedback(
        kind, generation_id, value, comment=body.comment, key_id=key_id, idempotency=idempotency,
        owner=owner, visible_to=visible_to,
    )


def record_preference(
    store: Store,
    body: PreferenceIn,
    key_id: str | None = None,
    idempotency: tuple[str, str, str] | None = None,
    *,
    owner: str | None = None,
    visible_to: str | None = None,
) -> tuple[FeedbackRecord, bool]:
    """Store a preference (generation = chosen, other generation = rejected, value 1), both of
    one owner; as :func:`record_feedback` for ``owner`` and ``visible_to``."""
    return store.add_feedback(
        "preference",
        body.chosen,
        1,
        other_generation_id=body.rejected,
        comment=body.comment,
        key_id=key_id,
        idempotency=idempotency,
        owner=owner,
        visible_to=visible_to,
    )


def preference_pairs(store: Store) -> list[dict[str, str | None]]:
    """Every preference between two text generations of the same prompt, oldest first.

    DPO compares two completions of one prompt, so a preference between generations of
    different prompts, or involving an image, has no pair to give and is left out. Each row
    keeps the ids and model versions, so a trained model's lineage reaches back to the votes.
    """
    pairs: list[dict[str, str | None]] = []
    for feedback, chosen, rejected in store.list_preferences():
        if chosen.file is not None or rejected.file is not None:  # images live in files
            continue
        prompt = chosen.request.get("prompt")
        if not isinstance(prompt, str) or rejected.request.get("prompt") != prompt:
            continue
        pairs.append({
            "prompt": prompt,
            "chosen": chosen.output or "",
            "rejected": rejected.output or "",
            "chosen_id": chosen.id,
            "rejected_id": rejected.id,
            "chosen_model": chosen.model,
            "rejected_model": rejected.model,
            "feedback_id": feedback.id,
            "comment": feedback.comment,
        })
    return pairs
