"""One error hierarchy. Faces turn a GenloopError into an exit code (CLI) or an HTTP status (API).

Every message is one line a user can act on: it names the field, file or value at fault and,
where there is one, the fix.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator


class GenloopError(Exception):
    """Base of every error genloop raises on purpose."""

    exit_code = 1
    http_status = 400


class InvalidInput(GenloopError):
    """A value, file or request that genloop cannot use (bad corpus, bad type, too long a prompt)."""

    exit_code = 2
    http_status = 400


class RecipeError(InvalidInput):
    """A recipe or override that does not validate (unknown key, wrong type, unknown preset)."""


class NotFound(GenloopError):
    """A model, dataset, run or generation that does not exist."""

    exit_code = 3
    http_status = 404


class Conflict(GenloopError):
    """A request that clashes with an earlier one: an idempotency key reused for another request,
    or whose first request is still in progress."""

    exit_code = 7
    http_status = 409


class CorruptArtifact(GenloopError):
    """A checkpoint or weights file that is truncated, corrupt, or not safetensors."""

    exit_code = 4
    http_status = 422


class TrainingDiverged(GenloopError):
    """The loss became non-finite; the last good checkpoint is kept."""

    exit_code = 5
    http_status = 500


class DownloadError(GenloopError):
    """A remote file could not be fetched or failed its sha256 check."""

    exit_code = 6
    http_status = 502


def validation_message(error: Exception, prefix: str = "") -> str:
    """A pydantic ValidationError as one line that names each key: 'train.stepz: unknown key'."""
    errors = getattr(error, "errors", None)
    if errors is None:
        return str(error).splitlines()[0]
    parts = []
    for e in errors():
        loc = prefix + ".".join(str(x) for x in e["loc"]) if e["loc"] else prefix.rstrip(".")
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{loc or 'value'}: {msg}")
    return "; ".join(parts)


def check_unicode(text: object) -> object:
    """``text``, if it is text: JSON escapes ("\\ud800") and undecodable command-line bytes can
    carry lone surrogates, which no tokenizer, database or file can take. ValueError otherwise
    (pydantic reports it against the field). Runs before the str checks, so length limits on
    the field keep their usual messages; what is not a str is left to them."""
    if not isinstance(text, str):
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate)") from None
    return text


UnicodeText = Annotated[str, BeforeValidator(check_unicode)]
