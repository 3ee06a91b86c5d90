"""Build the ``tang-poems`` train/valid split from the chinese-poetry sources.

The algorithm is the one ``shared/data/tang_poems/SOURCE.md`` records under "How it was built";
the numbered steps below are its steps. The input is a folder holding the 58 files
``全唐诗/poet.tang.0.json`` … ``poet.tang.57000.json`` and the two 唐诗三百首 lists of
chinese-poetry/chinese-poetry at a pinned commit; the output is ``train.jsonl`` and
``valid.jsonl``, byte for byte the published files when the inputs are the pinned ones (the
downloader checks their sha256). Everything is deterministic: file order, first-kept
deduplication and a sha256 bucket split; no randomness, no clock.

Near-duplicates (used by steps 3 and 4): two poems are near-duplicates when their sets of
character trigrams (taken inside verses) overlap by at least half of the smaller set, or when,
laid line over line — the shorter at every couplet offset of the longer, same line length — at
least half of the shorter's characters are identical. ``near_duplicate`` states the test for one
pair; ``NearDuplicates`` answers it against many poems at once (a trigram index for the first
test, one numpy comparison per group of poems of the same shape for the second).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

POEM_FILES = tuple(f"全唐诗/poet.tang.{i}.json" for i in range(0, 58000, 1000))
ANTHOLOGY_FILES = ("全唐诗/唐诗三百首.json", "蒙学/tangshisanbaishou.json")
ANTHOLOGY_TAG = "唐诗三百首"
OUTPUTS = ("train.jsonl", "valid.jsonl")

_HAN = "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff"  # CJK Unified, Extension A, Compatibility
_MARKS = "，。？！；"
_LOST = "囗"  # U+56D7: this corpus's box for a lost character
_SHAPE = re.compile(f"(?:[{_HAN}]+[{_MARKS}])+")
_VERSE = re.compile(f"([{_HAN}]+)([{_MARKS}])")
_FOOTNOTE = re.compile(r"\[[一二三四五六七八九十〇0-9]+\]")  # [一] in a title: a note marker
_SUPPLIED = re.compile(r"\[([^\[\]]+)\]")  # [X]: a character the editors supplied
_NOTE = re.compile(r"[（(][^）)]*[）)]")  # （一作…） in an anthology's text
_FORMS = {(5, 4): "五言绝句", (7, 4): "七言绝句", (5, 8): "五言律诗", (7, 8): "七言律诗"}


@dataclass
class Poem:
    """A poem that passed step 2: its verses and the mark after each, as the source has them."""

    id: str
    title: str
    author: str
    verses: list[str]
    marks: list[str]
    tags: list[str]

    @property
    def paragraphs(self) -> list[str]:
        """Couplets: verse + mark + verse + mark."""
        return [
            self.verses[i] + self.marks[i] + self.verses[i + 1] + self.marks[i + 1]
            for i in range(0, len(self.verses), 2)
        ]

    def row(self) -> dict[str, Any]:
        form = _FORMS[(len(self.verses[0]), len(self.verses))]
        return {"id": self.id, "title": self.title, "author": self.author,
                "paragraphs": self.paragraphs, "form": form}


@dataclass
class Counts:
    """How many poems each step read, dropped and kept (for the report and the tests)."""

    read: int = 0
    not_regular: int = 0  # step 2: shape, notes, boxes, non-BMP characters, other forms
    no_title_or_author: int = 0
    lost_character: int = 0  # step 2: 囗
    anthology: int = 0  # step 3
    exact_duplicates: int = 0  # step 4
    near_duplicates: int = 0  # step 4
    kept: int = 0
    train: int = 0
    valid: int = 0
    withheld: int = 0  # step 5: buckets 95..99


def build(sources: Path, out: Path) -> Counts:
    """Write ``out/train.jsonl`` and ``out/valid.jsonl`` from the chinese-poetry files in
    ``sources`` (laid out as in the repository)."""
    counts = Counts()
    # 1. Every poem of the 58 files, in file order.
    entries = [e for name in POEM_FILES for e in _load_list(sources / name)]
    counts.read = len(entries)
    # 2. Regular 五言/七言 绝句 and 律诗 only; titles cleaned of bracket notes.
    poems: list[Poem] = []
    for entry in entries:
        poem = regular_poem(entry)
        if poem is None:
            counts.not_regular += 1
        elif not poem.title.strip() or not poem.author.strip():
            counts.no_title_or_author += 1
        elif any(_LOST in v for v in poem.verses):
            counts.lost_character += 1
        else:
            poems.append(poem)
    # 3. Remove the 唐诗三百首 anthology: tagged, or a near-duplicate of a poem of either list.
    anthology = NearDuplicates()
    for name in ANTHOLOGY_FILES:
        for paragraphs in _anthology_texts(json.loads((sources / name).read_text("utf-8"))):
            anthology.add(loose_verses(paragraphs))
    outside = [p for p in poems if ANTHOLOGY_TAG not in p.tags and not anthology.match(p.verses)]
    counts.anthology = len(poems) - len(outside)
    # 4. Deduplicate, keeping the first in file order: exact verse text, then near-duplicates.
    kept: list[Poem] = []
    seen: set[tuple[str, ...]] = set()
    index = NearDuplicates()
    for poem in outside:
        if tuple(poem.verses) in seen:
            counts.exact_duplicates += 1
        elif index.match(poem.verses):
            counts.near_duplicates += 1
        else:
            seen.add(tuple(poem.verses))
            index.add(poem.verses)
            kept.append(poem)
    counts.kept = len(kept)
    # 5. Split by a sha256 bucket of the fields as written: < 90 train, 90..94 valid, rest withheld.
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "valid": []}
    for poem in kept:
        row = poem.row()
        b = bucket(row)
        if b < 90:
            splits["train"].append(row)
        elif b < 95:
            splits["valid"].append(row)
        else:
            counts.withheld += 1
    counts.train, counts.valid = len(splits["train"]), len(splits["valid"])
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (out / f"{split}.jsonl").write_bytes(text.encode("utf-8"))
    return counts


# --- step 1 and 2: reading, the regular-poem filter, titles -------------------------------------


def _load_list(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path} is not a JSON list of poems")
    return data


def regular_poem(entry: dict[str, Any]) -> Poem | None:
    """The poem if its joined text is 4 or 8 Han verses of 5 (or all of 7) characters, each
    followed by one of ，。？！；; else None."""
    text = "".join(str(p).strip() for p in entry.get("paragraphs") or [])
    if not _SHAPE.fullmatch(text):
        return None
    pairs = _VERSE.findall(text)
    lengths = {len(v) for v, _ in pairs}
    if len(pairs) not in (4, 8) or lengths not in ({5}, {7}):
        return None
    return Poem(
        id=str(entry.get("id", "")), title=clean_title(str(entry.get("title") or "")),
        author=str(entry.get("author") or ""), verses=[v for v, _ in pairs],
        marks=[m for _, m in pairs], tags=list(entry.get("tags") or []),
    )


def clean_title(title: str) -> str:
    """Drop footnote markers such as ``[一]``; un-bracket editor-supplied characters ``[X]``."""
    return _SUPPLIED.sub(r"\1", _FOOTNOTE.sub("", title))


# --- step 3: the anthology lists ----------------------------------------------------------------


def _anthology_texts(data: Any) -> Iterator[list[str]]:
    """The ``paragraphs`` of every poem in a list, however nested (the two lists differ)."""
    if isinstance(data, dict):
        if isinstance(data.get("paragraphs"), list):
            yield [str(p) for p in data["paragraphs"]]
        for value in data.values():
            if isinstance(value, (list, dict)):
                yield from _anthology_texts(value)
    elif isinstance(data, list):
        for item in data:
            yield from _anthology_texts(item)


def loose_verses(paragraphs: Sequence[str]) -> list[str]:
    """Verses of a poem of any form: notes in parentheses removed, brackets opened, then the runs
    of Han characters."""
    text = "".join(p.strip() for p in paragraphs)
    text = _NOTE.sub("", text).replace("[", "").replace("]", "")
    return re.findall(f"[{_HAN}]+", text)


# --- step 4: near-duplicates --------------------------------------------------------------------


def trigrams(verses: Iterable[str]) -> set[str]:
    return {v[i:i + 3] for v in verses for i in range(len(v) - 2)}


def _line_length(verses: Sequence[str]) -> int | None:
    lengths = {len(v) for v in verses}
    return lengths.pop() if len(lengths) == 1 else None


def near_duplicate(a: Sequence[str], b: Sequence[str]) -> bool:
    """The near-duplicate test for one pair of poems given as verses."""
    ta, tb = trigrams(a), trigrams(b)
    if ta and tb and 2 * len(ta & tb) >= min(len(ta), len(tb)):
        return True
    width = _line_length(a)
    if width is None or width != _line_length(b) or not a or not b:
        return False
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    for offset in range(0, len(long) - len(short) + 1, 2):
        window = long[offset:offset + len(short)]
        same = sum(x == y for s, t in zip(short, window, strict=True) for x, y in zip(s, t, strict=True))
        if 2 * same >= len(short) * width:
            return True
    return False


@dataclass
class _Shape:
    """Poems of one line length and line count, one row of code points each: (N, lines, width)."""

    rows: np.ndarray
    n: int = 0

    def append(self, grid: np.ndarray) -> None:
        if self.n == len(self.rows):
            self.rows = np.concatenate([self.rows, np.empty_like(self.rows)])
        self.rows[self.n] = grid
        self.n += 1


@dataclass
class NearDuplicates:
    """Poems added so far; ``match(verses)`` says whether any is a near-duplicate of ``verses``
    (the same answer as ``near_duplicate`` against each, without comparing every pair)."""

    _trigram_sets: list[int] = field(default_factory=list)  # poem -> size of its trigram set
    _postings: dict[str, list[int]] = field(default_factory=dict)  # trigram -> poems
    _shapes: dict[tuple[int, int], _Shape] = field(default_factory=dict)  # (width, lines)

    def add(self, verses: Sequence[str]) -> None:
        grams = trigrams(verses)
        poem = len(self._trigram_sets)
        self._trigram_sets.append(len(grams))
        for g in grams:
            self._postings.setdefault(g, []).append(poem)
        width = _line_length(verses)
        if width is not None and verses:
            key = (width, len(verses))
            if key not in self._shapes:
                self._shapes[key] = _Shape(np.empty((16, len(verses), width), np.uint32))
            self._shapes[key].append(_grid(verses))

    def match(self, verses: Sequence[str]) -> bool:
        grams = trigrams(verses)
        if grams:
            shared = Counter(p for g in grams for p in self._postings.get(g, ()))
            if any(2 * n >= min(len(grams), self._trigram_sets[p]) for p, n in shared.items()):
                return True
        width = _line_length(verses)
        if width is None or not verses:
            return False
        query = _grid(verses)  # (lines, width)
        for (w, lines), shape in self._shapes.items():
            if w != width or shape.n == 0:
                continue
            stored = shape.rows[:shape.n]  # (N, lines, width)
            if lines >= len(verses):  # the query laid over each stored poem at every offset
                need = len(verses) * width
                pairs = [(stored[:, o:o + len(verses)], query)
                         for o in range(0, lines - len(verses) + 1, 2)]
            else:  # each stored poem laid over the query
                need = lines * width
                pairs = [(stored, query[o:o + lines]) for o in range(0, len(verses) - lines + 1, 2)]
            for part, window in pairs:
                if (2 * (part == window).sum(axis=(1, 2)) >= need).any():
                    return True
        return False


def _grid(verses: Sequence[str]) -> np.ndarray:
    return np.array([[ord(c) for c in v] for v in verses], dtype=np.uint32)


# --- step 5: the bucket ---------------------------------------------------------------------------


def bucket(row: dict[str, Any]) -> int:
    """0..99 from sha256 of title, author and paragraphs as written (UTF-8)."""
    key = row["title"] + "\n" + row["author"] + "\n" + "\n".join(row["paragraphs"])
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100


__all__ = ["ANTHOLOGY_FILES", "OUTPUTS", "POEM_FILES", "Counts", "NearDuplicates", "Poem", "bucket",
           "build", "clean_title", "loose_verses", "near_duplicate", "regular_poem", "trigrams"]
