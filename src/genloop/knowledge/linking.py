"""Entity linking: which spans of a text name which nodes of a graph.

Four ways, each only on words no earlier one claimed. First, names in Chinese or Japanese
script, as substrings (those scripts put no spaces between words); then, at each span length,
longest first:

1. **exact** — a span of words whose normalised form (NFKC, casefold, words joined by one
   space; punctuation between words ignored) is an entity's name;
2. **alias** — the same against the graph's aliases (the link names the canonical entity);
3. **fuzzy** — a span whose character similarity to a name (difflib's ratio, over candidates
   found through a character-trigram index, so a text is not compared with every name) is at
   least ``fuzzy``; only spans of the name's own word count, of 4+ characters, not all digits,
   neither starting nor ending with a stopword;

and then, on what is left:

4. **embedding** — when an ``embed`` callable is given (texts → one row per text; the
   generation layer passes an imported encoder such as MiniLM): spans of up to three words
   against every entity name by cosine similarity, at least ``similarity``.

Links never overlap. Pure Python: no model is loaded here (this layer may not import the
generation layer); the encoder comes in as a callable.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Embed = Callable[[list[str]], np.ndarray]

WORD = re.compile(r"\w+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
MAX_WORDS = 8  # the longest name (in words) that linking looks for
STOPWORDS = frozenset(
    "a an the of in on at to for from by with and or is are was were be been it its he she they "
    "his her their them this that these those what which who whom whose where when how why do "
    "does did has have had not no yes i you we me my your our".split())


@dataclass(frozen=True)
class Link:
    mention: str  # the text as written
    entity: str  # the canonical entity name
    start: int  # character offsets of the mention in the text
    end: int
    score: float  # 1.0 for exact and alias; the similarity for fuzzy and embedding
    how: str  # "exact" | "alias" | "fuzzy" | "embedding"


def normalise(text: str) -> str:
    """The form names are compared in: NFKC, casefolded, its words joined by single spaces."""
    return " ".join(WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def _trigrams(s: str) -> set[str]:
    padded = f"  {s} "
    return {padded[i:i + 3] for i in range(len(padded) - 2)}


class NameIndex:
    """The names linking looks up: normalised name → entity, normalised alias → entity, and a
    trigram index for fuzzy candidates. Built once per graph."""

    def __init__(self, names: Sequence[str], aliases: Mapping[str, str]) -> None:
        self.names: dict[str, str] = {}
        for name in names:
            key = normalise(name)
            if key:
                self.names.setdefault(key, name)
        self.aliases: dict[str, str] = {}
        for alias, entity in aliases.items():
            key = normalise(alias)
            if key and key not in self.names:
                self.aliases.setdefault(key, entity)
        self.words: dict[str, int] = {k: k.count(" ") + 1 for k in (*self.names, *self.aliases)}
        # names in a script written without spaces (Chinese, Japanese): found as substrings,
        # longest first, since a run of such characters is one "word"
        self.unspaced = sorted((k for k in self.words if _CJK.search(k)), key=lambda k: -len(k))
        self.max_words = min(MAX_WORDS, max(self.words.values(), default=1))
        self._grams: dict[str, list[str]] | None = None
        self._embedded: tuple[Embed, list[str], np.ndarray] | None = None

    def lookup(self, key: str) -> tuple[str, str] | None:
        """(entity, how) of a normalised name or alias."""
        if key in self.names:
            return self.names[key], "exact"
        if key in self.aliases:
            return self.aliases[key], "alias"
        return None

    def closest(self, key: str, n: int = 3) -> list[str]:
        """The entities whose names are most like ``key`` (for 'did you mean' messages)."""
        found = self.fuzzy_candidates(key, cutoff=0.5, n=n)
        return list(dict.fromkeys(entity for entity, _ in found))

    def fuzzy_candidates(self, key: str, cutoff: float, n: int = 1,
                         words: int | None = None) -> list[tuple[str, float]]:
        """(entity, ratio) of the names and aliases most like ``key``, best first."""
        if self._grams is None:
            self._grams = defaultdict(list)
            for k in self.words:
                for g in _trigrams(k):
                    self._grams[g].append(k)
        shared: dict[str, int] = defaultdict(int)
        for g in _trigrams(key):
            for k in self._grams.get(g, ()):
                shared[k] += 1
        # the 20 names sharing most trigrams are the only ones worth a ratio
        ranked = sorted(shared, key=lambda k: (-shared[k], k))[:20]
        out = []
        for k in ranked:
            if words is not None and self.words[k] != words:
                continue
            ratio = difflib.SequenceMatcher(None, key, k).ratio()
            if ratio >= cutoff:
                hit = self.lookup(k)
                assert hit is not None
                out.append((hit[0], ratio))
        out.sort(key=lambda e: -e[1])
        return out[:n]

    def name_vectors(self, embed: Embed) -> tuple[list[str], np.ndarray]:
        """Every name and alias key with its unit-length embedding (computed once per encoder)."""
        if self._embedded is None or self._embedded[0] is not embed:
            keys = list(self.words)
            vectors = _unit(np.asarray(embed(keys), dtype=np.float32)) if keys else np.zeros((0, 1))
            self._embedded = (embed, keys, vectors)
        return self._embedded[1], self._embedded[2]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def link_text(index: NameIndex, text: str, embed: Embed | None = None, fuzzy: float = 0.85,
              similarity: float = 0.8) -> list[Link]:
    """The links of ``text`` (see the module's docstring), in text order."""
    # words of the original text (offsets stay true), each in its normalised form
    words = [(m.start(), m.end(), key) for m in WORD.finditer(text) if (key := normalise(m.group()))]
    taken = [False] * len(words)
    links: list[Link] = []

    def span_key(i: int, j: int) -> str:
        return " ".join(w[2] for w in words[i:j])

    def claim(i: int, j: int, entity: str, score: float, how: str) -> None:
        start, end = words[i][0], words[j - 1][1]
        links.append(Link(text[start:end], entity, start, end, round(score, 4), how))
        for k in range(i, j):
            taken[k] = True

    def free(i: int, j: int) -> bool:
        return not any(taken[i:j])

    # 0. names without spaces, inside runs of Chinese or Japanese characters
    folded = unicodedata.normalize("NFKC", text).casefold()
    if index.unspaced and len(folded) == len(text):  # offsets in the folded text are true
        spans: list[tuple[int, int]] = []
        for key in index.unspaced:
            at = folded.find(key)
            while at >= 0:
                end = at + len(key)
                if not any(a < end and at < b for a, b in spans):
                    spans.append((at, end))
                    hit = index.lookup(key)
                    assert hit is not None
                    links.append(Link(text[at:end], hit[0], at, end, 1.0, hit[1]))
                    for k, w in enumerate(words):
                        if w[0] < end and at < w[1]:
                            taken[k] = True
                at = folded.find(key, end)

    # 1-3. at each span length, longest first: exact names and aliases, then near misses (a
    # span that starts or ends with a stopword is not a near miss: "the Varn" is not "Theo Varn")
    for n in range(index.max_words, 0, -1):
        for i in range(len(words) - n + 1):
            if free(i, i + n) and (hit := index.lookup(span_key(i, i + n))) is not None:
                claim(i, i + n, hit[0], 1.0, hit[1])
        if fuzzy >= 1.0:
            continue
        for i in range(len(words) - n + 1):
            if not free(i, i + n) or words[i][2] in STOPWORDS or words[i + n - 1][2] in STOPWORDS:
                continue
            key = span_key(i, i + n)
            if len(key) < 4 or key.replace(" ", "").isdigit():
                continue
            best = index.fuzzy_candidates(key, fuzzy, words=n)
            if best:
                claim(i, i + n, best[0][0], best[0][1], "fuzzy")
    # 4. embedding similarity
    if embed is not None:
        spans = [(i, i + n) for n in range(min(3, index.max_words), 0, -1)
                 for i in range(len(words) - n + 1)
                 if free(i, i + n) and not _all_stopwords(span_key(i, i + n))]
        if spans:
            keys, names = index.name_vectors(embed)
            if keys:
                queries = _unit(np.asarray(embed([span_key(i, j) for i, j in spans]), dtype=np.float32))
                sims = queries @ names.T  # (spans, names)
                best = sims.argmax(axis=1)
                order = sorted(range(len(spans)), key=lambda s: -float(sims[s, best[s]]))
                for s in order:
                    score = float(sims[s, best[s]])
                    i, j = spans[s]
                    if score >= similarity and free(i, j):
                        hit = index.lookup(keys[int(best[s])])
                        assert hit is not None
                        claim(i, j, hit[0], score, "embedding")
    links.sort(key=lambda link: link.start)
    return links


def _all_stopwords(key: str) -> bool:
    return all(w in STOPWORDS for w in key.split(" "))
