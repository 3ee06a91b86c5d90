"""Personal data in text: emails, phone numbers, payment card numbers (validated by Luhn).

Run on the folded text (``matching.fold``), so full-width digits and ``＠`` are caught too.
Where two findings overlap the card wins over the phone number (a 16-digit card number has a
phone number's shape in it), then the longer one. Each is replaced by ``[EMAIL]``, ``[PHONE]``
or ``[CARD]`` when redacted.

Phone numbers: international (``+CC`` then 7–14 digits, with spaces, dots, dashes or one pair of
parentheses), North American (``(555) 123-4567``, ``555-123-4567``), Chinese mobiles (11 digits
starting 13–19, with or without separators) and Chinese landlines (``010-12345678``). Bare runs
of digits of another shape are not phone numbers: too many ordinary numbers look like them.
"""

from __future__ import annotations

import re

EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])")
_SEP = r"[ .-]?"
PHONE = re.compile(
    r"(?<![0-9+])(?:"
    r"\+[0-9]{1,3}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{2,4}){1,4}"  # +CC ...
    r"|\([0-9]{3}\)[ ]?[0-9]{3}[ .-][0-9]{4}"  # (555) 123-4567
    r"|[0-9]{3}[.-][0-9]{3}[.-][0-9]{4}"  # 555-123-4567
    r"|1[3-9][0-9](?:[ -]?[0-9]{4}){2}"  # 138 0013 8000
    r"|0[0-9]{2,3}-[0-9]{7,8}"  # 010-12345678
    r")(?![0-9])")
CARD = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")

PRIORITY = {"card": 0, "email": 1, "phone": 2}
REPLACEMENT = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]"}
LONGEST = 40  # characters of the longest card or phone match (separators included)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum (ISO/IEC 7812-1): every second digit from the right doubled."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def find_pii(folded: str, categories: set[str]) -> list[tuple[str, int, int]]:
    """(category, start, end) of every finding of ``categories`` in ``folded`` text, not
    overlapping, in order."""
    found: list[tuple[str, int, int]] = []
    if "card" in categories:
        for m in CARD.finditer(folded):
            digits = _digits(m.group())
            if 13 <= len(digits) <= 19 and luhn_valid(digits):
                found.append(("card", *m.span()))
    if "email" in categories:
        found += [("email", *m.span()) for m in EMAIL.finditer(folded)]
    if "phone" in categories:
        for m in PHONE.finditer(folded):
            if 7 <= len(_digits(m.group())) <= 15:
                found.append(("phone", *m.span()))
    found.sort(key=lambda f: (PRIORITY[f[0]], -(f[2] - f[1]), f[1]))
    kept: list[tuple[str, int, int]] = []
    for f in found:
        if all(f[2] <= k[1] or f[1] >= k[2] for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f[1])
