"""A workspace with a tiny text model and a tiny image model, an API key, and a real
``genloop serve`` process on a free loopback port; shared by the module that asks for it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ..conftest import (  # noqa: TID252
    BIN,
    tiny_image_recipe_dict,
    tiny_recipe_dict,
    workspace_env,
    write_corpus,
)


@dataclass
class Workspace:
    home: Path
    text_model: str
    image_model: str
    key: str

    def env(self) -> dict[str, str]:
        return workspace_env(self.home)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, key: str | None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(ws: Workspace, *args: str, log: Path | None = None) -> Server:
    """``genloop serve`` in ``ws`` on a free port; returns once /health answers."""
    port = free_port()
    log = log or ws.home.parent / f"serve-{port}.log"
    env = ws.env()
    env["OMP_NUM_THREADS"] = os.environ.get("GENLOOP_TEST_SERVER_THREADS", "1")
    process = subprocess.Popen(
        [str(BIN / "genloop"), "serve", "--port", str(port), "--log-level", "warning", *args],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"genloop serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(url, process, log)
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"genloop serve did not start: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def served_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(served_workspace: Workspace) -> Iterator[Server]:
    srv = start_server(served_workspace)
    yield srv
    srv.stop()
