"""Fetch a built-in data file: from a local mirror, else the cache, else its public source.

Why this order: many machines running genloop (CI, air-gapped labs, classrooms) have no network,
so a mirror directory (``GENLOOP_DATA_MIRROR``) is tried first; the cache saves a second
download. Every file, whatever its origin, is checked against a pinned sha256 (of the
decompressed payload for gzip files), so a dataset's content hash always refers to the same
bytes. A file that a builder makes (``sources.Built``) is built from its source's inputs in a
temporary folder and enters the cache only if every built file has its recorded hash.
"""

from __future__ import annotations

import gzip as gzip_lib
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

from genloop.atomic import sha256_file
from genloop.config import settings
from genloop.data.sources import SOURCES, Built, Remote, Source
from genloop.errors import DownloadError

_CHUNK = 1 << 20


def content_sha256(path: Path, *, gzip: bool = False) -> str:
    """sha256 of the file, or of its decompressed payload; a broken gzip file is a DownloadError."""
    if not gzip:
        return sha256_file(path)
    h = hashlib.sha256()
    try:
        with gzip_lib.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise DownloadError(f"{path} is not a readable gzip file ({e})") from e
    return h.hexdigest()


def fetch(
    url: str,
    sha256: str,
    *,
    mirror_paths: Sequence[str],
    cache_name: str,
    gzip: bool = False,
    timeout: float = 30.0,
) -> Path:
    """Return a local path to the file at ``url`` whose content hashes to ``sha256``.

    Looks in ``settings().data_mirror / p`` for each ``p`` in ``mirror_paths``, then at
    ``settings().cache_dir / cache_name``, then downloads into the cache (streamed to a temp file
    in the cache dir, verified, then renamed, so the cache never holds a partial or wrong file).
    """
    found = _mirrored(mirror_paths, sha256, gzip) or _cached(cache_name, sha256, gzip)
    if found is not None:
        return found
    cached = settings().cache_dir / cache_name
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        hint = " or ".join(mirror_paths) or cache_name
        _download(url, tmp, timeout, f"set GENLOOP_DATA_MIRROR to a folder holding {hint}, "
                  f"or place the file at {cached}")
        try:
            got = content_sha256(tmp, gzip=gzip)
        except DownloadError as e:
            raise DownloadError(f"download of {url} is broken ({e.__cause__}); the file was "
                                "discarded") from e
        if got != sha256:
            raise DownloadError(
                f"download of {url} has sha256 {got}, expected {sha256}; the file was discarded"
            )
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return cached


def fetch_builtin(name: str, file: str, *, source: Source | None = None,
                  timeout: float = 30.0) -> Path:
    """A file of the built-in ``name`` (a key of ``sources.SOURCES``; or ``source`` itself), by
    its path (``"mnist/train-images-idx3-ubyte.gz"``) or its base name."""
    src = source or SOURCES[name]
    entry = src.file(file)
    if isinstance(entry, Remote):
        return fetch(entry.url, entry.sha256, mirror_paths=[entry.path], cache_name=entry.path,
                     gzip=entry.gzip, timeout=timeout)
    found = _mirrored([entry.path], entry.sha256) or _cached(entry.path, entry.sha256)
    if found is not None:
        return found
    _build(src, timeout)
    return settings().cache_dir / entry.path


# --- the three places --------------------------------------------------------------------------


def _mirrored(paths: Sequence[str], sha256: str, gzip: bool = False) -> Path | None:
    """A mirror file with the wrong hash is an error, not something to route around: the user
    pointed us at it on purpose."""
    mirror = settings().data_mirror
    for rel in paths if mirror is not None else ():
        assert mirror is not None  # no paths are walked without a mirror
        candidate = mirror / rel
        if candidate.is_file():
            try:
                got = content_sha256(candidate, gzip=gzip)
            except DownloadError as e:
                raise DownloadError(f"mirror {e}; replace it with the original file") from e
            if got != sha256:
                raise DownloadError(
                    f"mirror file {candidate} has sha256 {got}, expected {sha256}; "
                    "replace it with the original file"
                )
            return candidate
    return None


def _cached(name: str, sha256: str, gzip: bool = False) -> Path | None:
    """A wrong file in the cache (an older version, a disk error) is dropped and fetched again."""
    cached = settings().cache_dir / name
    if not cached.is_file():
        return None
    try:
        if content_sha256(cached, gzip=gzip) == sha256:
            return cached
    except DownloadError:
        pass
    cached.unlink()
    return None


def _download(url: str, dest: Path, timeout: float, advice: str) -> None:
    """Stream ``url`` into ``dest``; a network error or a short body is a one-line DownloadError."""
    try:
        with open(dest, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            size = 0
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                size += len(chunk)
            promised = resp.headers.get("Content-Length")
            if promised is not None and promised.isdigit() and size < int(promised):
                raise http.client.IncompleteRead(b"", int(promised) - size)
            out.flush()
            os.fsync(out.fileno())
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or type(e).__name__
        if isinstance(e, http.client.IncompleteRead):
            reason = f"truncated: the connection closed with {e.expected} bytes still to come"
        raise DownloadError(f"could not download {url} ({reason}); {advice}") from e


def _build(src: Source, timeout: float) -> None:
    """Fetch the inputs, run the builder, check every built file, then move them into the cache;
    on any failure nothing is left behind."""
    cache = settings().cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=cache, prefix=f".build-{src.name}."))
    try:
        inputs, out = work / "inputs", work / "out"
        for item in src.inputs:
            dest = inputs / item.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            _download(item.url, dest, timeout, f"set GENLOOP_DATA_MIRROR to a folder holding "
                      f"{', '.join(f.path for f in src.files)}")
        if src.build is None:
            raise DownloadError(f"{src.name} lists built files but no builder")
        try:
            src.build(inputs, out)
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise DownloadError(f"building {src.name} from {src.origin} failed ({e})") from e
        built = [f for f in src.files if isinstance(f, Built)]
        for f in built:
            got = sha256_file(out / Path(f.path).name)
            if got != f.sha256:
                raise DownloadError(f"built {f.path} has sha256 {got}, expected {f.sha256}; "
                                    "nothing was cached")
        for f in built:
            (cache / f.path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(out / Path(f.path).name, cache / f.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["content_sha256", "fetch", "fetch_builtin", "sha256_file"]
