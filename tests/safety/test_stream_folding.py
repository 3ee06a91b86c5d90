"""A stream folds its text piece by piece (``fold`` is per character) and hashes its policy once:
what it releases, redacts and blocks is exactly what folding the whole text every time gave."""

from __future__ import annotations

import random

from genloop.safety.matching import fold
from genloop.safety.moderator import Moderator
from genloop.safety.policy import Blocklist, Pattern, Policy
from genloop.safety.stream import StreamGuard

ALPHABET = list("abcde xyz@.-_0123456789 \n") + ["ß", "ｋ", "ｉ", "ｌ", "\u200b", "\u00ad", "ﬁ",
                                                 "殺", "人", "杀", "İ", "é", "e\u0301", "Ⅻ", "😀"]
TEXTS = ["mail bob.smith@example.com or call +1 (555) 010-9999 now",
         "card 4111 1111 1111 1111 then ｋｉｌｌ the process, kill it; skill 殺人 ok",
         "straße ﬁle soft\u00adhyphen zero\u200bwidth kill他 e\u0301te"]


class _WholeFold(StreamGuard):
    """The guard as it was: ``check`` folds the whole text on every piece."""

    def feed(self, piece: str) -> str:
        if self.blocked is not None or not piece:
            return ""
        self.text += piece
        if self.whole:
            return ""
        verdict = self.moderator.check(self.text, "output")
        if verdict.blocked:
            self.blocked = verdict
            return ""
        return self._release(verdict, self._safe_end(verdict))


def test_folding_a_concatenation_is_folding_its_parts():
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(20)))
        b = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(20)))
        fa, ia = fold(a)
        fb, ib = fold(b)
        assert fold(a + b) == (fa + fb, ia + [i + len(a) for i in ib])


def test_a_stream_releases_redacts_and_blocks_as_folding_the_whole_text_did():
    policies = [Policy(), Policy(blocklists=[Blocklist(category="violence", terms=["kill", "杀人"],
                                                        action="block")]),
                Policy(blocklists=[Blocklist(category="violence", terms=["kill"], action="redact")],
                       patterns=[Pattern(category="ids", pattern=r"x\d+", action="redact")])]
    rng = random.Random(1)
    for policy in policies:
        moderator = Moderator(policy)
        assert moderator.digest == policy.digest
        for text in [*TEXTS, *("".join(rng.choice(ALPHABET) for _ in range(120))
                               for _ in range(20))]:
            cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, 40)))
            pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            guard, ref = StreamGuard(moderator), _WholeFold(moderator)
            for piece in pieces:
                assert guard.feed(piece) == ref.feed(piece)
                assert (guard.sent, guard.blocked) == (ref.sent, ref.blocked)
            assert guard.finish(text) == ref.finish(text)
