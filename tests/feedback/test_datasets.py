"""Feedback → datasets on a real store (SQLite, and PostgreSQL when given): generations and
feedback recorded through the real functions, records built for each objective with their
lineage, the same feedback giving the same dataset hash, thresholds, and the too-few message."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from genloop.config import settings
from genloop.data.kinds import KINDS
from genloop.errors import InvalidInput, NotFound
from genloop.feedback.collect import PreferenceIn, RatingIn, record_feedback, record_preference
from genloop.feedback.datasets import MIN_RECORDS, feedback_data, feedback_summary
from genloop.store import FeedbackRecord, GenerationRecord, ModelVersion, Store
from genloop.tokenizers import train_tokenizer


@dataclass
class World:
    store: Store
    versions: dict[int, ModelVersion]

    def gen(self, prompt: str, output: str, version: int = 1, owner: str | None = None,
            image: bool = False) -> GenerationRecord:
        return self.store.record_generation(
            model=self.versions[version], kind="image" if image else "text",
            request={"prompt": prompt}, seed=0, output=None if image else output,
            file=f"{output}.png" if image else None, content_hash=output, timings={}, owner=owner)

    def rate(self, g: GenerationRecord, rating: int, owner: str | None = None) -> FeedbackRecord:
        return record_feedback(self.store, g.id, RatingIn(rating=rating), owner=owner)[0]

    def thumbs(self, g: GenerationRecord, up: bool) -> FeedbackRecord:
        return record_feedback(self.store, g.id, RatingIn(thumbs="up" if up else "down"))[0]

    def prefer(self, chosen: GenerationRecord, rejected: GenerationRecord,
               owner: str | None = None) -> FeedbackRecord:
        body = PreferenceIn(chosen=chosen.id, rejected=rejected.id)
        return record_preference(self.store, body, owner=owner)[0]


@pytest.fixture
def world(store: Store, workspace: Path) -> World:
    versions = {}
    for v in (1, 2):
        staged = workspace / "staging" / f"m{v}"
        staged.mkdir(parents=True)
        (staged / "config.json").write_text("{}")
        versions[v] = store.register_model("m", staged, family="gpt")
    return World(store, versions)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def prepared(data: dict[str, Any]) -> Any:
    tok = train_tokenizer("char", ["abcdefghijklmnopqrstuvwxyz 0123456789"])
    return KINDS[data["kind"]].config.model_validate(data).prepare(tokenizer=tok)


def test_dpo_pairs_from_preferences_and_from_ratings(world: World) -> None:
    a, b, c = (world.gen("spring", t) for t in ("buds open", "snow falls", "rain"))
    p = world.prefer(a, b)                       # A/B: a over b
    ra, rb, rc = world.rate(a, 5), world.rate(b, 2), world.rate(c, 4)  # a>c, c>b; a>b preferred
    d, e = world.gen("autumn", "leaves"), world.gen("autumn", "frost")
    world.rate(d, 3), world.rate(e, 3)           # a tie: no pair
    x, y = world.gen("winter", "ice"), world.gen("summer", "sun")
    world.prefer(x, y)                           # different prompts: no pair
    world.prefer(world.gen("night", "moon"), world.gen("night", "moon"))  # identical outputs
    world.rate(world.gen("digit", "7", image=True), 5)  # images have no text to train on

    fd = feedback_data(world.store, "m", "dpo", min_records=3)
    rows = lines(fd.path)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("spring", "buds open", "snow falls"),   # oldest first: by each record's newest feedback
        ("spring", "buds open", "rain"), ("spring", "rain", "snow falls")]
    assert rows[0]["generation_ids"] == [a.id, b.id] and rows[0]["feedback_ids"] == [p.id]
    assert rows[1]["generation_ids"] == [a.id, c.id]
    assert rows[1]["feedback_ids"] == [ra.id, rc.id]  # each record's lineage, oldest first
    assert rows[2]["generation_ids"] == [c.id, b.id] and rows[2]["feedback_ids"] == [rb.id, rc.id]
    s = fd.summary
    assert s["records"] == 3 and s["sources"] == {"preferences": 1, "rating_pairs": 2}
    assert s["feedback"] == {"ratings": 6, "thumbs_up": 0, "thumbs_down": 0, "preferences": 3}
    assert {k: v for k, v in s["skipped"].items() if v} == {
        "not_text": 1, "different_prompts": 1, "identical_outputs": 1, "ties": 1,
        "already_preferred": 1}
    assert fd.data == {"kind": "preferences", "form": "paired", "source": str(fd.path),
                       "name": "m-feedback-dpo", "origin": s}
    ds = prepared(fd.data)  # the kind's reader ignores the lineage fields
    assert ds.meta["origin"] == s and len(ds.train) + len(ds.val) == 3
    assert feedback_data(world.store, "m", "reward", min_records=3).data["form"] == "paired"


def test_the_same_feedback_gives_the_same_dataset(world: World) -> None:
    gens = [world.gen("p", f"out {i}") for i in range(4)]
    for g, r in zip(gens, (5, 4, 2, 1), strict=True):
        world.rate(g, r)
    first = feedback_data(world.store, "m", "dpo", min_records=2)
    again = feedback_data(world.store, "m", "dpo", min_records=2)
    assert first == again and first.path.read_bytes() == again.path.read_bytes()
    assert prepared(first.data).hash == prepared(again.data).hash
    world.gen("p", "unrated")  # a new output without feedback changes nothing
    assert feedback_data(world.store, "m", "dpo", min_records=2).path == first.path
    world.rate(world.gen("p", "new"), 3)  # new feedback: new records, at the end
    more = feedback_data(world.store, "m", "dpo", min_records=2)
    assert lines(more.path)[:6] == lines(first.path) and len(lines(more.path)) == 10
    assert prepared(more.data).hash != prepared(first.data).hash


def test_kto_and_sft_follow_the_threshold(world: World) -> None:
    a, b, c, d = (world.gen("p", t) for t in ("great", "fine", "bad", "torn"))
    world.rate(a, 5), world.rate(b, 3), world.thumbs(c, up=False)
    world.thumbs(d, up=True), world.thumbs(d, up=False)  # as many votes for as against: skipped
    twin = world.gen("p", "great")  # the same text again: one output, two generations
    world.thumbs(twin, up=True)

    kto = feedback_data(world.store, "m", "kto", min_records=1)
    assert [(r["completion"], r["label"]) for r in lines(kto.path)] == [
        ("fine", False), ("bad", False), ("great", True)]
    assert lines(kto.path)[2]["generation_ids"] == [a.id, twin.id]
    assert kto.summary["sources"] == {"desirable": 1, "undesirable": 2}
    assert kto.summary["skipped"]["mixed_votes"] == 1 and kto.summary["threshold"] == 4
    assert kto.data["form"] == "unpaired"
    lenient = feedback_data(world.store, "m", "kto", threshold=3, min_records=1)
    assert [(r["completion"], r["label"]) for r in lines(lenient.path)] == [
        ("fine", True), ("bad", False), ("great", True)]
    assert lenient.summary["threshold"] == 3 and prepared(lenient.data).hash != prepared(kto.data).hash

    sft = feedback_data(world.store, "m", "sft", threshold=3, min_records=1)
    assert [set(r) for r in lines(sft.path)] == [{"prompt", "completion", "generation_ids",
                                                  "feedback_ids"}] * 2
    assert [r["completion"] for r in lines(sft.path)] == ["fine", "great"]
    assert sft.data["kind"] == "pairs" and "form" not in sft.data
    assert sft.summary["sources"] == {"liked": 2}
    assert prepared(sft.data).meta["origin"]["objective"] == "sft"


def test_too_few_records_say_how_many_more(world: World) -> None:
    a, b = world.gen("p", "a"), world.gen("p", "b")
    world.prefer(a, b)
    with pytest.raises(InvalidInput) as e:
        feedback_data(world.store, "m", "dpo")
    assert str(e.value) == (f"model m has 1 usable preference pairs for dpo; "
                            f"{MIN_RECORDS['dpo'] - 1} more needed (at least {MIN_RECORDS['dpo']})")
    assert not (settings().home / "records").exists()  # nothing written
    with pytest.raises(InvalidInput, match="^model m has 0 usable liked outputs for sft; 8 more"):
        feedback_data(world.store, "m", "sft")
    with pytest.raises(InvalidInput, match="objective 'ppo' is unknown"):
        feedback_data(world.store, "m", "ppo")
    with pytest.raises(InvalidInput, match="threshold 6 is invalid"):
        feedback_data(world.store, "m", "kto", threshold=6)
    with pytest.raises(NotFound, match="'nope' not found"):
        feedback_data(world.store, "nope", "dpo")


def test_a_version_and_an_owner_see_only_theirs(world: World) -> None:
    one = [world.gen("p", t, version=1) for t in ("a", "b")]
    two = [world.gen("p", t, version=2) for t in ("c", "d")]
    mine = [world.gen("p", t, version=2, owner="alice") for t in ("e", "f")]
    world.prefer(*one), world.prefer(*two), world.prefer(*mine, owner="alice")
    world.prefer(two[0], one[0])  # parent against child: a preference of both versions
    world.rate(mine[0], 5, owner="alice")

    def chosen(model: str, owner: str | None = None) -> list[str]:
        fd = feedback_data(world.store, model, "dpo", min_records=1, visible_to=owner)
        return [r["chosen"] for r in lines(fd.path)]

    assert chosen("m") == ["a", "c", "e", "c"]
    assert chosen("m@1") == ["a", "c"]
    assert chosen("m@2") == ["c", "e", "c"]
    assert chosen("m@2", owner="alice") == ["e"]
    assert feedback_data(world.store, "m@2", "dpo", min_records=1).data["name"] == "m-v2-feedback-dpo"


def test_the_summary_counts_what_each_objective_gets(world: World) -> None:
    a, b = world.gen("p", "a"), world.gen("p", "b")
    world.gen("p", "never rated", version=2)
    world.prefer(a, b), world.rate(a, 5), world.thumbs(b, up=False)
    s = feedback_summary(world.store, "m")
    assert s["generations"] == 3 and s["feedback"] == {
        "ratings": 1, "thumbs_up": 0, "thumbs_down": 1, "preferences": 1}
    assert s["usable"] == {"sft": 1, "dpo": 1, "reward": 1, "kto": 2}
    assert s["needed"] == {"sft": 7, "dpo": 7, "reward": 7, "kto": 6}
    assert s["sources"] == {"preferences": 1, "rating_pairs": 0, "desirable": 1, "undesirable": 1}
    assert feedback_summary(world.store, "m@2")["generations"] == 1
    assert feedback_summary(world.store, "m", visible_to="bob")["feedback"]["preferences"] == 0
    assert feedback_summary(world.store, "m", threshold=5)["usable"]["sft"] == 1


def test_the_default_minimum_reached_exactly_is_enough(world: World) -> None:
    for i in range(MIN_RECORDS["sft"]):
        world.rate(world.gen(f"p{i}", f"out {i}"), 4)
    assert feedback_data(world.store, "m", "sft").summary["records"] == MIN_RECORDS["sft"]
