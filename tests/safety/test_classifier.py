"""The moderation classifier: trained by genloop on labelled examples, registered, named in the
policy, and blocking what it learned to; its examples file's bad lines named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import genloop
from genloop.errors import InvalidInput
from genloop.models.modeldir import ModelDir
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
    model = train_classifier(train, buckets=1 << 14)
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


def test_training_is_fast_on_a_few_hundred_examples() -> None:
    """A linear n-gram model on ~300 examples fits in well under a second (the first fit in a
    process too: no optimizer module whose import alone takes longer)."""
    import time

    train = [(f"{text} {i}", label) for i in range(6) for text, label in examples()]
    t0 = time.perf_counter()
    model = train_classifier(train)
    took = time.perf_counter() - t0
    assert accuracy(model, train) >= 0.95
    assert took < 2.0, f"{took:.2f} s for {len(train)} examples"  # shared cores: a margin


def test_the_fit_is_deterministic_and_matches_the_full_table() -> None:
    a, b = train_classifier(examples()), train_classifier(examples())
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert int((a.weight != 0).any(-1).sum()) == len({i for t, _ in examples()
                                                      for i in a.features(t)})


def test_the_cli_trains_registers_with_a_card_and_lineage_and_it_is_no_generator(
        workspace: Path, tmp_path: Path, cli) -> None:
    """``genloop moderation train`` registers NAME@1 with its held-out accuracy on its card and
    its examples in its lineage; ``models show`` prints the card; loading it as a generator
    (Python, CLI) is one line saying what it is for."""
    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n"
                            for t, label in examples()), encoding="utf-8")
    r = cli(["moderation", "train", str(data), "--name", "harm"], workspace)
    assert r.returncode == 0 and r.stdout.strip() == "harm@1", r.stderr
    assert "held-out accuracy" in r.stderr
    version = Store().resolve("harm")
    assert 0.0 < version.metrics["heldout_accuracy"] <= 1.0
    lineage = ModelDir(version.path).lineage()
    assert lineage["dataset"] == str(data) and lineage["dataset_hash"].startswith("sha256:")
    shown = cli(["models", "show", "harm"], workspace)
    assert shown.returncode == 0 and "held-out accuracy" in shown.stdout, shown.stdout
    assert "moderation classifier" in shown.stdout
    with pytest.raises(InvalidInput, match=r"harm@1 is a moderation classifier: name it in "
                                           r"moderation\.yaml"):
        genloop.load("harm")
    r = cli(["generate", "harm", "--prompt", "hi"], workspace)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr
    assert "harm@1 is a moderation classifier" in errors[0] and "Traceback" not in r.stderr
