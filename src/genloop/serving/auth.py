"""Who is calling, and may they: API keys (Bearer, or Basic with the key as password for the
studio's browser) and a token-bucket rate limit per key.

Keys are checked against the store on every request (one indexed read), so a revoked key stops
working at once. Only SHA-256 digests of keys are stored (``Store.verify_key``); nothing here
logs a key.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
import time
from dataclasses import dataclass

from genloop.errors import GenloopError


class Unauthorized(GenloopError):
    http_status = 401


class Forbidden(GenloopError):
    """A live key whose scope does not allow the route (a ``read`` key asking to generate)."""

    http_status = 403


class RateLimited(GenloopError):
    http_status = 429

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Caller:
    """The key behind a request; ``scope`` keys idempotency records ("-" when auth is off).

    ``owner`` is stamped on what the key makes; ``access`` is the key's scope (``admin``,
    ``generate`` or ``read``). With auth off the caller is the local admin, owner None (the
    workspace's, as the CLI's records are)."""

    key_id: str | None
    name: str
    owner: str | None = None
    access: str = "admin"

    @property
    def scope(self) -> str:
        return self.key_id or "-"

    @property
    def visible_to(self) -> str | None:
        """The owner whose records alone this caller sees; None: an admin sees every record."""
        return None if self.access == "admin" else self.owner

    def require_generate(self) -> None:
        """403 for a key that may only read."""
        if self.access not in ("admin", "generate"):
            raise Forbidden(f"API key {self.name!r} has scope {self.access!r}, which may read "
                            "records but not generate or rate; use a key with scope 'generate'")


ANONYMOUS = Caller(None, "anonymous (auth off)")


def key_from_header(authorization: str | None) -> str | None:
    """The key in ``Bearer KEY`` or ``Basic base64(user:KEY)``; None when there is none."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return value or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def challenge(authorization: str | None) -> str:
    """The WWW-Authenticate of a 401: Bearer to a Bearer client; else Basic, so a browser asks
    (again, when the key it was given is wrong)."""
    if (authorization or "").partition(" ")[0].lower() == "bearer":
        return "Bearer"
    return 'Basic realm="genloop", charset="UTF-8"'


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests a minute, bursts of up to 10 s' worth."""

    def __init__(self, per_minute: int):
        self.rate = per_minute / 60.0
        self.burst = max(5.0, self.rate * 10)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> None:
        """Spend one token of ``who``'s bucket or raise ``RateLimited`` with the wait."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[who] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise RateLimited(f"rate limit of {round(self.rate * 60)} requests per minute "
                                  f"for this key reached; retry in {wait} s", retry_after=wait)
            self._buckets[who] = (tokens - 1.0, now)
