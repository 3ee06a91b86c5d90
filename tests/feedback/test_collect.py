"""Feedback bodies as the HTTP API receives them, recorded in a real workspace (on SQLite and on
PostgreSQL), and the DPO pairs exported from the preferences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from genloop.errors import InvalidInput, NotFound, validation_message
from genloop.feedback.collect import (
    PreferenceIn,
    RatingIn,
    preference_pairs,
    record_feedback,
    record_preference,
)
from genloop.store import GenerationRecord, Store


@pytest.fixture
def generate(store: Store, workspace: Path) -> Any:
    """``generate(prompt, output, kind="text")`` records one generation of model m@1."""
    staged = workspace / "staging" / "m"
    staged.mkdir(parents=True)
    (staged / "config.json").write_text("{}")
    mv = store.register_model("m", staged, family="gpt")

    def make(prompt: str, output: str, kind: str = "text") -> GenerationRecord:
        request = {"prompt": prompt} if kind == "text" else {"class": output}
        return store.record_generation(model=mv, kind=kind, request=request, seed=0, output=output,
                                       file=None, content_hash=output, timings={})

    return make


@pytest.mark.parametrize("body, error", [
    ({"rating": 0}, "rating: Input should be greater than or equal to 1"),
    ({"rating": 6}, "rating: Input should be less than or equal to 5"),
    ({"rating": "5"}, "rating: Input should be a valid integer"),
    ({"rating": True}, "rating: Input should be a valid integer"),
    ({"thumbs": "sideways"}, "thumbs: Input should be 'up' or 'down'"),
    ({}, "exactly one of rating"),
    ({"rating": 5, "thumbs": "up"}, "exactly one of rating"),
    ({"rating": 5, "stars": 5}, "stars: unknown key"),
    ({"rating": 5, "comment": "x" * 2001}, "comment: String should have at most 2000"),
])
def test_rating_body_is_validated(body: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError) as e:
        RatingIn.model_validate(body)
    assert error in validation_message(e.value)


def test_preference_body_is_validated() -> None:
    assert PreferenceIn.model_validate({"chosen": "a", "rejected": "b"}).comment is None
    for body in [{"chosen": "a"}, {"chosen": "", "rejected": "b"},
                 {"chosen": "a", "rejected": "b", "winner": "a"}]:
        with pytest.raises(ValidationError):
            PreferenceIn.model_validate(body)


def test_record_rating_and_thumbs(store: Store, generate: Any) -> None:
    g = generate("Hi", " there")
    rating, replayed = record_feedback(store, g.id, RatingIn(rating=4, comment="nice"))
    assert (rating.kind, rating.value, rating.comment, replayed) == ("rating", 4, "nice", False)
    down, _ = record_feedback(store, g.id, RatingIn(thumbs="down"))
    up, _ = record_feedback(store, g.id, RatingIn(thumbs="up"))
    assert (down.kind, down.value, up.value) == ("thumbs", -1, 1)
    assert store.list_feedback(g.id) == [up, down, rating]
    with pytest.raises(NotFound, match="'nope'"):
        record_feedback(store, "nope", RatingIn(rating=1))


def test_record_feedback_replays_with_the_same_idempotency_key(store: Store, generate: Any) -> None:
    g = generate("Hi", " there")
    key, _ = store.create_key("laptop")
    claim = (key.id, "retry-1", "hash-of-body")
    first, replayed = record_feedback(store, g.id, RatingIn(rating=2), key.id, claim)
    again, replayed_again = record_feedback(store, g.id, RatingIn(rating=2), key.id, claim)
    assert (replayed, replayed_again) == (False, True)
    assert again == first and first.key_id == key.id
    assert len(store.list_feedback(g.id)) == 1


def test_record_preference(store: Store, generate: Any) -> None:
    a, b = generate("Q:", " good"), generate("Q:", " bad")
    pref, _ = record_preference(store, PreferenceIn(chosen=a.id, rejected=b.id, comment="clearer"))
    assert (pref.kind, pref.generation_id, pref.other_generation_id, pref.value) == (
        "preference", a.id, b.id, 1)
    with pytest.raises(InvalidInput, match="two different generations"):
        record_preference(store, PreferenceIn(chosen=a.id, rejected=a.id))
    with pytest.raises(NotFound, match="'deadbeef'"):
        record_preference(store, PreferenceIn(chosen=a.id, rejected="deadbeef"))


def test_preference_pairs_export_text_pairs_of_one_prompt(store: Store, generate: Any) -> None:
    a, b = generate("Q:", " good"), generate("Q:", " bad")
    c = generate("Other:", " text")
    img1, img2 = generate("", "7", kind="image"), generate("", "3", kind="image")
    first, _ = record_preference(store, PreferenceIn(chosen=a.id, rejected=b.id, comment="clearer"))
    record_preference(store, PreferenceIn(chosen=a.id, rejected=c.id))  # different prompts
    record_preference(store, PreferenceIn(chosen=img1.id, rejected=img2.id))  # images
    record_feedback(store, a.id, RatingIn(rating=5))  # not a preference
    second, _ = record_preference(store, PreferenceIn(chosen=b.id, rejected=a.id))
    assert preference_pairs(store) == [
        {"prompt": "Q:", "chosen": " good", "rejected": " bad", "chosen_id": a.id,
         "rejected_id": b.id, "chosen_model": "m@1", "rejected_model": "m@1",
         "feedback_id": first.id, "comment": "clearer"},
        {"prompt": "Q:", "chosen": " bad", "rejected": " good", "chosen_id": b.id,
         "rejected_id": a.id, "chosen_model": "m@1", "rejected_model": "m@1",
         "feedback_id": second.id, "comment": None},
    ]
