"""The ``preferences`` kind: which of two completions of a prompt people preferred.

Paired (DPO, a reward model's Bradley–Terry loss)::

    {"prompt": "...", "chosen": "...", "rejected": "..."}

Unpaired (KTO: one completion and whether it was desirable)::

    {"prompt": "...", "completion": "...", "label": true}

Stored through ``data/records.py``; completions end with the end-of-text token.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from genloop.data.folder import Folder, read_folder
from genloop.data.records import RecordsDataConfig, RecordSplit, prepare_records, record_split
from genloop.tokenizers import Tokenizer


class PreferencesDataConfig(RecordsDataConfig):
    kind: Literal["preferences"] = "preferences"
    form: Literal["paired", "unpaired"] = Field(
        "paired", description="paired: prompt, chosen, rejected; unpaired: prompt, completion, label")
    prompt_field: str = "prompt"
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    completion_field: str = "completion"
    label_field: str = Field("label", description="unpaired: true = desirable")

    def prepare(self, progress: Callable[[str], None] | None = None,
                tokenizer: Tokenizer | None = None) -> PreferencesDataset:
        if self.form == "paired":
            fields = {"prompt": self.prompt_field, "chosen": self.chosen_field,
                      "rejected": self.rejected_field}
            folder = prepare_records("preferences", self, fields, eos_fields=("chosen", "rejected"),
                                     tokenizer=tokenizer, progress=progress)
        else:
            fields = {"prompt": self.prompt_field, "completion": self.completion_field}
            folder = prepare_records("preferences", self, fields, label=self.label_field,
                                     eos_fields=("completion",), tokenizer=tokenizer,
                                     progress=progress)
        return PreferencesDataset.from_folder(folder)


@dataclass
class PreferencesDataset:
    name: str
    hash: str
    path: Path
    tokenizer: Tokenizer
    train: RecordSplit  # paired: prompt, chosen, rejected; unpaired: prompt, completion + labels
    val: RecordSplit
    meta: dict[str, Any]

    @property
    def paired(self) -> bool:
        return self.meta["label"] is None

    @classmethod
    def from_folder(cls, folder: Folder) -> PreferencesDataset:
        assert folder.tokenizer is not None
        return cls(folder.name, folder.hash, folder.path, folder.tokenizer,
                   record_split(folder, "train"), record_split(folder, "val"), folder.meta)


def load_preferences_dataset(path: str | os.PathLike[str]) -> PreferencesDataset:
    return PreferencesDataset.from_folder(read_folder(path, "preferences"))
