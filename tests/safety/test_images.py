"""Image requests are moderated too: a prompt or class text the policy blocks is refused (400 on
the HTTP face, exit 2 on the CLI, ContentBlocked in Python) and nothing is recorded — the class
named by its index as much as by its name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from genloop.generation import service
from genloop.models.modeldir import ModelDir
from genloop.models.registry import FAMILIES
from genloop.safety.moderator import ContentBlocked
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import Store

CLASSES = ["zero", "one", "two"]


def register_untrained(name: str, family: str) -> str:
    """An untrained tiny class-conditional model of ``family`` (8×8 grey, 3 classes): what is
    checked is the request's text, not the pixels."""
    from genloop.config import settings

    fam = FAMILIES[family]
    config = fam.make_config("tiny", image_size=8, channels=1, num_classes=3, conditional=True)
    torch.manual_seed(0)
    staged = ModelDir(settings().models_dir / f".staging-{name}")
    staged.path.mkdir(parents=True)
    staged.write_network(fam, config, fam.build(config))
    staged.write_labels(CLASSES)
    return Store().register_model(name, staged.path, family=family).ref


@pytest.fixture
def gan(workspace: Path, one_thread):  # noqa: ARG001
    service._CACHE.clear()
    ref = register_untrained("u-gan", "gan")
    workspace.joinpath("moderation.yaml").write_text(
        "blocklists:\n  - {category: banned, terms: [two]}\n")
    yield ref
    service._CACHE.clear()


def test_a_blocked_image_prompt_or_class_is_refused_over_http(gan, workspace):
    with TestClient(create_app(ServeConfig(auth=False))) as api:
        for body in ({"prompt": "two"}, {"prompt": "TWO"}, {"class": "two"}, {"class": 2}):
            r = api.post("/v1/images/generations", json={"model": gan, "n": 1, "seed": 1, **body})
            assert r.status_code == 400, (body, r.text)
            assert "banned (blocklist)" in r.json()["error"]["message"], r.text
        assert Store().count_generations(gan) == 0
        ok = api.post("/v1/images/generations", json={"model": gan, "n": 1, "seed": 1,
                                                      "prompt": "one"})
        assert ok.status_code == 200, ok.text
        record = Store().list_generations(limit=1)[0]
        assert record.safety["prompt"]["action"] == "allow"


def test_a_blocked_image_class_is_refused_in_python_and_on_the_cli(gan, workspace, cli):
    model = service.load(gan)
    for label in ("two", 2):
        with pytest.raises(ContentBlocked, match="banned"):
            model.generate(num_samples=1, seed=1, class_label=label)
    for label in ("two", "2"):
        r = cli(["generate", gan, "--class", label, "-n", "1", "--out",
                 str(workspace.parent / "out.png")], workspace)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error")]
        assert r.returncode == 2 and len(errors) == 1 and "banned" in errors[0], r.stderr
        assert "Traceback" not in r.stderr
    assert Store().count_generations(gan) == 0
