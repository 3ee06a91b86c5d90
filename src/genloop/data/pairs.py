"""The ``pairs`` kind: prompt → completion records, for supervised fine-tuning and seq2seq.

    {"prompt": "春望", "completion": "國破山河在，城春草木深。..."}

Stored through ``data/records.py`` (the folder every kind shares): each completion ends with
the end-of-text token, so a model tuned on pairs learns where a completion stops.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from genloop.config import settings
from genloop.data import world
from genloop.data.folder import Folder, read_folder
from genloop.data.records import RecordsDataConfig, RecordSplit, prepare_records, record_split
from genloop.tokenizers import Tokenizer


class PairsDataConfig(RecordsDataConfig):
    kind: Literal["pairs"] = "pairs"
    source: str = Field(description="a .jsonl file, one record per line, or a built-in: "
                                    + ", ".join(world.PAIRS_SOURCES))
    prompt_field: str = Field("prompt", description="the key of each record's prompt")
    completion_field: str = Field("completion", description="the key of each record's completion")

    def prepare(self, progress: Callable[[str], None] | None = None,
                tokenizer: Tokenizer | None = None) -> PairsDataset:
        config = builtin_pairs(self)
        folder = prepare_records("pairs", config, {"prompt": self.prompt_field,
                                                 "completion": self.completion_field},
                                 eos_fields=("completion",), tokenizer=tokenizer, progress=progress)
        return PairsDataset.from_folder(folder)


def builtin_pairs(config: PairsDataConfig) -> PairsDataConfig:
    """``config`` with a built-in source (the world's: ``world-describe``, ``world-qa``,
    ``world-dialogue``) written to the cache as a .jsonl file and named after it."""
    if config.source not in world.PAIRS_SOURCES:
        return config
    path = world.write_pairs(config.source, settings().cache_dir / "world")
    return config.model_copy(update={"source": str(path), "name": config.name or config.source})


@dataclass
class PairsDataset:
    name: str
    hash: str
    path: Path
    tokenizer: Tokenizer
    train: RecordSplit  # fields "prompt", "completion"
    val: RecordSplit
    meta: dict[str, Any]

    @classmethod
    def from_folder(cls, folder: Folder) -> PairsDataset:
        assert folder.tokenizer is not None
        return cls(folder.name, folder.hash, folder.path, folder.tokenizer,
                   record_split(folder, "train"), record_split(folder, "val"), folder.meta)


def load_pairs_dataset(path: str | os.PathLike[str]) -> PairsDataset:
    return PairsDataset.from_folder(read_folder(path, "pairs"))
