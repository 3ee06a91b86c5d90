"""A workspace with a tiny text model and a tiny image model, an API key, and a real
``genloop serve`` process on a free loopback port; shared by the module that asks for it.
Its database is the workspace's SQLite file, or ``db_url`` (a PostgreSQL database)."""

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
    image_model: str | None
    key: str
    db_url: str | None = None  # None: the workspace's SQLite file

    def env(self) -> dict[str, str]:
        return workspace_env(self.home, self.db_url)


def make_workspace(root: Path, db_url: str | None = None, image: bool = True) -> Workspace:
    """Train the tiny text model (and the tiny image model if ``image``) and create a key, each
    through the real CLI (~15 s for both)."""
    import yaml

    home = root / "home"
    corpus = write_corpus(root / "corpus.txt")
    env = workspace_env(home, db_url)
    text = tiny_recipe_dict(corpus, name="tiny-text", steps=40)
    text["model"]["config"]["block_size"] = 64  # room for a chat transcript
    recipes = [("text.yaml", text)]
    if image:
        recipes.append(("image.yaml", tiny_image_recipe_dict("gan", name="tiny-digits", steps=10)))
    for name, recipe in recipes:
        (root / name).write_text(yaml.safe_dump(recipe))
        subprocess.run([str(BIN / "genloop"), "train", str(root / name)], env=env, check=True,
                       capture_output=True, timeout=300)
    key = create_key(home, "tests", db_url)
    return Workspace(home, "tiny-text", "tiny-digits" if image else None, key, db_url)


def create_key(home: Path, name: str, db_url: str | None = None) -> str:
    out = subprocess.run([str(BIN / "genloop"), "keys", "create", name],
                         env=workspace_env(home, db_url), check=True, capture_output=True,
                         text=True, timeout=60).stdout
    return next(w for w in out.split() if w.startswith("gl_"))


def start_server(ws: Workspace, *flags: str, log: Path | None = None) -> Server:
    """``genloop serve`` over the shared workspace (see tests/conftest.py)."""
    return start_workspace_server(ws.home, *flags, log=log, db_url=ws.db_url)


@pytest.fixture(scope="session")
def served_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(served_workspace: Workspace) -> Iterator[Server]:
    srv = start_server(served_workspace)
    yield srv
    srv.stop()
