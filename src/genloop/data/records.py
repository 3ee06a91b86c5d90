"""Datasets of records with text fields — the shared reading, splitting and encoding behind the
``pairs`` and ``preferences`` kinds.

A source is a JSON Lines file, one record per line, each with the kind's fields. Records are
split into train/validation by a hash of their text (adding a record never moves another), each
field is tokenized on its own, and every field is stored as a ragged array: all its token ids
concatenated (``<split>_<field>_ids``) plus where each record's ids start
(``<split>_<field>_offsets``, one more than the records). The tokenizer is trained on the train
split's text, or given: fine-tuning data must use the parent model's tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from genloop.data.folder import Folder, stored, write_folder
from genloop.data.text import jsonl_objects
from genloop.errors import InvalidInput
from genloop.tokenizers import Tokenizer, train_tokenizer

FORMAT_VERSION = 1


class RecordsDataConfig(BaseModel):
    """What every record kind's data section shares (the kind adds its field names)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="a .jsonl file, one record per line")
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = Field(2048, ge=16, le=65535, description="BPE vocabulary size")
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    normalize: Literal["NFC", "NFKC", "none"] = "NFC"
    name: str | None = Field(None, pattern=r"^\w[\w.-]{0,99}$",
                             description="dataset name; defaults to the file's stem")
    origin: dict[str, Any] | None = Field(
        None, description="where the records came from (from feedback: the model, the counts, "
        "filters and threshold); kept in the dataset's meta and part of its hash")

    @model_serializer(mode="wrap")
    def _without_unset_origin(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """No ``origin`` key when there is none: the datasets and recipes from before it keep
        their dumps, so their hashes."""
        dumped = handler(self)
        if dumped.get("origin", ...) is None:
            del dumped["origin"]
        return dumped


@dataclass
class Ragged:
    """One text field of every record: token ids concatenated, and where each record starts."""

    ids: np.ndarray  # (total,) uint16/uint32
    offsets: np.ndarray  # (records + 1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class RecordSplit:
    """The records of one split, field by field (``fields["prompt"][i]`` = record i's prompt)."""

    fields: dict[str, Ragged]
    labels: np.ndarray | None = None  # (records,) int8 for kinds with a label per record

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))


def read_records(path: Path, fields: Sequence[str], label: str | None = None
                 ) -> list[tuple[tuple[str, ...], int | None]]:
    """Records of a .jsonl file: each field a string; ``label`` (optional) a boolean.
    A missing file, a line that is not a JSON object, a missing or non-string field is a
    one-line error naming the line."""
    if path.suffix.lower() != ".jsonl":
        raise InvalidInput(f"{path}: records come from a .jsonl file (one JSON object per line)")
    rows: list[tuple[tuple[str, ...], int | None]] = []
    wanted = [*fields, *([label] if label else [])]
    for n, row in jsonl_objects(path):
        missing = [f for f in wanted if f not in row]
        if missing:
            raise InvalidInput(f"{path} line {n} has no field {missing[0]!r} "
                               f"(each record needs {', '.join(wanted)})")
        values = []
        for f in fields:
            if not isinstance(row[f], str):
                raise InvalidInput(f"{path} line {n} field {f!r} is {type(row[f]).__name__}, "
                                   "not a string")
            values.append(row[f])
        value = None
        if label:
            if not isinstance(row[label], bool):
                raise InvalidInput(f"{path} line {n} field {label!r} must be true or false")
            value = int(row[label])
        rows.append((tuple(values), value))
    if not rows:
        raise InvalidInput(f"{path} holds no records")
    return rows


def _bucket(values: tuple[str, ...]) -> int:
    blob = "\x1f".join(values).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") % 10000


def encode_ragged(tok: Tokenizer, texts: list[str], eos: bool = False) -> Ragged:
    """Each text's token ids (with end-of-text when ``eos``), as one ragged array."""
    dtype = np.uint16 if tok.vocab_size < 65536 else np.uint32
    parts = [tok.encode(t) + ([tok.eos_id] if eos else []) for t in texts]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    ids = np.fromiter((i for p in parts for i in p), dtype=dtype, count=int(offsets[-1]))
    return Ragged(ids, offsets)


def prepare_records(
    kind: str, config: RecordsDataConfig, fields: dict[str, str], *, label: str | None = None,
    eos_fields: Sequence[str] = (), tokenizer: Tokenizer | None = None,
    progress: Callable[[str], None] | None = None, path: Path | None = None,
) -> Folder:
    """Read, split, tokenize and store the records of ``config.source`` (or of ``path``, the
    file a built-in source name stands for).

    ``fields`` maps the stored field name to the source's key (``{"prompt": "question"}``);
    ``eos_fields`` end with the end-of-text token (what a model generates ends there)."""
    say = progress or (lambda _msg: None)
    path = path or Path(config.source).expanduser()
    say(f"reading {path}")
    rows = read_records(path, list(fields.values()), label)

    def normalize(s: str) -> str:
        return s if config.normalize == "none" else unicodedata.normalize(config.normalize, s)

    rows = [(tuple(normalize(v) for v in values), y) for values, y in rows]
    if len(rows) < 2:
        raise InvalidInput(f"{path}: one record cannot be split into training and validation; "
                           "add records")
    # split by bucket; a small file whose buckets all fall on one side gives up its lowest (or
    # highest) one, so both splits have a record and the split is still a function of the text
    buckets = [_bucket(values) for values, _ in rows]
    limit = config.val_fraction * 10000
    limit = min(max(limit, min(buckets) + 1), max(buckets))
    train = [r for r, b in zip(rows, buckets, strict=True) if b >= limit]
    val = [r for r, b in zip(rows, buckets, strict=True) if b < limit]
    if not train or not val:  # every record has the same text
        raise InvalidInput(f"{path}: its {len(rows)} records are all the same; add records")
    # the identity: the settings that shape the ids, the tokenizer if given, and every record
    h = hashlib.sha256()
    settings = config.model_dump(exclude={"name", "source"})
    settings.update(format=FORMAT_VERSION, kind=kind, fields=list(fields), label=label,
                    given_tokenizer=tokenizer.to_json() if tokenizer is not None else None)
    h.update(json.dumps(settings, sort_keys=True).encode())
    for split in (train, val):
        h.update(struct.pack("<Q", len(split)))
        for values, y in split:
            for v in values:
                b = v.encode("utf-8")
                h.update(struct.pack("<Q", len(b)) + b)
            h.update(struct.pack("<q", -1 if y is None else y))
    digest = h.hexdigest()
    name = config.name or (re.sub(r"[^\w.-]", "-", path.stem).lstrip(".-") or kind)
    if (done := stored(name, digest)) is not None:
        say(f"reusing {done.path}")
        return done
    if tokenizer is None:
        say(f"training {config.tokenizer} tokenizer on {len(train)} train records")
        tokenizer = train_tokenizer(config.tokenizer, [v for values, _ in train for v in values],
                                    vocab_size=config.vocab_size)
    arrays: dict[str, np.ndarray] = {}
    counts: dict[str, Any] = {"records": {"train": len(train), "val": len(val)}, "tokens": {}}
    for split_name, split in (("train", train), ("val", val)):
        for j, field_name in enumerate(fields):
            r = encode_ragged(tokenizer, [values[j] for values, _ in split], field_name in eos_fields)
            arrays[f"{split_name}_{field_name}_ids"] = r.ids
            arrays[f"{split_name}_{field_name}_offsets"] = r.offsets
            counts["tokens"][f"{split_name}_{field_name}"] = int(r.offsets[-1])
        if label:
            arrays[f"{split_name}_labels"] = np.array([y for _, y in split], dtype=np.int8)
    meta = {"format": FORMAT_VERSION, "kind": kind, "name": name, "hash": digest,
            "source": config.source, "config": config.model_dump() | {"name": name},
            "fields": list(fields), "label": label, "counts": counts,
            "vocab_size": tokenizer.vocab_size}
    if config.origin is not None:
        meta["origin"] = config.origin
    say(f"writing {name}/{digest[:16]}")
    return write_folder(meta, arrays, tokenizer)


def record_split(folder: Folder, split: str) -> RecordSplit:
    """One split of a stored records dataset, field by field (memory-mapped)."""
    a = folder.arrays
    fields = {f: Ragged(a[f"{split}_{f}_ids"], a[f"{split}_{f}_offsets"]) for f in folder.meta["fields"]}
    labels = a.get(f"{split}_labels")
    return RecordSplit(fields, labels)
