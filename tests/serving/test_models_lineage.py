"""The models route shows lineage: a tuned version names the version it was tuned from."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from genloop.models.io import config_json
from genloop.models.registry import get_family
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import Store


def _staged(root: Path, tag: str) -> Path:
    """A model directory with only its config: enough for the models route (nothing generates)."""
    family = get_family("gpt")
    staged = root / "staging" / tag
    staged.mkdir(parents=True)
    (staged / "config.json").write_text(config_json(family, family.make_config("tiny")))
    return staged


def test_a_tuned_version_names_its_parent(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENLOOP_DB_URL", raising=False)
    store = Store()
    try:
        store.register_model("poet", _staged(tmp_path, "one"), family="gpt")
        store.register_model("poet", _staged(tmp_path, "two"), family="gpt", parent="poet@1")
        with TestClient(create_app(ServeConfig(auth=False), store=store)) as client:
            listed = {m["id"]: m["parent"] for m in client.get("/v1/models").json()["data"]}
            assert listed == {"poet@1": None, "poet@2": "poet@1"}
            assert client.get("/v1/models/poet").json()["parent"] == "poet@1"
    finally:
        store.close()
