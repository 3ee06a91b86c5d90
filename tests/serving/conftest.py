"""A workspace with a tiny text model and a tiny image model, an API key, and a real
``genloop serve`` process on a free loopback port; shared by the module that asks for it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import (  # noqa: TID252
    BIN,
    Server,
    tiny_image_recipe_dict,
    tiny_recipe_dict,
    workspace_env,
    write_corpus,
)
from ..conftest import start_server as start_workspace_server  # noqa: TID252


@dataclass
class Workspace:
    home: Path
    text_model: str
    image_model: str
    key: str

    def env(self) -> dict[str, str]:
        return workspace_env(self.home)


def make_workspace(root: Path) -> Workspace:
    """Train the two tiny models and create a key, each through the real CLI (~15 s)."""
    import yaml

    home = root / "home"
    corpus = write_corpus(root / "corpus.txt")
    env = workspace_env(home)
    text = tiny_recipe_dict(corpus, name="tiny-text", steps=40)
    text["model"]["config"]["block_size"] = 64  # room for a chat transcript
    for name, recipe in (("text.yaml", text),
                         ("image.yaml", tiny_image_recipe_dict("gan", name="tiny-digits", steps=10))):
        (root / name).write_text(yaml.safe_dump(recipe))
        subprocess.run([str(BIN / "genloop"), "train", str(root / name)], env=env, check=True,
                       capture_output=True, timeout=300)
    key = create_key(home, "tests")
    return Workspace(home, "tiny-text", "tiny-digits", key)


def create_key(home: Path, name: str) -> str:
    out = subprocess.run([str(BIN / "genloop"), "keys", "create", name], env=workspace_env(home),
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return next(w for w in out.split() if w.startswith("gl_"))


def start_server(ws: Workspace, *flags: str, log: Path | None = None) -> Server:
    """``genloop serve`` over the shared workspace (see tests/conftest.py)."""
    return start_workspace_server(ws.home, *flags, log=log)


@pytest.fixture(scope="session")
def served_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(served_workspace: Workspace) -> Iterator[Server]:
    srv = start_server(served_workspace)
    yield srv
    srv.stop()
