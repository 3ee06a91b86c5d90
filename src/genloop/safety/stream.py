"""Moderating a stream: no text leaves before it has been checked in its context.

Each new piece is appended and the whole text so far is checked again; text is released only up
to a safe point — ``Moderator.holdback`` characters before the end (as long as the longest match
any rule can make), moved back to the start of a run of characters without spaces that reaches
the held tail (an email address may be longer than that), and to the start of any finding that
straddles it. A rule that blocks stops the stream at once: what was held is never sent, and the
choice ends with ``finish_reason: "content_filter"``. Redacted findings go out redacted. A
blocking classifier scores the whole text, so with one nothing is released before the end.
"""

from __future__ import annotations

from genloop.safety.matching import fold, is_cjk
from genloop.safety.moderator import Moderator, Verdict


def _joined(a: str, b: str) -> bool:
    """Whether a cut between ``a`` and ``b`` would split a run (an email, a number, a word)."""
    return not (a.isspace() or b.isspace() or is_cjk(a) or is_cjk(b))


class StreamGuard:
    """One choice's text as it streams: ``feed`` each piece, send what it returns; ``finish``
    with the final text gives the rest and the verdict on the whole."""

    def __init__(self, moderator: Moderator):
        self.moderator = moderator
        self.hold = moderator.holdback
        self.whole = moderator.holds_whole_output
        self.text = ""
        self._folded: list[str] = []  # fold(text), extended piece by piece (fold is per character)
        self._index: list[int] = []
        self.sent = 0  # characters of ``text`` released (before redaction)
        self.blocked: Verdict | None = None

    def feed(self, piece: str) -> str:
        """What of the text so far may be sent now ("" while it is held, and once blocked)."""
        if self.blocked is not None or not piece:
            return ""
        folded, index = fold(piece)
        self._folded.append(folded)
        self._index.extend(i + len(self.text) for i in index)
        self.text += piece
        if self.whole:
            return ""
        verdict = self.moderator.check(self.text, "output",
                                       folded=("".join(self._folded), self._index))
        if verdict.blocked:
            self.blocked = verdict
            return ""
        return self._release(verdict, self._safe_end(verdict))

    def finish(self, text: str | None = None) -> tuple[str, Verdict]:
        """The rest of the (final) text, redacted, and the verdict on all of it; "" when blocked."""
        if text is not None:
            self.text = text
        verdict = self.moderator.check(self.text, "output")
        if verdict.blocked or self.blocked is not None:
            return "", verdict if verdict.blocked else self.blocked  # type: ignore[return-value]
        return self._release(verdict, len(self.text)), verdict

    def _safe_end(self, verdict: Verdict) -> int:
        text = self.text
        end = len(text) - self.hold
        if end <= self.sent:
            return self.sent
        while end > self.sent and _joined(text[end - 1], text[end]):
            end -= 1
        moved = True
        while moved:  # a finding the cut straddles: cut before it (it may straddle another)
            moved = False
            for hit in verdict.hits:
                if hit.start < end < hit.end:
                    end, moved = hit.start, True
        return max(end, self.sent)

    def _release(self, verdict: Verdict, end: int) -> str:
        out, pos = [], self.sent
        for hit in sorted((h for h in verdict.hits if h.action == "redact"), key=lambda h: h.start):
            if hit.start < pos or hit.end > end:
                continue
            out += [self.text[pos : hit.start], hit.replacement]
            pos = hit.end
        out.append(self.text[pos:end])
        self.sent = max(self.sent, end)
        return "".join(out)
