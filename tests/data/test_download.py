"""fetch() and fetch_builtin(): mirror, cache and a real local HTTP server (good hash, bad hash,
unreachable, truncated, gzip payloads, built files), and the table of built-in sources."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from genloop.data.download import fetch, fetch_builtin
from genloop.data.sources import SOURCES, Built, Input, Remote, Source
from genloop.errors import DownloadError

PAYLOAD = b"hello genloop\n" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "file.txt").write_bytes(PAYLOAD)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENLOOP_CACHE", raising=False)
    monkeypatch.delenv("GENLOOP_DATA_MIRROR", raising=False)
    return tmp_path / "home"


def test_download_good_hash_lands_in_cache_and_is_reused(server, home):
    path = fetch(f"{server}/file.txt", SHA, mirror_paths=["x/file.txt"], cache_name="x/file.txt")
    assert path == home / "cache" / "x" / "file.txt"
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in path.parent.iterdir()] == ["file.txt"]
    # Second call is served from the cache: the URL no longer needs to work.
    again = fetch("http://127.0.0.1:9/none", SHA, mirror_paths=[], cache_name="x/file.txt")
    assert again == path


def test_download_bad_hash_leaves_nothing(server, home):
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=f"expected {wrong}") as err:
        fetch(f"{server}/file.txt", wrong, mirror_paths=[], cache_name="x/file.txt")
    assert SHA in str(err.value)
    cache = home / "cache" / "x"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_unreachable_tells_user_about_mirror_and_cache_path(home):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="GENLOOP_DATA_MIRROR") as err:
        fetch(f"http://127.0.0.1:{port}/f", SHA, mirror_paths=["x/f"], cache_name="x/f", timeout=5)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(home / "cache" / "x" / "f") in msg
    assert list((home / "cache" / "x").iterdir()) == []


def test_mirror_is_preferred_and_verified(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "b").mkdir(parents=True)
    (mirror / "b" / "f.txt").write_bytes(PAYLOAD)
    monkeypatch.setenv("GENLOOP_DATA_MIRROR", str(mirror))
    got = fetch("http://127.0.0.1:9/none", SHA, mirror_paths=["a/f.txt", "b/f.txt"], cache_name="f")
    assert got == mirror / "b" / "f.txt"
    (mirror / "b" / "f.txt").write_bytes(b"tampered")
    with pytest.raises(DownloadError, match="mirror file"):
        fetch("http://127.0.0.1:9/none", SHA, mirror_paths=["b/f.txt"], cache_name="f")


# --- truncated and gzip downloads ----------------------------------------------------------------


class _ShortHandler(http.server.BaseHTTPRequestHandler):
    """Promises the whole payload, sends a third of it, then closes the connection."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format, *args):
        pass


def test_truncated_download_is_refused_and_nothing_cached(home):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShortHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DownloadError, match="truncated") as err:
            fetch(f"http://127.0.0.1:{httpd.server_address[1]}/f", SHA, mirror_paths=[],
                  cache_name="x/f", timeout=10)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "\n" not in str(err.value)
    assert list((home / "cache" / "x").iterdir()) == []


def test_gzip_files_are_pinned_by_their_payload(server, home, tmp_path):
    """Two gzip copies of one payload (different header: name, time) both pass; a cut one fails."""
    root = tmp_path / "www"
    a = gzip.compress(PAYLOAD, mtime=0)
    b = gzip.compress(PAYLOAD, mtime=1504176606)
    assert a != b
    (root / "a.gz").write_bytes(a)
    (root / "b.gz").write_bytes(b)
    (root / "cut.gz").write_bytes(b[: len(b) // 2])
    for name in ("a.gz", "b.gz"):
        path = fetch(f"{server}/{name}", SHA, mirror_paths=[], cache_name=f"z/{name}", gzip=True)
        assert gzip.decompress(path.read_bytes()) == PAYLOAD
    with pytest.raises(DownloadError, match="is broken") as err:
        fetch(f"{server}/cut.gz", SHA, mirror_paths=[], cache_name="z/cut.gz", gzip=True)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in (home / "cache" / "z").iterdir()) == ["a.gz", "b.gz"]
    # The file's own hash is not the pin: a gzip whose payload differs is refused.
    (root / "other.gz").write_bytes(gzip.compress(PAYLOAD + b"x"))
    with pytest.raises(DownloadError, match=f"expected {SHA}"):
        fetch(f"{server}/other.gz", SHA, mirror_paths=[], cache_name="z/other.gz", gzip=True)


def test_file_urls_work(tmp_path, home):
    (tmp_path / "local.txt").write_bytes(PAYLOAD)
    path = fetch((tmp_path / "local.txt").as_uri(), SHA, mirror_paths=[], cache_name="f/local.txt")
    assert path.read_bytes() == PAYLOAD


# --- built-ins through the table ------------------------------------------------------------------


def _toy_source(base: str, sha: str) -> Source:
    def build(inputs: Path, out: Path) -> None:  # upper-cases its one input
        out.mkdir(parents=True)
        (out / "big.txt").write_bytes((inputs / "in" / "file.txt").read_bytes().upper())

    return Source(
        name="toy", origin="a test", license="none",
        files=(Remote("toy/file.txt", f"{base}/file.txt", SHA), Built("toy/big.txt", sha)),
        inputs=(Input("in/file.txt", f"{base}/file.txt"),), build=build,
    )


def test_builtin_remote_and_built_files_from_the_network(server, home):
    big = hashlib.sha256(PAYLOAD.upper()).hexdigest()
    src = _toy_source(server, big)
    assert fetch_builtin("toy", "file.txt", source=src) == home / "cache" / "toy" / "file.txt"
    path = fetch_builtin("toy", "toy/big.txt", source=src)
    assert path == home / "cache" / "toy" / "big.txt" and path.read_bytes() == PAYLOAD.upper()
    assert sorted(p.name for p in (home / "cache").iterdir()) == ["toy"]  # no build folder left


def test_builtin_mirror_is_used_before_building(home, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "toy").mkdir(parents=True)
    (mirror / "toy" / "big.txt").write_bytes(PAYLOAD.upper())
    monkeypatch.setenv("GENLOOP_DATA_MIRROR", str(mirror))
    src = _toy_source("http://127.0.0.1:9", hashlib.sha256(PAYLOAD.upper()).hexdigest())
    assert fetch_builtin("toy", "big.txt", source=src) == mirror / "toy" / "big.txt"
    (mirror / "toy" / "big.txt").write_bytes(b"tampered")
    with pytest.raises(DownloadError, match="mirror file .*big.txt has sha256"):
        fetch_builtin("toy", "big.txt", source=src)


def test_every_builtin_is_pinned_and_hashed():
    """A real host, a pinned path (a commit in GitHub URLs), a sha256 for every file."""
    assert set(SOURCES) == {"tinyshakespeare", "tang-poems", "mnist", "fashion-mnist"}
    github = re.compile(r"^https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{7,40}/")
    for src in SOURCES.values():
        assert src.files and src.origin and src.license
        for f in src.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), (src.name, f.path)
            assert f.path.split("/")[0] in {"tinyshakespeare", "tang_poems", "mnist",
                                            "fashion_mnist"}
        assert src.urls, src.name
        for url in src.urls:
            assert github.match(url) or url.startswith("https://ossci-datasets.s3.amazonaws.com/")
            assert "genloop-data" not in url and "example" not in url
        if any(isinstance(f, Built) for f in src.files):
            assert src.build is not None and src.inputs


MIRROR = Path(os.environ.get("GENLOOP_DATA_MIRROR")
              or Path(__file__).resolve().parents[3] / "shared" / "data")


@pytest.mark.skipif(not MIRROR.is_dir(), reason="no shared data mirror here")
def test_the_table_hashes_are_the_mirror_files(monkeypatch):
    """The pinned hashes describe the shared copies: text files by their bytes (through
    fetch_builtin's mirror path), IDX files by header + array bytes of the mirror's npz."""
    monkeypatch.setenv("GENLOOP_DATA_MIRROR", str(MIRROR))
    # the same file, however the mirror was named (CI may give a relative path)
    assert fetch_builtin("tinyshakespeare", "input.txt").resolve() == (
        MIRROR / "tinyshakespeare" / "input.txt").resolve()
    for name in ("train.jsonl", "valid.jsonl"):
        assert fetch_builtin("tang-poems", name).resolve() == (MIRROR / "tang_poems" / name).resolve()
    for name in ("mnist", "fashion-mnist"):
        folder = MIRROR / name.replace("-", "_")
        for f in SOURCES[name].files:
            split = "test" if "t10k" in f.path else "train"
            part = "images" if "images" in f.path else "labels"
            with np.load(folder / f"{split}.npz") as z:
                arr = z[part]
            header = (0x800 + arr.ndim).to_bytes(4, "big") + b"".join(
                d.to_bytes(4, "big") for d in arr.shape)
            assert hashlib.sha256(header + arr.tobytes()).hexdigest() == f.sha256, f.path
