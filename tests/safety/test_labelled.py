"""The labelled set under its policy: every blocked item blocked, no ordinary one touched, every
PII item redacted exactly (bench/moderation.py reports the same figures)."""

from __future__ import annotations

from genloop.safety.moderator import Moderator
from genloop.safety.policy import load_policy

from .labelled import POLICY, labelled


def test_the_labelled_set_in_english_and_chinese() -> None:
    rows = labelled()
    assert {r["lang"] for r in rows} == {"en", "zh"}
    assert {r["label"] for r in rows} == {"blocked", "ordinary", "pii"}
    m = Moderator(load_policy(POLICY))
    misses = []
    for r in rows:
        v = m.check(r["text"], r["stage"])
        ok = {"blocked": v.blocked, "ordinary": v.action == "allow",
              "pii": not v.blocked and v.text == r.get("redacted")}[r["label"]]
        if not ok:
            misses.append((r["label"], r["text"], v.reason(), v.text))
    assert misses == []
