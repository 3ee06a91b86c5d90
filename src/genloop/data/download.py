"""Fetch a public data file: from a local mirror, else the cache, else the network.

Why this order: many machines running genloop (CI, air-gapped labs, classrooms) have no network,
so a mirror directory (``GENLOOP_DATA_MIRROR``) is tried first; the cache saves a second
download. Every file, whatever its origin, is checked against a pinned sha256, so a dataset's
content hash always refers to the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from genloop.atomic import sha256_file
from genloop.config import settings
from genloop.errors import DownloadError

_CHUNK = 1 << 20


def fetch(
    url: str,
    sha256: str,
    *,
    mirror_paths: Sequence[str],
    cache_name: str,
    timeout: float = 30.0,
) -> Path:
    """Return a local path to the file at ``url`` whose sha256 is ``sha256``.

    Looks in ``settings().data_mirror / p`` for each ``p`` in ``mirror_paths``, then at
    ``settings().cache_dir / cache_name``, then downloads into the cache (streamed to a temp file
    in the cache dir, verified, then renamed, so the cache never holds a partial or wrong file).
    """
    s = settings()
    # 1. Mirror: a file there with the wrong hash is an error, not something to route around,
    #    since the user pointed us at it on purpose.
    if s.data_mirror is not None:
        for rel in mirror_paths:
            candidate = s.data_mirror / rel
            if candidate.is_file():
                got = sha256_file(candidate)
                if got != sha256:
                    raise DownloadError(
                        f"mirror file {candidate} has sha256 {got}, expected {sha256}; "
                        "replace it with the original file"
                    )
                return candidate

    # 2. Cache: a wrong file there (an older version, a disk error) is dropped and re-fetched.
    cached = s.cache_dir / cache_name
    if cached.is_file():
        if sha256_file(cached) == sha256:
            return cached
        cached.unlink()

    # 3. Network.
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                while chunk := resp.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise DownloadError(
                f"could not download {url} ({reason}); set GENLOOP_DATA_MIRROR to a folder "
                f"holding {' or '.join(mirror_paths) or cache_name}, or place the file at {cached}"
            ) from e
        got = h.hexdigest()
        if got != sha256:
            raise DownloadError(
                f"download of {url} has sha256 {got}, expected {sha256}; the file was discarded"
            )
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return cached


__all__ = ["fetch", "sha256_file"]
