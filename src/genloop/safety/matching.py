"""Finding what a policy names in a text: folding, blocklist terms and regular expressions.

Every check runs on the *folded* text — NFKC (full-width ``ｋｉｌｌ`` and ligatures become
``kill``), case-folded, invisible format characters (zero-width spaces, soft hyphens, joiners)
dropped — with a map from each folded character back to the original one, so a hit's span is a
span of what the user wrote or the model produced, and redaction replaces exactly that.

Traditional Chinese characters fold to simplified ones, character by character (OpenCC's
``TSCharacters`` table, from ``opencc-python-reimplemented`` when it is installed), so a term
written in either script matches text in the other: 殺人 holds 杀人 and 杀人 holds 殺人.

Latin-script terms match on word boundaries ("kill" is not in "skill"); a term containing CJK
characters matches as a substring, since Chinese and Japanese put no spaces between words (and a
CJK character next to a Latin term is a boundary: "kill他" holds "kill").
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Hit:
    """One finding: which check, its category and action, and the span it covers in the
    original text (``start``..``end``)."""

    check: str  # "blocklist" | "pattern" | "pii" | "classifier"
    category: str
    action: str  # "block" | "redact" | "flag"
    start: int
    end: int
    replacement: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"check": self.check, "category": self.category, "action": self.action,
                "start": self.start, "end": self.end}


def fold(text: str) -> tuple[str, list[int]]:
    """``text`` folded for matching, and for each folded character the index of the original
    character it came from (one original character may fold to several: "ß" → "ss").

    Character by character: the fold of ``a + b`` is the fold of ``a`` followed by that of ``b``
    (its indices shifted by ``len(a)``), which lets a stream fold only its new text
    (``safety.stream``)."""
    out: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        folded = _fold_char(ch)
        if folded:
            out.append(folded)
            index.extend([i] * len(folded))
    return "".join(out), index


@functools.lru_cache(maxsize=65536)
def _fold_char(ch: str) -> str:
    """One character folded: "" for an invisible format character (zero-width space/joiners,
    soft hyphen, BOM), else NFKC and case-folded, a CJK character in its simplified form."""
    if unicodedata.category(ch) == "Cf":
        return ""
    folded = unicodedata.normalize("NFKC", ch).casefold()
    if folded >= "\u2e80" and len(folded) == 1:  # one CJK character: its simplified form
        folded = _t2s().get(folded, folded)
    return folded


@functools.cache
def _t2s() -> dict[str, str]:
    """Traditional → simplified Chinese, one character to one (the first of OpenCC's choices:
    乾 → 干); empty when opencc-python-reimplemented is not installed."""
    try:
        import opencc  # type: ignore[import-untyped]
    except ImportError:
        return {}
    table = Path(opencc.__file__).parent / "dictionary" / "TSCharacters.txt"
    pairs = {}
    for line in table.read_text(encoding="utf-8").splitlines():
        trad, _, simple = line.partition("\t")
        first = simple.split(" ")[0]
        if len(trad) == 1 and len(first) == 1:
            pairs[trad] = first
    return pairs


def original_span(index: list[int], start: int, end: int, length: int) -> tuple[int, int]:
    """The span of the original text that folded characters ``start..end`` came from."""
    if start >= len(index):
        return length, length
    return index[start], (index[end - 1] + 1) if end > start else index[start]


_CJK = re.compile(r"[\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf"
                  r"\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f]")


def is_cjk(ch: str) -> bool:
    return bool(_CJK.match(ch))


def _wordlike(ch: str) -> bool:
    return (ch.isalnum() or ch == "_") and not is_cjk(ch)


class TermMatcher:
    """The terms of one blocklist, folded once, found in folded text with one regex pass (any run
    of whitespace matches a term's space: "kill  them" holds "kill them")."""

    def __init__(self, terms: list[str]):
        folded = sorted({" ".join(fold(t)[0].split()) for t in terms}, key=len, reverse=True)
        self.longest = max(len(t) for t in folded)
        # longest first, so "kill them" wins over "kill" at the same place
        self.terms = [(re.compile(r"\s+".join(re.escape(w) for w in t.split())),
                       any(is_cjk(c) for c in t)) for t in folded]
        self.regex = re.compile("|".join(p.pattern for p, _ in self.terms))

    def find(self, folded: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        pos = 0
        while True:
            m = self.regex.search(folded, pos)
            if m is None:
                return spans
            s = m.start()
            # the longest term at s that sits on word boundaries (a CJK term always does)
            end = next((t.end() for p, cjk in self.terms
                        if (t := p.match(folded, s)) and (cjk or _bounded(folded, s, t.end()))),
                       None)
            if end is None:
                pos = s + 1
                continue
            spans.append((s, end))
            pos = end


def _bounded(folded: str, s: int, e: int) -> bool:
    """Whether a Latin term at ``s..e`` starts and ends on word boundaries."""
    before = s > 0 and _wordlike(folded[s - 1]) and _wordlike(folded[s])
    after = e < len(folded) and _wordlike(folded[e]) and _wordlike(folded[e - 1])
    return not (before or after)


def pattern_width(pattern: str) -> int | None:
    """The longest match ``pattern`` can make, or None when it is unbounded (``\\d+``)."""
    try:
        from re import _parser  # type: ignore[attr-defined]  # Python ≥ 3.11
    except ImportError:  # pragma: no cover
        return None
    _low, high = _parser.parse(pattern).getwidth()
    return None if high >= _parser.MAXREPEAT or high > 1 << 20 else int(high)
