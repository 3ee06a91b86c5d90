"""The moderation classifier: trained by genloop on labelled examples, registered, named in the
policy, and blocking what it learned to; its examples file's bad lines named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genloop.errors import InvalidInput
from genloop.safety.classifier import (
    accuracy,
    load_classifier,
    read_examples,
    register_classifier,
    train_classifier,
)
from genloop.safety.moderator import workspace_moderator
from genloop.store import Store

from .labelled import labelled


def examples() -> list[tuple[str, str]]:
    return [(r["text"], "harmful" if r["label"] == "blocked" else "ok")
            for r in labelled() if r["label"] != "pii"]


def test_trained_registered_and_named_in_the_policy(workspace: Path) -> None:
    train = examples()
    model = train_classifier(train, steps=150, buckets=1 << 14)
    assert accuracy(model, train) >= 0.95
    store = Store()
    version = register_classifier(store, "harm", model, "sha256:test", {"acc": 1.0})
    assert version.family == "moderation" and version.ref == "harm@1"
    _, loaded = load_classifier(store, "harm")
    assert loaded.scores(["我要杀人"]) == model.scores(["我要杀人"])
    (workspace / "moderation.yaml").write_text(
        "classifier: {model: harm, labels: [harmful], threshold: 0.5}\n")
    m = workspace_moderator(store)
    blocked = m.check("I will kill you tomorrow", "output")
    assert blocked.blocked and blocked.categories == ["harmful"]
    assert blocked.scores["harmful"] > 0.5
    assert not m.check("Write a poem about the sea", "output").blocked
    assert m.holds_whole_output  # a stream sends nothing before the classifier saw it all


def test_a_policy_naming_a_model_that_is_not_a_classifier(workspace: Path) -> None:
    with pytest.raises(InvalidInput, match="classifier.model"):
        load_classifier(Store(), "nothing")


@pytest.mark.parametrize("line,message", [
    ("not json", ":2: not JSON"), ('{"text": "a"}', ":2: label must be"),
    ('{"text": "", "label": "x"}', ":2: text must be"),
    ('{"text": "a", "label": "x", "extra": 1}', ":2: give an object"),
])
def test_bad_example_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "ex.jsonl"
    path.write_text(json.dumps({"text": "ok", "label": "ok"}) + "\n" + line + "\n")
    with pytest.raises(InvalidInput, match=message):
        read_examples(path)
