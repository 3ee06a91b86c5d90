"""fetch(): mirror, cache and a real local HTTP server (good hash, bad hash, unreachable)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading

import pytest

from genloop.data.download import fetch
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
