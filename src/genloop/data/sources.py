"""Where every built-in dataset comes from: one table, read by ``data.download`` and the readers.

Each built-in names its public origin, pinned (a git commit in the URL, or a mirror whose files
are pinned by hash), and the sha256 of every file genloop uses, as recorded in
``shared/data/*/SOURCE.md``. A file is either fetched as it is (``Remote``) or made by a builder
from pinned inputs (``Built``: ``tang-poems`` is built from the chinese-poetry JSON files, since
no published copy of the split exists). The relative paths are the names under
``GENLOOP_DATA_MIRROR`` and the cache, so a mirror folder is laid out like the cache.

gzip files are pinned by the sha256 of their decompressed payload: copies of the same data
differ in the gzip header (file name, timestamp), not in the payload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict
from urllib.parse import quote

from genloop.data import tang_poems


@dataclass(frozen=True)
class Remote:
    """A file fetched as it is."""

    path: str  # under the mirror and the cache, e.g. "tinyshakespeare/input.txt"
    url: str
    sha256: str  # of the content; of the decompressed payload when ``gzip``
    gzip: bool = False


@dataclass(frozen=True)
class Built:
    """A file a builder writes from the source's inputs."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Input:
    """A file a builder reads: fetched from ``url`` to ``path`` in the builder's input folder.
    Pinned by the commit in its URL; the built files' sha256 checks the result."""

    path: str
    url: str


@dataclass(frozen=True)
class Source:
    name: str
    origin: str
    license: str
    files: tuple[Remote | Built, ...]
    inputs: tuple[Input, ...] = ()
    build: Callable[[Path, Path], object] | None = None  # build(inputs folder, output folder)

    def file(self, path: str) -> Remote | Built:
        for f in self.files:
            if f.path == path or f.path.rsplit("/", 1)[-1] == path:
                return f
        raise KeyError(f"{self.name} has no file {path!r}")

    @property
    def urls(self) -> list[str]:
        return [f.url for f in self.files if isinstance(f, Remote)] + [i.url for i in self.inputs]


_GITHUB_RAW = "https://raw.githubusercontent.com"

_CHAR_RNN = f"{_GITHUB_RAW}/karpathy/char-rnn/370cbcd448eb7daf32f21a6be560b70e0b33c4e3"
TINYSHAKESPEARE = Source(
    name="tinyshakespeare",
    origin="karpathy/char-rnn data/tinyshakespeare/input.txt at commit 370cbcd (2015-05-21)",
    license="Shakespeare's plays: public domain",
    files=(Remote("tinyshakespeare/input.txt", f"{_CHAR_RNN}/data/tinyshakespeare/input.txt",
                  "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),),
)

_POETRY_COMMIT = "99ebbef7e1345c0985c44b9fd96a3f9e776f117b"
_POETRY = f"{_GITHUB_RAW}/chinese-poetry/chinese-poetry/{_POETRY_COMMIT}"
TANG_POEMS = Source(
    name="tang-poems",
    origin=f"chinese-poetry/chinese-poetry at commit {_POETRY_COMMIT}: 全唐诗/poet.tang.*.json, "
    "split by genloop.data.tang_poems",
    license="poems: public domain; JSON compilation MIT, Copyright (c) 2016 JackeyGao",
    files=(
        Built("tang_poems/train.jsonl",
              "dc9024c7895dc95fe8f6a56fda18cc149a5810553ee1cb501fe25aa44df3f4f5"),
        Built("tang_poems/valid.jsonl",
              "d2ea0887cddb7a179cf8137f96ee3b0b2aa0433c2ba81ceadcd14fce9ece4328"),
    ),
    inputs=tuple(Input(p, f"{_POETRY}/{quote(p)}")
                 for p in tang_poems.POEM_FILES + tang_poems.ANTHOLOGY_FILES),
    build=tang_poems.build,
)

_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# torchvision's first MNIST mirror (the original LeCun files, which yann.lecun.com no longer
# serves reliably).
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST = Source(
    name="mnist",
    origin=f"the original IDX files by LeCun, Cortes and Burges, from {_MNIST_URL}",
    license="CC BY-SA 3.0 (LeCun, Cortes, Burges: The MNIST database of handwritten digits)",
    files=tuple(Remote(f"mnist/{name}", _MNIST_URL + name, sha, gzip=True) for name, sha in zip(_IDX, (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ), strict=True)),
)

_FASHION_URL = f"{_GITHUB_RAW}/zalandoresearch/fashion-mnist/55506a9/data/fashion/"
FASHION_MNIST = Source(
    name="fashion-mnist",
    origin="zalandoresearch/fashion-mnist data/fashion at commit 55506a9 (2020-05-23)",
    license="MIT, Copyright (c) 2017 Zalando SE",
    files=tuple(Remote(f"fashion_mnist/{name}", _FASHION_URL + name, sha, gzip=True)
                for name, sha in zip(_IDX, (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ), strict=True)),
)

SOURCES: dict[str, Source] = {s.name: s for s in (TINYSHAKESPEARE, TANG_POEMS, MNIST, FASHION_MNIST)}


class IdxFields(TypedDict):
    url: str
    files: dict[str, str]
    gzip: bool


def idx_set(name: str) -> IdxFields:
    """An IDX source as the image readers' fields: base ``url``, ``files`` (name -> payload
    sha256) and ``gzip``."""
    files = [f for f in SOURCES[name].files if isinstance(f, Remote)]
    base = files[0].url.rsplit("/", 1)[0] + "/"
    return {"url": base, "files": {f.url.removeprefix(base): f.sha256 for f in files}, "gzip": True}


__all__ = ["SOURCES", "Built", "IdxFields", "Input", "Remote", "Source", "idx_set"]
