"""Shared fixtures: a fresh workspace per test, its database on SQLite and on PostgreSQL, a small
deterministic English corpus, a tiny recipe (seconds to train on two shared CPU cores) and a
runner for the real CLI."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent  # the venv's bin: genloop, torchrun

# Under pytest-xdist (`make test` runs two workers) each worker is one more process on the same
# cores: its in-process torch keeps to one intra-op thread, or the workers thrash. Set before
# torch is first imported (conftest loads before any test module); child processes inherit it.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...; "" when not under xdist
if WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"

_SUBJECTS = ["The cat", "A dog", "The old man", "My friend", "The river", "A small bird",
             "The teacher", "Our neighbour", "The children", "A stranger"]
_VERBS = ["walks to", "looks at", "sings about", "dreams of", "runs past", "writes to",
          "waits for", "thinks about", "paints", "remembers"]
_OBJECTS = ["the house", "a green field", "the quiet sea", "an open window", "the morning light",
            "a long road", "the market", "the garden", "the winter hills", "a letter"]


CHROMIUM = "/usr/bin/chromium"  # Debian's chromium, which the browser tests drive


def require_chromium() -> None:
    """At a browser test module's top: skip it where Debian's chromium is missing, except in CI,
    where a missing browser must fail the run (``.ci/run`` installs it)."""
    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def write_corpus(path: Path, size: int = 30_000, seed: int = 0) -> Path:
    """Deterministic simple English paragraphs, about ``size`` characters."""
    rng = random.Random(seed)
    paras: list[str] = []
    total = 0
    while total < size:
        n = rng.randint(3, 6)
        para = " ".join(f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
                        for _ in range(n))
        paras.append(para)
        total += len(para) + 2
    path.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    return path


def workspace_env(home: Path, db_url: str | None = None) -> dict[str, str]:
    """The environment for a subprocess working in ``home`` (one thread: the cores are shared),
    on the workspace's SQLite file or on ``db_url``."""
    env = {k: v for k, v in os.environ.items() if k not in ("GENLOOP_DB_URL", "GENLOOP_CACHE")}
    env.update(GENLOOP_HOME=str(home), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               NO_COLOR="1", COLUMNS="200", TERM="dumb")
    if db_url:
        env["GENLOOP_DB_URL"] = db_url
    return env


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist (``-n``) with ``--dist loadfile``, files go to the workers in collection
    order (see below), not reordered by their number of tests."""
    if getattr(config.option, "numprocesses", None) and hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the files holding a ``slow`` test first: the long files then start early and
    the run does not end on one worker finishing a 40 s test while the other sits idle."""
    if not (WORKER or getattr(config.option, "numprocesses", None)):
        return
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: each file's order is kept


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: threads only fight over the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextmanager
def module_workspace(home: Path) -> Iterator[Path]:
    """A workspace at ``home`` for a module-scoped fixture (one torch thread, the default SQLite
    store and cache inside it), undone when the block ends."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("GENLOOP_HOME", str(home))
            mp.delenv("GENLOOP_DB_URL", raising=False)
            mp.delenv("GENLOOP_CACHE", raising=False)
            yield home
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh GENLOOP_HOME (GENLOOP_DATA_MIRROR, if set, is kept: nothing needs the network)."""
    home = tmp_path / "home"
    monkeypatch.setenv("GENLOOP_HOME", str(home))
    monkeypatch.delenv("GENLOOP_DB_URL", raising=False)
    monkeypatch.delenv("GENLOOP_CACHE", raising=False)
    return home


# --- the workspace's database: SQLite, and PostgreSQL when a server is given -------------------

PG_URL_VAR = "GENLOOP_TEST_PG_URL"  # a server's SQLAlchemy URL; .ci/with-postgres starts one
BACKENDS = ["sqlite", "postgresql"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def pg_server_url() -> str:
    """The PostgreSQL server to test against; without one the test is skipped, or fails in CI."""
    url = os.environ.get(PG_URL_VAR)
    problem = None
    if not url:
        problem = f"{PG_URL_VAR} is unset (run the tests under .ci/with-postgres, see README)"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            problem = "the psycopg driver is not installed (pip install -e '.[dev]')"
    if problem is not None:
        if in_ci():
            pytest.fail(f"CI needs PostgreSQL for this test: {problem}", pytrace=False)
        pytest.skip(f"no PostgreSQL: {problem}")
    return url  # type: ignore[return-value]


@contextmanager
def pg_database(server_url: str) -> Iterator[str]:
    """A fresh, empty database on the server for the block (its URL); dropped afterwards, along
    with any connection a killed or forgotten process left open."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    name = f"genloop_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, workspace: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The ``workspace``'s database, once per backend: its SQLite file, or a fresh PostgreSQL
    database named by GENLOOP_DB_URL (which threads and child processes inherit)."""
    from genloop.config import settings

    if request.param == "sqlite":
        yield settings().db_url
        return
    with pg_database(pg_server_url()) as url:
        monkeypatch.setenv("GENLOOP_DB_URL", url)
        yield url


@pytest.fixture
def store(db_url: str) -> Iterator[Any]:
    """A :class:`genloop.store.Store` over ``db_url`` (each backend in turn)."""
    from genloop.store import Store

    s = Store()
    assert s.url == db_url
    yield s
    s.close()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus.txt")


def tiny_recipe_dict(source: Path | str, *, name: str = "tiny", steps: int = 30,
                     family: str = "gpt", **train: Any) -> dict[str, Any]:
    """A recipe that trains in a few seconds: tiny preset, context 32, batch 8, one thread."""
    return {
        "name": name,
        "data": {"source": str(source)},
        "model": {"family": family, "preset": "tiny", "config": {"block_size": 32}},
        "train": {"steps": steps, "batch_size": 8, "warmup_steps": 5, "eval_every": steps,
                  "eval_batches": 2, "checkpoint_every": steps, "log_every": 1,
                  "tensorboard": False, "threads": 1, **train},
        "eval": {"num_samples": 1, "sample_tokens": 16, "full_validation": False},
    }


@pytest.fixture
def tiny_recipe(corpus: Path) -> Callable[..., dict[str, Any]]:
    """``tiny_recipe(name=..., steps=..., **train_overrides)`` over the ``corpus`` fixture."""
    return lambda **kw: tiny_recipe_dict(corpus, **kw)


def run_cli(args: list[str], home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "genloop"), *args], env=workspace_env(home),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """``cli(args, home)`` runs the installed ``genloop`` command in workspace ``home``."""
    return run_cli


def tiny_image_recipe_dict(family: str, *, name: str | None = None, steps: int = 30,
                           source: str = "digits", **train: Any) -> dict[str, Any]:
    """An image recipe that trains in seconds: the family's tiny preset, class-conditional, on the
    8×8 scikit-learn digits (offline), evaluated on 40 samples with a quickly trained extractor."""
    return {
        "name": name or f"tiny-{family}",
        "data": {"kind": "images", "source": source},
        "model": {"family": family, "preset": "tiny", "config": {"conditional": True}},
        "train": {"steps": steps, "batch_size": 16, "warmup_steps": 2, "eval_every": steps,
                  "eval_batches": 2, "checkpoint_every": steps, "log_every": 1, "weight_decay": 0.0,
                  "tensorboard": False, "threads": 1, "ema_decay": 0.9, **train},
        "eval": {"num_samples": 40, "batch_size": 40, "steps": 4, "grid": 16, "extractor_steps": 30,
                 "importance_samples": 4, "nll_images": 20},
    }


# --- a real `genloop serve` ------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on. Under xdist each worker draws from its own block below
    the kernel's ephemeral range, so two workers never pick the same port between this check and
    their server's bind (an ephemeral port 0 could be handed out again in that gap)."""
    import socket

    if not WORKER:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    block = 20_000 + 1_000 * (int(WORKER.removeprefix("gw") or 0) % 12)
    for port in random.Random().sample(range(block, block + 1_000), 1_000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {block}-{block + 999}")


@dataclass
class Server:
    """A ``genloop serve`` process on a loopback port."""

    url: str
    process: subprocess.Popen
    log: Path

    def client(self, key: str | None, **kw: Any) -> Any:
        import httpx

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


def start_server(home: Path, *flags: str, log: Path | None = None,
                 db_url: str | None = None) -> Server:
    """``genloop serve`` over workspace ``home`` (and ``db_url``, if not its SQLite file) on a
    free port; returns once /health answers."""
    import time

    import httpx

    port = free_port()
    log = log or home.parent / f"serve-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "genloop"), "serve", "--port", str(port), "--log-level", "warning", *flags],
            env=workspace_env(home, db_url), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"genloop serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(url, process, log)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"genloop serve did not answer /health: {log.read_text()[-2000:]}")


@contextmanager
def serving(home: Path, *flags: str, log: Path | None = None) -> Iterator[Server]:
    """``with serving(home) as server:`` a ``genloop serve`` for the block."""
    server = start_server(home, *flags, log=log)
    try:
        yield server
    finally:
        server.stop()


# the studio's browser tests: GENLOOP_SCREENSHOTS=1 writes the README's pictures
SCREENSHOTS = os.environ.get("GENLOOP_SCREENSHOTS") == "1"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def shot(page: Any, name: str) -> None:
    """docs/img/studio-NAME.png of a Playwright ``page``, when SCREENSHOTS."""
    if SCREENSHOTS:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMG / f"studio-{name}.png"))


def wait_until(condition: Callable[[], Any], timeout: float, what: Callable[[], Any] = lambda: "") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds, showing ``what()``.
    The pause between looks grows from 10 ms to 100 ms: a long wait does not spin on the cores
    that the awaited processes need."""
    import time

    deadline = time.monotonic() + timeout
    pause = 0.01
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(pause)
        pause = min(0.1, pause * 1.2)


# --- text ↔ image: tiny models of the shapes world, trained through the CLI -----------------

SHAPES_DATA = {"kind": "image_text", "source": "shapes", "max_images": 300, "image_size": 16}
T2I_ENCODER = {"hidden": 16, "layers": 1, "heads": 2, "max_tokens": 64}


def tiny_t2i_recipe_dict(name: str = "tiny-t2i", steps: int = 12,
                         family: str = "text-diffusion") -> dict[str, Any]:
    """A text-to-image recipe (text-diffusion, or text-gan) on 300 shapes at 16×16 that trains
    in seconds (it draws blobs, not yet shapes: the faces are under test, not faithfulness)."""
    recipe = tiny_image_recipe_dict(family, name=name, steps=steps)
    recipe["data"] = dict(SHAPES_DATA)
    recipe["model"] = {"family": family, "preset": "tiny",
                       "config": {"text_encoder": dict(T2I_ENCODER)}}
    recipe["eval"] = {"num_samples": 0}  # no faithfulness judged (that is bench/t2i.py's)
    return recipe


def tiny_captioner_recipe_dict(name: str = "tiny-cap", steps: int = 12) -> dict[str, Any]:
    """A captioner recipe on 300 shapes at 16×16 that trains in seconds."""
    recipe = tiny_image_recipe_dict("captioner", name=name, steps=steps)
    recipe["data"] = dict(SHAPES_DATA)
    recipe["model"] = {"family": "captioner", "preset": "tiny", "config": {}}
    recipe["eval"] = {"num_samples": 0}
    return recipe


def train_recipes(root: Path, home: Path, recipes: list[dict[str, Any]]) -> None:
    """Each recipe trained through the real CLI in workspace ``home``."""
    import yaml

    for recipe in recipes:
        path = root / f"{recipe['name']}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        r = run_cli(["train", str(path)], home, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
