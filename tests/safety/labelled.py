"""The labelled moderation set (English and Chinese prompts and outputs, blocked, ordinary and
with personal data) and the policy it is judged by; bench/moderation.py reads the same files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SET = HERE / "labelled.jsonl"
POLICY = HERE / "labelled-policy.yaml"


def labelled() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines() if line]
