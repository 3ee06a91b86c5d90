"""The checks of a policy run on one text: a verdict (allow, redact or block) with its findings.

Failing closed: a check that raises — a classifier whose weights are gone, a bug — is
``ModerationFailed`` naming the check, and the request is refused; no text passes unchecked.
A verdict is what the generation's ``safety`` column records: the action, its categories, every
finding's span (never the text it covers) and the policy's digest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from genloop.errors import GenloopError, InvalidInput
from genloop.safety import pii
from genloop.safety.matching import Hit, TermMatcher, fold, original_span, pattern_width
from genloop.safety.policy import Policy, load_policy, policy_path
from genloop.store import Store

Classify = Callable[[list[str]], list[dict[str, float]]]
StageName = Literal["prompt", "output"]


class ContentBlocked(InvalidInput):
    """A prompt the policy blocks: the request is refused (400, nothing generated or recorded)."""

    code = "content_filter"

    def __init__(self, message: str, param: str = "prompt"):
        super().__init__(message)
        self.param = param


class ModerationFailed(GenloopError):
    """A check raised: the request is refused rather than let through unchecked."""

    exit_code = 8
    http_status = 503


class OutputWithheld(GenloopError):
    """Raised by a streaming face after the output it withheld was recorded."""

    exit_code = 9


@dataclass
class Verdict:
    stage: StageName
    text: str  # what may be shown: redacted, or "" when blocked
    hits: list[Hit] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # category → score (rules: 1.0)
    checked: bool = True
    policy: str = ""

    @property
    def blocked(self) -> bool:
        return any(h.action == "block" for h in self.hits)

    @property
    def redacted(self) -> bool:
        return not self.blocked and any(h.action == "redact" for h in self.hits)

    @property
    def action(self) -> Literal["allow", "flag", "redact", "block"]:
        return "block" if self.blocked else "redact" if self.redacted else (
            "flag" if self.hits else "allow")

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(h.category for h in self.hits))

    def reason(self) -> str:
        """Why, in words: 'blocked: violence (blocklist), email (pii)'."""
        if not self.hits:
            return "allowed"
        acting = [h for h in self.hits if h.action == self.action] or self.hits
        named = dict.fromkeys(f"{h.category} ({h.check})" for h in acting)
        verb = {"block": "blocked", "redact": "redacted", "flag": "flagged"}[self.action]
        return f"{verb}: {', '.join(named)}"

    def record(self) -> dict[str, Any]:
        return {"action": self.action, "checked": self.checked, "categories": self.categories,
                "reason": self.reason(), "hits": [h.as_dict() for h in self.hits],
                "scores": self.scores, "policy": self.policy}


class Moderator:
    """A policy ready to check texts; ``classify`` scores texts by label (the policy's
    classifier, loaded on first use by ``load_classify``)."""

    def __init__(self, policy: Policy, load_classify: Callable[[], Classify] | None = None):
        self.policy = policy
        self._load_classify = load_classify
        self._classify: Classify | None = None
        self._lock = threading.Lock()
        self.blocklists = [(b, TermMatcher(b.terms)) for b in policy.blocklists]
        import re

        self.patterns = [(p, re.compile(p.pattern, re.IGNORECASE)) for p in policy.patterns]
        self.pii = {c: a for c, a in policy.pii.model_dump().items() if a != "off"}
        self.digest = policy.digest  # what its verdicts name the policy by (hashed once)

    @property
    def holdback(self) -> int:
        """Characters a stream holds back: at least as long as any match a rule can make
        (unbounded patterns are capped by ``stream_holdback``)."""
        widths = [self.policy.stream_holdback, *(m.longest for _, m in self.blocklists),
                  *(w for p, _ in self.patterns if (w := pattern_width(p.pattern)) is not None)]
        if self.pii:
            widths.append(pii.LONGEST)
        return max(widths)

    @property
    def holds_whole_output(self) -> bool:
        """A blocking classifier scores the whole text: a stream sends nothing before the end."""
        c = self.policy.classifier
        return c is not None and c.action == "block" and "outputs" in self.policy.apply_to

    @property
    def categories(self) -> list[str]:
        """Every category this policy can report."""
        c = self.policy.classifier
        return list(dict.fromkeys([*(b.category for b in self.policy.blocklists),
                                   *(p.category for p in self.policy.patterns), *self.pii,
                                   *(c.labels if c is not None else [])]))

    def preload(self) -> None:
        """Load the policy's classifier now (a server checks it before it starts)."""
        if self.policy.classifier is not None and self._load_classify is not None:
            with self._lock:
                self._classify = self._classify or self._load_classify()

    def check(self, text: str, stage: StageName, *, always: bool = False,
              folded: tuple[str, list[int]] | None = None) -> Verdict:
        """Every check of the policy on ``text``; ``ModerationFailed`` if one raises.
        ``always``: even at a stage the policy does not apply to (``/v1/moderations``).
        ``folded``: ``fold(text)`` when the caller has it already (a stream folds as it grows)."""
        if not always and f"{stage}s" not in self.policy.apply_to:
            return Verdict(stage, text, checked=False, policy=self.digest)
        hits: list[Hit] = []
        scores: dict[str, float] = {}
        folded_text, index = fold(text) if folded is None else folded
        for name, run in (("blocklist", self._blocklists), ("pattern", self._patterns),
                          ("pii", self._pii), ("classifier", self._classifier)):
            try:
                found, found_scores = run(text, folded_text, index)
            except GenloopError as e:
                raise ModerationFailed(f"moderation check {name} failed, so the request is "
                                       f"refused: {e}") from e
            except Exception as e:  # fail closed on anything
                raise ModerationFailed(f"moderation check {name} failed, so the request is "
                                       f"refused: {type(e).__name__}: {e}") from e
            hits += found
            for category, score in found_scores.items():
                scores[category] = max(score, scores.get(category, 0.0))
        hits.sort(key=lambda h: (h.start, -(h.end - h.start)))
        shown = "" if any(h.action == "block" for h in hits) else redact(text, hits)
        return Verdict(stage, shown, hits, scores, policy=self.digest)

    def _blocklists(self, text: str, folded: str, index: list[int]) -> tuple[list[Hit], dict]:
        hits = []
        for rule, matcher in self.blocklists:
            for s, e in matcher.find(folded):
                start, end = original_span(index, s, e, len(text))
                hits.append(Hit("blocklist", rule.category, rule.action, start, end,
                                rule.replacement or f"[{rule.category.upper()}]"))
        return hits, {h.category: 1.0 for h in hits}

    def _patterns(self, text: str, folded: str, index: list[int]) -> tuple[list[Hit], dict]:
        hits = []
        for rule, regex in self.patterns:
            for m in regex.finditer(folded):
                if m.end() == m.start():
                    continue
                start, end = original_span(index, m.start(), m.end(), len(text))
                hits.append(Hit("pattern", rule.category, rule.action, start, end,
                                rule.replacement or f"[{rule.category.upper()}]"))
        return hits, {h.category: 1.0 for h in hits}

    def _pii(self, text: str, folded: str, index: list[int]) -> tuple[list[Hit], dict]:
        hits = []
        for category, s, e in pii.find_pii(folded, set(self.pii)):
            start, end = original_span(index, s, e, len(text))
            hits.append(Hit("pii", category, self.pii[category], start, end,
                            pii.REPLACEMENT[category]))
        return hits, {h.category: 1.0 for h in hits}

    def _classifier(self, text: str, folded: str, index: list[int]) -> tuple[list[Hit], dict]:
        rule = self.policy.classifier
        if rule is None or not text.strip():
            return [], {}
        with self._lock:
            if self._classify is None:
                if self._load_classify is None:
                    raise InvalidInput(f"classifier {rule.model}: no loader for it")
                self._classify = self._load_classify()
        scores = self._classify([text])[0]
        missing = [label for label in rule.labels if label not in scores]
        if missing:
            raise InvalidInput(f"classifier {rule.model} has no label {missing[0]!r} "
                               f"(its labels: {', '.join(scores)})")
        tripped = {label: scores[label] for label in rule.labels}
        hits = [Hit("classifier", label, rule.action, 0, len(text))
                for label, p in tripped.items() if p >= rule.threshold]
        return hits, tripped


def redact(text: str, hits: list[Hit]) -> str:
    """``text`` with every redacting hit's span replaced (overlapping ones: the first wins)."""
    out, pos = [], 0
    for h in sorted((h for h in hits if h.action == "redact"), key=lambda h: h.start):
        if h.start < pos:
            continue
        out += [text[pos : h.start], h.replacement]
        pos = h.end
    out.append(text[pos:])
    return "".join(out)


_CACHE: dict[tuple[str, str], tuple[tuple[int, int] | None, Moderator]] = {}
_CACHE_LOCK = threading.Lock()


def workspace_moderator(store: Store | None = None, path: Path | None = None) -> Moderator:
    """The workspace's policy as a Moderator, reread when the file changes (its mtime and size)."""
    store = store or Store()
    path = path or policy_path()
    try:
        stat = path.stat()
        stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        stamp = None
    key = (str(path), store.url)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    policy = load_policy(path)
    moderator = Moderator(policy, _classifier_loader(store, policy))
    with _CACHE_LOCK:
        _CACHE[key] = (stamp, moderator)
    return moderator


def _classifier_loader(store: Store, policy: Policy) -> Callable[[], Classify] | None:
    if policy.classifier is None:
        return None
    ref = policy.classifier.model

    def load() -> Classify:
        from genloop.safety.classifier import load_classifier

        return load_classifier(store, ref)[1].scores

    return load
