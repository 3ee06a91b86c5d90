"""``GET /v1/models/{model}/feedback``: the model's feedback summary, as the Python function
gives it, in its documented model; its threshold; a missing model or a bad threshold. (Owners:
tests/serving/test_tenants.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from genloop.feedback.collect import PreferenceIn, RatingIn, record_feedback, record_preference
from genloop.feedback.datasets import feedback_summary
from genloop.serving import schemas
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import Store


@pytest.fixture
def rated(workspace: Path) -> Iterator[tuple[TestClient, Store]]:
    store = Store()
    staged = workspace / "staging" / "m"
    staged.mkdir(parents=True)
    (staged / "config.json").write_text("{}")
    mv = store.register_model("m", staged, family="gpt")
    made = [store.record_generation(model=mv, kind="text", request={"prompt": "Hi"}, seed=i,
                                    output=f"out {i}", file=None, content_hash=f"h{i}", timings={})
            for i in range(3)]
    for g, rating in zip(made, (5, 4, 1), strict=True):
        record_feedback(store, g.id, RatingIn(rating=rating))
    record_feedback(store, made[2].id, RatingIn(thumbs="down"))
    record_preference(store, PreferenceIn(chosen=made[0].id, rejected=made[2].id))
    with TestClient(create_app(ServeConfig(auth=False), store=store)) as client:
        yield client, store
    store.close()


def test_the_summary_of_a_models_feedback(rated: tuple[TestClient, Store]) -> None:
    client, store = rated
    r = client.get("/v1/models/m/feedback")
    assert r.status_code == 200, r.text
    body = r.json()
    parsed = schemas.FeedbackSummary.model_validate(body)
    assert parsed.model_dump(mode="json") == body  # exactly the documented model
    assert body == {"object": "feedback.summary", **feedback_summary(store, "m")}
    assert body["feedback"] == {"ratings": 3, "thumbs_up": 0, "thumbs_down": 1, "preferences": 1}
    assert body["usable"] == {"sft": 2, "dpo": 3, "reward": 3, "kto": 3}
    assert body["needed"]["dpo"] == 5 and body["generations"] == 3
    assert client.get("/v1/models/m@1/feedback").json()["usable"] == body["usable"]
    assert client.get("/v1/models/m/feedback", params={"threshold": 5}).json()["usable"]["sft"] == 1


def test_a_missing_model_or_a_bad_threshold(rated: tuple[TestClient, Store]) -> None:
    client, _ = rated
    r = client.get("/v1/models/nope/feedback")
    assert r.status_code == 404 and "'nope' not found" in r.json()["error"]["message"]
    assert client.get("/v1/models/m@9/feedback").status_code == 404
    r = client.get("/v1/models/m/feedback", params={"threshold": 6})
    assert r.status_code == 400 and r.json()["error"]["param"] == "query.threshold", r.text
    assert client.get("/v1/models/Bad!/feedback").status_code == 400
