"""A workspace's moderation policy: ``$GENLOOP_HOME/moderation.yaml``, typed and checked whole.

Absent, the default policy applies: PII (emails, phone numbers, Luhn-valid card numbers) is
redacted in prompts and outputs, nothing is blocked. A file that does not validate — an unknown
key, an invalid regular expression, a blocklist term that folds to nothing — is one line naming
the file, the key and the value at fault; the server refuses to start on it and the CLI exits 2.

    # moderation.yaml
    apply_to: [prompts, outputs]
    blocklists:
      - category: violence
        terms: [kill them, 杀人]
        action: block          # block | redact | flag
    patterns:
      - category: secrets
        pattern: 'sk-[A-Za-z0-9]{20,40}'
        action: redact
    pii: {email: redact, phone: redact, card: block}     # or "off"
    classifier: {model: toxic@1, labels: [toxic], threshold: 0.5, action: block}
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genloop.config import settings
from genloop.errors import InvalidInput, validation_message
from genloop.safety.matching import fold

Action = Literal["block", "redact", "flag"]
PiiAction = Literal["block", "redact", "flag", "off"]
Stage = Literal["prompts", "outputs"]
POLICY_FILE = "moderation.yaml"
STAGES: tuple[Stage, ...] = ("prompts", "outputs")

CATEGORY_RULE = r"^[a-z0-9][a-z0-9_/-]{0,47}$"


class PolicyInvalid(InvalidInput):
    """The policy file does not validate: the CLI exits 2 and the server refuses to start, as
    for any bad input; a file that goes bad while the server runs refuses each request it would
    check with 503 — the server's misconfiguration, not the client's fault."""

    http_status = 503


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Blocklist(_Strict):
    """Terms matched after folding (NFKC, case, width, invisible characters): Latin-script terms
    on word boundaries, CJK terms as substrings (Chinese has no spaces between words)."""

    category: str = Field(pattern=CATEGORY_RULE)
    terms: list[str] = Field(min_length=1, max_length=100_000)
    action: Action = "block"
    replacement: str | None = Field(None, max_length=64, description="redact: what replaces a "
                                                                     "term (default [CATEGORY])")

    @field_validator("terms")
    @classmethod
    def _terms_fold_to_something(cls, terms: list[str]) -> list[str]:
        for term in terms:
            if not fold(term)[0].strip():
                raise ValueError(f"term {term!r} is empty once folded (NFKC, case, invisible "
                                 "characters)")
        return terms


class Pattern(_Strict):
    """A regular expression (Python ``re`` syntax) matched on the folded text, case-insensitive."""

    category: str = Field(pattern=CATEGORY_RULE)
    pattern: str = Field(min_length=1, max_length=2000)
    action: Action = "block"
    replacement: str | None = Field(None, max_length=64)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
        except re.error as e:
            raise ValueError(f"invalid regular expression {pattern!r} ({e})") from None
        if compiled.match(""):
            raise ValueError(f"pattern {pattern!r} matches the empty string (it would match "
                             "everywhere)")
        return pattern


class Pii(_Strict):
    email: PiiAction = "redact"
    phone: PiiAction = "redact"
    card: PiiAction = "redact"

    @field_validator("email", "phone", "card", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false


class ClassifierCheck(_Strict):
    """A text classifier genloop trained on the workspace's own labelled examples
    (``genloop moderation train``), by its registered name."""

    model: str = Field(min_length=1, max_length=80, description="name or name@N")
    labels: list[str] = Field(min_length=1, description="the labels that trip the check")
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    action: Literal["block", "flag"] = "block"


class Policy(_Strict):
    apply_to: list[Stage] = Field(default_factory=lambda: list(STAGES))
    blocklists: list[Blocklist] = Field(default_factory=list)
    patterns: list[Pattern] = Field(default_factory=list)
    pii: Pii = Field(default_factory=Pii)
    classifier: ClassifierCheck | None = None
    stream_holdback: int = Field(48, ge=8, le=4096, description=(
        "characters of a stream held back before they are checked and sent, at least; more "
        "when a term or a bounded pattern is longer"))

    @property
    def digest(self) -> str:
        """What a verdict names its policy by: the sha256 of the policy's canonical JSON."""
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()[:16]

    @property
    def active(self) -> bool:
        """Whether anything is checked at all (every check off: nothing is held back)."""
        return bool(self.blocklists or self.patterns or self.classifier
                    or any(a != "off" for a in self.pii.model_dump().values()))


def policy_path() -> Path:
    return settings().home / POLICY_FILE


def parse_policy(text: str, source: str) -> Policy:
    """``text`` (YAML; JSON is YAML too) as a Policy; InvalidInput naming ``source`` and the key."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise PolicyInvalid(f"{source}{where}: not valid YAML "
                           f"({getattr(e, 'problem', None) or e})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyInvalid(f"{source}: a mapping of policy keys is required, not "
                           f"{type(data).__name__}")
    try:
        return Policy(**data)
    except ValueError as e:
        raise PolicyInvalid(f"{source}: {validation_message(e)}") from None


def load_policy(path: Path | None = None) -> Policy:
    """The workspace's policy (``path`` or ``$GENLOOP_HOME/moderation.yaml``); the default one
    when there is no such file."""
    path = path or policy_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Policy()
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyInvalid(f"{path}: cannot read the moderation policy ({e})") from None
    return parse_policy(text, str(path))
