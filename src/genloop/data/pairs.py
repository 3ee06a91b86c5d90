"""The ``pairs`` kind: prompt → completion records, for supervised fine-tuning and seq2seq.

    {"prompt": "春望", "completion": "國破山河在，城春草木深。..."}

Stored through ``data/records.py`` (the folder every kind shares): each completion ends with
the end-of-text token, so a model tuned on pairs learns where a completion stops.

A source is a .jsonl file or a built-in name (``BUILTINS``): ``tang-poems`` gives every poem of
the built-in corpus (its train file, then its valid file) as a record with its string fields
(``title``, ``author``, ``form``, ``id``) and ``paragraphs`` joined by newlines (the poem), so
``prompt_field: title`` and ``completion_field: paragraphs`` make title → poem pairs. The
records are split by their text's hash as every records dataset is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from genloop.atomic import atomic_write_text
from genloop.config import settings
from genloop.data import world
from genloop.data.download import fetch_builtin
from genloop.data.folder import Folder, read_folder
from genloop.data.records import RecordsDataConfig, RecordSplit, prepare_records, record_split
from genloop.tokenizers import Tokenizer


class PairsDataConfig(RecordsDataConfig):
    kind: Literal["pairs"] = "pairs"
    source: str = Field(description="a .jsonl file, one record per line, or a built-in: "
                                    + ", ".join(["tang-poems", *world.PAIRS_SOURCES]))
    prompt_field: str = Field("prompt", description="the key of each record's prompt")
    completion_field: str = Field("completion", description="the key of each record's completion")

    def prepare(self, progress: Callable[[str], None] | None = None,
                tokenizer: Tokenizer | None = None) -> PairsDataset:
        path = BUILTINS[self.source]() if self.source in BUILTINS else None
        folder = prepare_records("pairs", self, {"prompt": self.prompt_field,
                                                 "completion": self.completion_field},
                                 eos_fields=("completion",), tokenizer=tokenizer, progress=progress,
                                 path=path)
        return PairsDataset.from_folder(folder)


def _tang_poems() -> Path:
    """The built-in tang-poems as records (a pure function of its pinned files, written once
    into the cache as ``pairs/tang-poems.jsonl``)."""
    out = settings().cache_dir / "pairs" / "tang-poems.jsonl"
    if out.is_file():
        return out
    lines = []
    for split in ("train", "valid"):
        for line in fetch_builtin("tang-poems", f"{split}.jsonl").read_text("utf-8").splitlines():
            if line:
                row = json.loads(line)
                lines.append(json.dumps({k: "\n".join(v) if isinstance(v, list) else v
                                         for k, v in row.items()}, ensure_ascii=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def _world(source: str) -> Callable[[], Path]:
    """The built-in world's pairs source ``source`` (``data/world.py``), written to the cache."""
    return lambda: world.write_pairs(source, settings().cache_dir / "world")


# built-in sources of records, by name: each returns the .jsonl file it stands for
BUILTINS: dict[str, Callable[[], Path]] = {"tang-poems": _tang_poems,
                                          **{name: _world(name) for name in world.PAIRS_SOURCES}}


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
