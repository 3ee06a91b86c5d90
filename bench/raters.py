"""Scripted raters for the loop benchmark: they stand in for the users who rate outputs.

Each rater is a taste: ``score(text) -> float`` in [0, 1] (graded, 1 = exactly what it likes),
``rating(text) -> 1..5`` (what it posts as a rating; 4 or more exactly when the text is liked,
so a threshold of 4 keeps the liked outputs), and ``prefer(a, b) -> 1 | 0 | -1`` (a better,
tie, b better). ``liked(text)`` is ``score == 1``.

``TangVerse`` likes a well-formed regulated verse: two or four lines, each line two halves of
five or of seven characters — all alike — joined by "，" and closed by "。" (or "？" / "！"), the
corpus's punctuation (``data/text.py``: a poem is ``title\\nline\\nline…``; the completion after
the title's newline is the lines). ``ShakespeareBrevity`` likes a short speech that ends a
sentence: the second taste, on a different model.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

HAN = "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff"
_HALF = re.compile(f"[{HAN}]+")
_LINE = re.compile(f"([{HAN}]+)，([{HAN}]+)([。？！])")
_END = "<|endoftext|>"


class Rater(Protocol):
    name: str

    def score(self, text: str) -> float: ...

    def rating(self, text: str) -> int: ...

    def prefer(self, a: str, b: str) -> int: ...


class _Graded:
    """Rating and preference from a graded ``score``."""

    name = "graded"

    def score(self, text: str) -> float:
        raise NotImplementedError

    def liked(self, text: str) -> bool:
        return self.score(text) == 1.0

    def rating(self, text: str) -> int:
        """5 when liked, else 1..3 by the graded score (so rating ≥ 4 ⟺ liked)."""
        s = self.score(text)
        return 5 if s == 1.0 else 1 + min(2, int(3 * s))

    def prefer(self, a: str, b: str) -> int:
        sa, sb = self.score(a), self.score(b)
        return 0 if abs(sa - sb) < 1e-9 else (1 if sa > sb else -1)


def poem_lines(text: str) -> list[str]:
    """The lines of a completion: what follows the title's newline, up to the end of the poem
    (an end-of-text marker, if the text still has one), blank lines dropped."""
    body = text.split(_END, 1)[0]
    return [line.strip() for line in body.strip().split("\n") if line.strip()]


@dataclass(frozen=True)
class TangVerse(_Graded):
    """Well-formed regulated verse; the graded score is the share of lines shaped
    "half，half。" with halves of the poem's length (5 or 7, the most common among its lines),
    halved when the poem has a number of lines other than two or four."""

    name: str = "tang-verse"

    @staticmethod
    def line_length(line: str) -> int | None:
        """5 or 7 when ``line`` is a well-formed line of halves of that length, else None."""
        m = _LINE.fullmatch(line)
        if m is None or len(m.group(1)) != len(m.group(2)) or len(m.group(1)) not in (5, 7):
            return None
        return len(m.group(1))

    def score(self, text: str) -> float:
        lines = poem_lines(text)
        if not lines:
            return 0.0
        lengths = [self.line_length(line) for line in lines]
        shaped = [n for n in lengths if n is not None]
        if not shaped:
            return 0.0
        common = max((5, 7), key=shaped.count)
        share = sum(1 for n in lengths if n == common) / len(lines)
        return share if len(lines) in (2, 4) else share / 2

    def well_formed(self, text: str) -> bool:
        return self.score(text) == 1.0


@dataclass(frozen=True)
class ShakespeareBrevity(_Graded):
    """A short speech that ends a sentence: at most ``limit`` characters (of the completion,
    whitespace trimmed) whose last character is ".", "!" or "?"; the graded score falls with the
    length past the limit and halves without a sentence end."""

    limit: int = 80
    name: str = "shakespeare-brevity"

    def score(self, text: str) -> float:
        body = text.split(_END, 1)[0].strip()
        if not body:
            return 0.0
        ends = body[-1] in ".!?"
        short = 1.0 if len(body) <= self.limit else self.limit / len(body)
        return short * (1.0 if ends else 0.5)


RATERS: dict[str, type[_Graded]] = {"tang-verse": TangVerse, "shakespeare-brevity": ShakespeareBrevity}


@dataclass(frozen=True)
class Comparison:
    """The rater's verdicts of ``child`` over ``parent`` on the same prompts."""

    wins: int
    losses: int
    ties: int

    @property
    def win_rate(self) -> float:
        """wins / (wins + losses): ties left out (1.0 when every verdict is a tie)."""
        decided = self.wins + self.losses
        return self.wins / decided if decided else 1.0

    @property
    def win_rate_ties_half(self) -> float:
        total = self.wins + self.losses + self.ties
        return (self.wins + 0.5 * self.ties) / total if total else 0.5

    def figures(self) -> dict[str, float]:
        return {"wins": self.wins, "losses": self.losses, "ties": self.ties,
                "win_rate": self.win_rate, "win_rate_ties_half": self.win_rate_ties_half}


def compare(rater: _Graded, child: list[str], parent: list[str]) -> Comparison:
    if len(child) != len(parent):
        raise ValueError(f"{len(child)} child outputs against {len(parent)} parent outputs")
    verdicts = [rater.prefer(c, p) for c, p in zip(child, parent, strict=True)]
    return Comparison(verdicts.count(1), verdicts.count(-1), verdicts.count(0))


# --- titles -----------------------------------------------------------------------------------


MAX_TITLE = 20  # characters: a title, its newline and four lines of seven fit a context of 96


def _titles(path: Path) -> list[str]:
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line:
            title = json.loads(line)["title"].strip()
            if title and "\n" not in title and len(title) <= MAX_TITLE:
                seen.setdefault(title, None)
    return list(seen)


def title_split(folder: str | Path, feedback: int, held_out: int = 200, seed: int = 0
                ) -> tuple[list[str], list[str]]:
    """``feedback`` titles drawn from the training split and ``held_out`` evaluation titles
    from the validation split that never occur in training (so never used for feedback), of at
    most ``MAX_TITLE`` characters, each
    drawn with its own generator seeded by ``seed`` (so the held-out titles do not depend on how
    many feedback titles are drawn); a title is prompted as ``title + "\\n"``."""
    folder = Path(folder)
    train = _titles(folder / "train.jsonl")
    known = set(train)
    unseen = [t for t in _titles(folder / "valid.jsonl") if t not in known]
    if feedback > len(train) or held_out > len(unseen):
        raise ValueError(f"asked for {feedback} + {held_out} titles; there are {len(train)} + {len(unseen)}")
    return (random.Random(f"feedback-{seed}").sample(train, feedback),
            random.Random(f"held-out-{seed}").sample(unseen, held_out))
