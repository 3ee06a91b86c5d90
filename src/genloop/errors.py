"""One error hierarchy. Faces turn a GenloopError into an exit code (CLI) or an HTTP status (API).

Every message is one line a user can act on: it names the field, file or value at fault and,
where there is one, the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

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
    for loc, msg in readable_errors(errors(), unknown="unknown key"):
        loc = prefix + loc if loc else prefix.rstrip(".")
        parts.append(f"{loc or 'value'}: {msg}")
    return "; ".join(parts)


# pydantic names the member of a union in the location of its errors ('prompt',
# 'function-before[check_unicode(), str]'): a member's label is a type ('str', 'list[int]',
# 'constrained-int', "literal['a']", a model's class name), never a field name
_TYPE_LABELS = {"str", "int", "float", "bool", "none", "list", "dict", "bytes"}
_EXPECTED = {"string_type": "a string", "int_type": "an integer", "float_type": "a number",
             "bool_type": "true or false", "list_type": "a list", "dict_type": "an object",
             "model_type": "an object", "model_attributes_type": "an object"}


def _is_label(part: object) -> bool:
    return isinstance(part, str) and (
        part in _TYPE_LABELS or part.startswith(("constrained-", "function-")) or "[" in part
        or part[:1].isupper())


def _items(inner: str) -> str | None:
    """What a list type's items are, in words: 'strings', 'integers', 'lists of integers'."""
    if inner.startswith("list["):
        of = _items(inner[5:-1])
        return f"lists of {of}" if of else None
    if inner.endswith(("str]", "str")):
        return "strings"
    if inner.endswith(("int]", "int")):
        return "integers"
    return None


def _expected(label: object, kind: str) -> str:
    words = _EXPECTED.get(kind, kind.removesuffix("_type").replace("_", " "))
    if kind == "list_type" and isinstance(label, str) and label.startswith("list["):
        of = _items(label[5:-1])
        words = f"a list of {of}" if of else words
    return words


def readable_errors(errors: Iterable[Mapping[str, Any]], skip: tuple[str, ...] = (),
                    unknown: str = "unknown field") -> list[tuple[str, str]]:
    """pydantic's errors as (field path, message) in words: 'prompt', 'messages.0.content'.

    The labels pydantic gives a union's members are left out of the path. Of a union whose
    members all refuse the value's type, one line says what is expected ('expected a string or a
    list of strings'); when a member took the value's type and refused something inside it, only
    that member's errors are kept. A validator of a whole model names its field by ``param`` in
    its error's context. ``skip`` drops location parts (FastAPI's 'body')."""
    rows = []  # (path, union prefix or None, label, is a type refusal at the member, error)
    for e in errors:
        parts = [p for p in e["loc"] if p not in skip]
        labels = [i for i, p in enumerate(parts) if _is_label(p)]
        path = ".".join(str(p) for i, p in enumerate(parts) if i not in labels)
        path = (e.get("ctx") or {}).get("param") or path
        union = tuple(parts[:labels[-1]]) if labels else None
        at_member = bool(labels) and labels[-1] == len(parts) - 1 and e["type"].endswith("_type")
        rows.append((path, union, parts[labels[-1]] if labels else None, at_member, e))
    deeper = {union for _, union, _, at_member, _ in rows if union is not None and not at_member}
    out: list[tuple[str, str]] = []
    expected: dict[str, list[str]] = {}
    for path, union, label, at_member, e in rows:
        if at_member and union in deeper:
            continue  # another member of this union took the value's type
        if at_member:
            if path not in expected:
                expected[path] = []
                out.append((path, ""))
            expected[path].append(_expected(label, e["type"]))
            continue
        msg = unknown if e["type"] == "extra_forbidden" else e["msg"]
        for lead in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(lead)
        if (path, msg) not in out:
            out.append((path, msg))
    return [(path, msg or "expected " + " or ".join(dict.fromkeys(expected[path])))
            for path, msg in out]


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
