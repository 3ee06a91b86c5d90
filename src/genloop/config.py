"""Workspace settings: where files live and which database holds the rows.

Read from the environment each time they are asked for, so tests and faces can point genloop at a
fresh workspace by setting ``GENLOOP_HOME``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    data_mirror: Path | None
    cache_dir: Path

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def generations_dir(self) -> Path:
        return self.home / "generations"


def settings() -> Settings:
    """Current settings from the environment (``GENLOOP_HOME``, ``GENLOOP_DB_URL``,
    ``GENLOOP_DATA_MIRROR``, ``GENLOOP_CACHE``)."""
    home = Path(os.environ.get("GENLOOP_HOME", ".genloop")).expanduser().absolute()
    db_url = os.environ.get("GENLOOP_DB_URL") or f"sqlite:///{home / 'genloop.db'}"
    mirror = os.environ.get("GENLOOP_DATA_MIRROR")
    cache = Path(os.environ.get("GENLOOP_CACHE", home / "cache")).expanduser().absolute()
    return Settings(
        home=home,
        db_url=db_url,
        data_mirror=Path(mirror).expanduser().absolute() if mirror else None,
        cache_dir=cache,
    )
