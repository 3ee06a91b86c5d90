"""The fact checker: the claims a text makes about a graph's entities, each checked against it.

Claims are found with the graph's lexicon (relation → phrasings such as ``"{s} lives in {o}"``,
the phrasings the built-in world's templates write with):

1. the text is cut into sentences; each sentence is linked to the graph (exact, alias, fuzzy
   names; embedding similarity when an ``embed`` callable is given);
2. a phrasing is its literal parts around ``{s}`` and ``{o}``; a claim is a place where the
   first slot's filler ends, the middle literal follows (case and runs of spaces ignored), the
   second slot's filler starts, and the literals before and after, if any, are there too;
3. the subject must be a linked entity, or a pronoun (he, she, it, they; 他, 她, 它, 他们)
   standing for the subject of the last claim before it (or, before any claim, the last linked entity that has
   facts of its own); the object is a linked entity, or else the words up to the next
   punctuation (so a value the graph never heard of is still a claim);
4. the verdict: **supported** when the graph holds (subject, relation, object); **contradicted**
   when it holds (subject, relation, o') only for other objects o'; **not_in_graph** when it says
   nothing about (subject, relation). Where two phrasings of different relations read the same
   words, the best verdict stands (supported, then contradicted).

Hallucination, as the benchmarks count it, is contradicted + not_in_graph.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from genloop.knowledge.graph import Graph
from genloop.knowledge.linking import Embed, Link, normalise

VERDICTS = ("supported", "contradicted", "not_in_graph")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|[。！？]+|\n")  # "42.50" and "Ltd.X" do not end one
_PRONOUN = re.compile(r"\b(?:he|she|it|they)\b|他们|她们|它们|他|她|它", re.IGNORECASE)
_ARTICLE = re.compile(r"(?:the|a|an)\s+", re.IGNORECASE)
_VALUE_END = re.compile(
    r"\s*(?:[,;:!?()，。；：！？、]|\.(?=\s|$)|$|\s(?:and|but|while|who|which|whose)\b)")
_ASCII_WORD = re.compile(r"[A-Za-z0-9_]")  # where \b is meant: Chinese has no word edges


@dataclass(frozen=True)
class Claim:
    subject: str  # the canonical entity
    relation: str
    object: str  # the canonical entity, or the words as written when no entity matched
    sentence: str
    verdict: str  # "supported" | "contradicted" | "not_in_graph"
    graph_objects: tuple[str, ...] = ()  # what the graph holds for (subject, relation)


@dataclass(frozen=True)
class Phrasing:
    relation: str
    first: str  # "s" or "o": which slot comes first
    before: re.Pattern[str] | None  # the literal before the first slot, matched at its end
    middle: re.Pattern[str]
    after: re.Pattern[str] | None
    words: int  # how many literal words: the more, the more specific


def _literal(text: str) -> str:
    """A phrasing's words as a pattern: any run of spaces between them; word edges kept."""
    words = r"\s+".join(re.escape(w) for w in text.split())
    return (r"\b" if _ASCII_WORD.match(text.strip()[:1]) else "") + words


def compile_phrasing(relation: str, phrasing: str) -> Phrasing:
    """``"{s} lives in {o}"`` → the patterns that find it (the module docstring, step 2)."""
    first = "s" if phrasing.index("{s}") < phrasing.index("{o}") else "o"
    head, rest = phrasing.split("{" + first + "}", 1)
    middle, tail = rest.split("{" + ("o" if first == "s" else "s") + "}", 1)
    flags = re.IGNORECASE
    # the filler before ends on a word's end, so "\s*" cannot glue words ("{s}'s price is {o}":
    # the possessive sits on the name)
    mid = r"\s*" + _literal(middle) + r"\s*" if middle.strip() else r"\s+"
    if _ASCII_WORD.match(middle.strip()[-1:]):
        mid = mid.removesuffix(r"\s*") + r"\b\s*"  # "is" is not the start of "isolated"
    return Phrasing(
        relation, first,
        re.compile(_literal(head) + r"\s*$", flags) if head.strip() else None,
        re.compile(mid, flags),
        re.compile(r"\s*" + _literal(tail), flags) if tail.strip() else None,
        len((head + middle + tail).split()),
    )


def _phrasings(graph: Graph) -> list[Phrasing]:
    cached = getattr(graph, "_phrasings", None)
    if cached is None:
        cached = [compile_phrasing(r, p) for r, ps in graph.lexicon.items() for p in ps]
        graph._phrasings = cached  # type: ignore[attr-defined]
    return cached


def sentences(text: str) -> list[tuple[int, str]]:
    """(offset, sentence) of each non-empty sentence."""
    out: list[tuple[int, str]] = []
    start = 0
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.end() if m is not None else len(text)
        if text[start:end].strip():
            out.append((start, text[start:end]))
        start = end
    return out


def check(graph: Graph, text: str, embed: Embed | None = None) -> list[Claim]:
    """Every claim ``text`` makes in the graph's lexicon, with its verdict, in text order."""
    phrasings = _phrasings(graph)
    claims: list[Claim] = []
    last_subject: str | None = None
    for _, sentence in sentences(text):
        links = graph.link(sentence, embed=embed)
        for m in _PRONOUN.finditer(sentence):
            if any(link.start <= m.start() < link.end for link in links):
                continue
            standing = last_subject or _last_with_facts(graph, links, m.start())
            if standing is not None:
                links.append(Link(m.group(), standing, m.start(), m.end(), 1.0, "pronoun"))
        links.sort(key=lambda link: link.start)
        fillers = list(links)
        i = 0
        while i < len(fillers):
            filler = fillers[i]
            i += 1
            matches = [(hit, p.words) for p in phrasings
                       if (hit := _match(graph, p, sentence, filler, links))]
            if not matches:
                continue
            # the most specific phrasing of the best verdict: "is made by" over "is", "the price
            # of {s} is" over "{s} is", when both read the words
            supported = [m for m in matches if m[0][2].verdict == "supported"]
            (at, end, claim), _ = max(supported or matches, key=lambda m: (
                m[0][0], m[1], -VERDICTS.index(m[0][2].verdict)))
            claims.append(claim)
            last_subject = claim.subject
            # "... lives in Tolmeria and works for Brinco": the subject carries on after "and"
            if (more := _CARRY_ON.match(sentence, end)) is not None and more.end() > end:
                carry = Link("", claim.subject, more.end(), more.end(), 1.0, "pronoun")
                fillers.insert(i, carry)
    return claims


_CARRY_ON = re.compile(r"\s*(?:,\s*)?(?:and\s+|but\s+)?", re.IGNORECASE)


def _last_with_facts(graph: Graph, links: list[Link], before: int) -> str | None:
    for link in reversed(links):
        if link.end <= before and link.how != "pronoun" and graph.facts(link.entity):
            return link.entity
    return None


def _match(graph: Graph, p: Phrasing, sentence: str, first: Link,
           links: list[Link]) -> tuple[int, int, Claim] | None:
    """(where the second slot starts, where it ends, the claim) of phrasing ``p`` whose first
    slot is ``first``, if the sentence makes it."""
    if p.first == "o" and first.how == "pronoun":
        return None
    if p.before is not None and p.before.search(sentence, 0, first.start) is None:
        return None
    mid = p.middle.match(sentence, first.end)
    if mid is None:
        return None
    at = mid.end()
    if (article := _ARTICLE.match(sentence, at)) is not None and not any(
            link.start == at for link in links):
        at = article.end()
    second = next((link for link in links if link.start == at and link.end > at), None)
    if second is not None and p.after is not None and p.after.match(sentence, second.end) is None:
        second = None
    value: str | None = None
    if p.first == "s":
        subject = first.entity
        if second is not None and second.how != "pronoun":
            obj: str | None = second.entity
            end = second.end
        else:  # the words up to the closing literal or the next punctuation
            stop = p.after.search(sentence, at) if p.after is not None else _VALUE_END.search(sentence, at)
            if stop is None or stop.start() <= at:
                return None
            obj, value, end = None, sentence[at:stop.start()].strip(), stop.start()
    else:
        if second is None:
            return None
        subject, obj, end = second.entity, first.entity, second.end
    held = tuple(t.object for t in graph.facts(subject, p.relation))
    if obj is None:
        assert value is not None
        key = normalise(value)
        obj = next((o for o in held if normalise(o) == key), value)
    if obj in held:
        verdict = "supported"
    elif held:
        verdict = "contradicted"
    else:
        verdict = "not_in_graph"
    return at, end, Claim(subject, p.relation, obj, sentence.strip(), verdict, held)


def summary(claims: Iterable[Claim]) -> dict[str, int]:
    """How many claims of each verdict (every verdict named, zero or not)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for claim in claims:
        counts[claim.verdict] += 1
    return counts
