"""Text datasets: read a corpus, clean it, split it, tokenize it, and store it immutably.

A prepared dataset is the folder every kind shares (``data/folder.py``): the token ids of each
split (``train_ids``, ``val_ids``, memory-mapped by training, nanoGPT style), the tokenizer and
the metadata. The hash covers the preprocessing config and the exact train/val documents, so
the same corpus and config always give the same folder and a model's lineage names its data.

Splits. User corpora are split per document by a hash of its text, so adding a document never
moves another across the split. ``tinyshakespeare`` keeps the literature's contiguous split
(first 90% of characters train) so losses compare with nanoGPT; ``tang-poems`` ships its own
train/valid files. ``shapes-captions`` needs no files: the training captions of ``shapes`` and
``shapes-pairs`` in each of their reference phrasings (``data/scenes.py``; never the paraphrases,
never a held-out composition), one distinct sentence a document — the masked-LM corpus of the
text encoder (recipe ``shapes-mlm``). The tokenizer sees the train split only, so validation
measures what a model does with text it has not seen (unseen characters become ``<unk>``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genloop.data.download import fetch_builtin
from genloop.data.folder import Folder, read_folder, stored, write_folder
from genloop.errors import CorruptArtifact, InvalidInput
from genloop.tokenizers import Tokenizer, TrainedKind, train_tokenizer

FORMAT_VERSION = 1


class TextDataConfig(BaseModel):
    """Where a text corpus comes from and how to turn it into tokens."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["text"] = "text"
    source: str = Field(
        description="built-in (python-docs, tinyshakespeare, tang-poems, shapes-captions) or a path "
        "to a .txt, "
        ".jsonl or a folder of .txt files"
    )
    field: str = Field("text", description="JSON Lines field holding the text; lists are joined")
    tokenizer: TrainedKind = "char"
    vocab_size: int = Field(2048, ge=16, le=65535, description="BPE (or word) vocabulary size")
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    normalize: Literal["NFC", "NFKC", "none"] = "NFC"
    dedupe: bool = True
    name: str | None = Field(
        None,
        pattern=r"^\w[\w.-]{0,99}$",
        description="dataset name; defaults to the built-in's name or the file/folder stem",
    )

    def prepare(self, progress: Callable[[str], None] | None = None,
                tokenizer: Tokenizer | None = None) -> TextDataset:
        """Store the corpus; ``tokenizer``: encode with it (a fine-tune's parent's) instead of
        training one."""
        return prepare_text(self, progress=progress, tokenizer=tokenizer)


@dataclass
class TextDataset:
    """A prepared dataset: token arrays are read-only memory maps of the files under ``path``."""

    name: str
    hash: str
    path: Path
    tokenizer: Tokenizer
    train: np.ndarray
    val: np.ndarray
    meta: dict


# --- reading -----------------------------------------------------------------------------------


@dataclass
class _Corpus:
    """Documents as read, before cleaning. ``layout`` says how they split into train/val:
    "hash" (per document, by hash), "given" (``train``/``val`` as the source ships them) or
    "contiguous" (one text, cut at a character fraction)."""

    layout: Literal["hash", "given", "contiguous"]
    train: list[str]
    val: list[str]


def read_text_file(path: Path) -> str:
    """Read UTF-8 text, refusing binary files with the offset of the first bad byte; line ends
    become ``\n``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise InvalidInput(f"file {path} does not exist") from e
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a folder, not a file") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InvalidInput(f"{path} looks binary: NUL byte at offset {nul}; give a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(
            f"{path} is not UTF-8 text: invalid byte at offset {e.start}; "
            "re-save it as UTF-8 or remove the binary content"
        ) from e
    return text.replace("\r\n", "\n").replace("\r", "\n")


def jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON Lines file; a line that is not
    valid JSON, or not an object, is a one-line error naming it."""
    for n, line in enumerate(read_text_file(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{path} line {n} is not valid JSON: {e.msg}") from None
        if not isinstance(row, dict):
            raise InvalidInput(f"{path} line {n} is not a JSON object")
        yield n, row


def jsonl_texts(path: Path, field: str) -> list[str]:
    """The text in ``field`` of every line of a JSON Lines file (a list of strings is joined)."""
    docs = []
    for n, row in jsonl_objects(path):
        if field not in row:
            raise InvalidInput(f"{path} line {n} has no field {field!r}; name the field that "
                               "holds the text (`field` in a recipe, --field on the command line)")
        value = row[field]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "".join(value)
        if not isinstance(value, str):
            raise InvalidInput(
                f"{path} line {n} field {field!r} is {type(value).__name__}, "
                "not a string or list of strings"
            )
        docs.append(value)
    return docs


def _paragraphs(text: str) -> list[str]:
    """Paragraphs are separated by blank (or whitespace-only) lines."""
    return re.split(r"\n[ \t\f\v]*\n", text)


def _read_user_source(path: Path, field: str) -> _Corpus:
    if path.is_dir():
        files = sorted(path.rglob("*.txt"), key=lambda p: p.relative_to(path).as_posix())
        return _Corpus("hash", [read_text_file(f) for f in files if f.is_file()], [])
    if not path.exists():
        raise InvalidInput(
            f"corpus {path} does not exist (built-ins: {', '.join(sorted(BUILTINS))})"
        )
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _Corpus("hash", _paragraphs(read_text_file(path)), [])
    if suffix == ".jsonl":
        return _Corpus("hash", jsonl_texts(path, field), [])
    raise InvalidInput(
        f"{path} has unsupported extension {path.suffix!r}; use .txt, .jsonl or a folder of .txt"
    )


def _tinyshakespeare(config: TextDataConfig) -> _Corpus:
    path = fetch_builtin("tinyshakespeare", "input.txt")
    return _Corpus("contiguous", [read_text_file(path)], [])


def _tang_poems(config: TextDataConfig) -> _Corpus:
    splits: dict[str, list[str]] = {}
    for split in ("train", "valid"):
        path = fetch_builtin("tang-poems", f"{split}.jsonl")
        rows = (json.loads(line) for line in read_text_file(path).split("\n") if line)
        splits[split] = [r["title"] + "\n" + "\n".join(r["paragraphs"]) for r in rows]
    return _Corpus("given", splits["train"], splits["valid"])


def _python_docs(config: TextDataConfig) -> _Corpus:
    from pydoc_data.topics import topics  # ships with CPython: a corpus that needs no network

    return _Corpus("hash", [topics[k] for k in sorted(topics)], [])


def _shapes_captions(config: TextDataConfig) -> _Corpus:
    from genloop.data.scenes import parse, references
    from genloop.data.shapes import pairs_split, shapes_split

    lines: dict[str, None] = {}
    for split_of in (shapes_split, pairs_split):
        for caption in split_of("train")[2]:
            scene = parse(caption)
            assert scene is not None, "every drawn caption parses"
            lines.update(dict.fromkeys(references(scene)))
    return _Corpus("hash", list(lines), [])


BUILTINS: dict[str, Callable[[TextDataConfig], _Corpus]] = {
    "python-docs": _python_docs,
    "shapes-captions": _shapes_captions,
    "tinyshakespeare": _tinyshakespeare,
    "tang-poems": _tang_poems,
}


# --- preprocessing -----------------------------------------------------------------------------


@dataclass
class _Prepared:
    layout: str
    train: list[str]
    val: list[str]
    documents_read: int
    duplicates_removed: int


def _val_bucket(doc: str) -> int:
    """Deterministic bucket in [0, 10000): same text, same split, on every machine."""
    return int.from_bytes(hashlib.sha256(doc.encode("utf-8")).digest()[:8], "big") % 10000


def _preprocess(config: TextDataConfig) -> _Prepared:
    if config.source in BUILTINS:
        corpus = BUILTINS[config.source](config)
    else:
        corpus = _read_user_source(Path(config.source).expanduser(), config.field)
    where = config.source

    def normalize(doc: str) -> str:
        return doc if config.normalize == "none" else unicodedata.normalize(config.normalize, doc)

    if corpus.layout == "contiguous":
        # One document: no strip, dedupe or eos, so character counts match nanoGPT's split.
        text = normalize(corpus.train[0])
        if not text.strip():
            raise InvalidInput(f"corpus {where} is empty: no non-whitespace text")
        cut = int(len(text) * (1 - config.val_fraction))
        return _Prepared("contiguous", [text[:cut]], [text[cut:]], 1, 0)

    read = len(corpus.train) + len(corpus.val)
    seen: set[str] = set()
    removed = 0
    cleaned: list[list[str]] = []
    # Dedupe runs over train then val, so a val document that repeats a train one is dropped
    # (it would leak training text into the validation loss).
    for docs in (corpus.train, corpus.val):
        out = []
        for doc in docs:
            doc = normalize(doc).strip()
            if not doc:
                continue
            if config.dedupe:
                if doc in seen:
                    removed += 1
                    continue
                seen.add(doc)
            out.append(doc)
        cleaned.append(out)
    train, val = cleaned
    if not train and not val:
        raise InvalidInput(f"corpus {where} is empty: no non-whitespace text after preprocessing")

    if corpus.layout == "hash":
        limit = config.val_fraction * 10000
        docs = train
        train = [d for d in docs if _val_bucket(d) >= limit]
        val = [d for d in docs if _val_bucket(d) < limit]
    n = len(train) + len(val)
    if not val:
        raise InvalidInput(
            f"corpus {where} is too small: its {n} document(s) gave an empty validation split at "
            f"val_fraction={config.val_fraction}; add documents or raise val_fraction"
        )
    if not train:
        raise InvalidInput(
            f"corpus {where} is too small: its {n} document(s) gave an empty training split; "
            "add documents or lower val_fraction"
        )
    return _Prepared(corpus.layout, train, val, read, removed)


def iter_documents(config: TextDataConfig) -> tuple[list[str], list[str]]:
    """The cleaned (normalised, stripped, deduplicated) train and validation documents."""
    p = _preprocess(config)
    return p.train, p.val


def _content_hash(config: TextDataConfig, p: _Prepared, tokenizer: Tokenizer | None = None) -> str:
    """sha256 over the preprocessing config, the given tokenizer (if any) and the exact
    documents of each split.

    Source and name are left out: the documents already say what was read, so moving a file or
    renaming a dataset does not change its identity."""
    h = hashlib.sha256()
    cfg = config.model_dump(exclude={"name", "source", "field"})
    cfg.update(format=FORMAT_VERSION, layout=p.layout)
    if tokenizer is not None:  # only then: datasets that train their own keep their hash
        cfg.update(given_tokenizer=tokenizer.to_json())
    h.update(json.dumps(cfg, sort_keys=True).encode())
    for docs in (p.train, p.val):
        h.update(struct.pack("<Q", len(docs)))
        for d in docs:
            b = d.encode("utf-8")
            h.update(struct.pack("<Q", len(b)))
            h.update(b)
    return h.hexdigest()


def _default_name(source: str) -> str:
    if source in BUILTINS:
        return source
    path = Path(source).expanduser()
    stem = path.stem if path.suffix else path.name
    return re.sub(r"[^\w.-]", "-", stem).lstrip(".-") or "text"


# --- encoding and storage ----------------------------------------------------------------------


def _encode(tok: Tokenizer, docs: list[str], eos: bool) -> np.ndarray:
    """Token ids of ``docs`` concatenated, each followed by ``eos`` when asked."""
    dtype = np.uint16 if tok.vocab_size < 65536 else np.uint32
    parts = []
    tail = np.array([tok.eos_id], dtype=dtype)
    for d in docs:
        parts.append(np.asarray(tok.encode(d), dtype=dtype))
        if eos:
            parts.append(tail)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def prepare_text(
    config: TextDataConfig, *, progress: Callable[[str], None] | None = None,
    tokenizer: Tokenizer | None = None,
) -> TextDataset:
    """Read, clean, split and tokenize a corpus; store it (or reuse the stored copy).

    The folder is built in a temp dir beside its final place and renamed in one step, so a
    crash or an error never leaves a half-written dataset behind."""
    say = progress or (lambda _msg: None)
    # 1. Read and clean.
    say(f"reading {config.source}")
    p = _preprocess(config)
    name = config.name or _default_name(config.source)
    digest = _content_hash(config, p, tokenizer)
    # 2. Reuse: datasets are immutable, so one with the same hash is the same dataset.
    if (done := stored(name, digest)) is not None:
        say(f"reusing {done.path}")
        return _text_dataset(done)
    # 3. Tokenizer from the train split only (or the one given).
    if tokenizer is None:
        say(f"training {config.tokenizer} tokenizer on {len(p.train)} train documents")
    tok = tokenizer or train_tokenizer(config.tokenizer, p.train, vocab_size=config.vocab_size)
    # 4. Encode; one contiguous text carries no eos (it is one document cut in two).
    say("encoding")
    eos = p.layout != "contiguous"
    train_ids, val_ids = _encode(tok, p.train, eos), _encode(tok, p.val, eos)
    meta = {
        "format": FORMAT_VERSION,
        "kind": "text",
        "name": name,
        "hash": digest,
        "source": config.source,
        "config": config.model_dump() | {"name": name},
        "split": p.layout,
        "dtype": train_ids.dtype.name,
        "counts": {
            "documents_read": p.documents_read,
            "documents": {"train": len(p.train), "val": len(p.val)},
            "duplicates_removed": p.duplicates_removed,
            "train_tokens": int(train_ids.size),
            "val_tokens": int(val_ids.size),
            "vocab_size": tok.vocab_size,
            "characters": {
                "train": sum(map(len, p.train)),
                "val": sum(map(len, p.val)),
            },
        },
    }
    # 5. Write atomically (the one dataset folder of every kind).
    say(f"writing {name}/{digest[:16]}")
    folder = write_folder(meta, {"train_ids": train_ids, "val_ids": val_ids}, tok)
    return _text_dataset(folder)


def load_text_dataset(path: str | os.PathLike[str]) -> TextDataset:
    """Open a prepared text dataset folder; token arrays are read-only memory maps."""
    return _text_dataset(read_folder(path, "text"))


def _text_dataset(folder: Folder) -> TextDataset:
    if folder.tokenizer is None:
        raise CorruptArtifact(f"text dataset {folder.path} has no tokenizer; prepare it again")
    return TextDataset(name=folder.name, hash=folder.hash, path=folder.path,
                       tokenizer=folder.tokenizer, train=folder.arrays["train_ids"],
                       val=folder.arrays["val_ids"], meta=folder.meta)


__all__ = [
    "BUILTINS",
    "TextDataConfig",
    "TextDataset",
    "iter_documents",
    "load_text_dataset",
    "prepare_text",
]
