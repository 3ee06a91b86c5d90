"""Paths as the store keeps them: relative to the workspace, so a copied ``$GENLOOP_HOME`` is
self-contained.

A path inside ``GENLOOP_HOME`` (a dataset, run, model version or generation file) is written
relative to it, in POSIX form, and read back against the ``GENLOOP_HOME`` of the process that
reads it; a path outside the workspace, and every row written before paths were relative, is
an absolute path and is read as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from genloop.config import settings


def stored_path(path: Path | str) -> str:
    """What the store writes for ``path``: relative to the workspace when inside it, else absolute."""
    absolute = Path(path).absolute()
    try:
        return absolute.relative_to(settings().home).as_posix()
    except ValueError:
        return str(absolute)


def workspace_path(stored: str) -> str:
    """What a stored path names now: a relative one under the current workspace, an absolute
    one as it is."""
    path = Path(stored)
    return str(path if path.is_absolute() else settings().home / path)


# a record's path field: resolved against the current workspace when the record is made
WorkspacePath = Annotated[str, AfterValidator(workspace_path)]
