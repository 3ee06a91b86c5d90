"""Fine-tuning files: the JSON Lines shapes of genloop, TRL and OpenAI, read into the canonical
records of the ``pairs`` and ``preferences`` kinds, strictly.

Each form takes, per line, any of these shapes (a message is ``{"role", "content", "name"?}``;
a message list stands for the transcript ``render`` makes of it):

- ``pairs`` (supervised): ``{"prompt", "completion"}``, each a string or TRL's message lists
  (the completion: one assistant message); OpenAI's ``{"messages": [...]}`` (also TRL's
  conversational language modelling): the prompt is every message before the last, rendered,
  the completion that last message, the assistant's.
- ``paired`` (DPO, reward models): ``{"prompt", "chosen", "rejected"}``, strings or message
  lists; TRL's implicit prompt (``chosen`` and ``rejected`` whole conversations sharing all but
  their last, assistant, message); OpenAI's ``{"input": {"messages"}, "preferred_output": [one
  assistant message], "non_preferred_output": [...]}``.
- ``unpaired`` (KTO): TRL's ``{"prompt", "completion", "label"}`` (label: true = desirable).

Canonical records are ``{"prompt", "completion"}``, ``{"prompt", "chosen", "rejected"}`` and
``{"prompt", "completion", "label"}``; a record may carry its lineage (``generation_ids``,
``feedback_ids``: lists of strings), which is kept. Anything else is an error of one line
naming the line and the field: the file is a user's upload, and a silently dropped field or
row would train on something other than what they gave.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from genloop.atomic import atomic_write_text
from genloop.errors import InvalidInput
from genloop.tokenizers import Tokenizer

Form = Literal["pairs", "paired", "unpaired"]
FORMS: tuple[str, ...] = ("pairs", "paired", "unpaired")
LINEAGE = ("generation_ids", "feedback_ids")  # where a record came from (feedback/datasets.py)
ROLES = ("system", "developer", "user", "assistant")  # OpenAI's; "developer" is a system message
Render = Callable[[list[dict[str, Any]]], str]


def plain_render(messages: list[dict[str, Any]]) -> str:
    """The transcript of ``messages`` and the start of the assistant's turn, in the form of
    genloop's default chat template (``generation/chat.py``): a system message is a preface,
    every other turn ``NAME:\\ncontent\\n\\n`` (USER, ASSISTANT, or the message's name)."""
    names = {"user": "USER", "assistant": "ASSISTANT"}
    parts = []
    for m in messages:
        if m["role"] in ("system", "developer"):
            parts.append(f"{m['content']}\n\n")
        else:
            parts.append(f"{m.get('name') or names[m['role']]}:\n{m['content']}\n\n")
    return "".join(parts) + "ASSISTANT:\n"


# --- the file ------------------------------------------------------------------------------------


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line of a UTF-8 file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a folder, not a file") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data[:nul].count(b"\n") + 1
        raise InvalidInput(f"line {line}: not JSON Lines: a NUL byte (a binary file?)")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InvalidInput(f"line {line}: not JSON Lines: not UTF-8 text (byte {e.start})") from None
    lines = [(n, line) for n, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1)
             if line.strip()]
    if not lines:
        raise InvalidInput("the file is empty: give one JSON object per line")
    return lines


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def read_tuning_records(
    path: str | Path, form: str, *, render: Render | None = None,
    max_prompt_tokens: int | None = None, tokenizer: Tokenizer | None = None,
) -> list[dict[str, Any]]:
    """The canonical records of a fine-tuning file of ``form`` (module docstring), in file order.

    ``render`` turns a message list into a prompt (give the model's chat template; default
    :func:`plain_render`). With a ``tokenizer``, a prompt of more than ``max_prompt_tokens``
    tokens is refused. Raises InvalidInput naming the line and the field."""
    if form not in FORMS:
        raise InvalidInput(f"form {form!r} is unknown: use one of {', '.join(FORMS)}")
    if max_prompt_tokens is not None and tokenizer is None:
        raise ValueError("max_prompt_tokens needs the tokenizer that counts them")
    render = render or plain_render
    records = []
    for n, line in _lines(Path(path)):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"line {n}: not JSON Lines: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise InvalidInput(f"line {n}: not JSON Lines: {_json_type(row)}, not a JSON object")
        try:
            record = _RECORD[form](_Row(row), render)
        except InvalidInput as e:
            raise InvalidInput(f"line {n}: {e}") from None
        if tokenizer is not None and max_prompt_tokens is not None:
            tokens = len(tokenizer.encode(record["prompt"]))
            if tokens > max_prompt_tokens:
                raise InvalidInput(f"line {n}: prompt is {tokens} tokens, the model's context is "
                                   f"{max_prompt_tokens}")
        records.append(record)
    return records


# --- one line ------------------------------------------------------------------------------------


class _Row:
    """One line's object, read field by field: each read names the field it refuses."""

    def __init__(self, row: dict[str, Any]):
        self.row = row
        self.lineage = {k: self._ids(k) for k in LINEAGE if k in row}

    def _ids(self, key: str) -> list[str]:
        ids = self.row[key]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidInput(f"field {key!r} is {_json_type(ids)}, expected a list of strings")
        return ids

    def only(self, *keys: str) -> None:
        """Every field is one of ``keys`` (or lineage), and each of ``keys`` is there."""
        for key in keys:
            if key not in self.row:
                raise InvalidInput(f"field {key!r} is missing")
        for key in self.row:
            if key not in keys and key not in LINEAGE:
                raise InvalidInput(f"extra field {key!r}")

    def __getitem__(self, key: str) -> Any:
        return self.row[key]

    def record(self, **fields: Any) -> dict[str, Any]:
        return {**fields, **self.lineage}


def _text(value: Any, field: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"field {field!r} is {_json_type(value)}, expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"field {field!r} is not valid Unicode text (a lone surrogate)") from None
    if not empty and not value:
        raise InvalidInput(f"field {field!r} is empty")
    return value


def _messages(value: Any, field: str) -> list[dict[str, Any]]:
    """A list of chat messages, each checked; OpenAI's ``weight`` (0 or 1, assistant messages)
    is read and dropped: only the last assistant message is trained on."""
    if not isinstance(value, list):
        raise InvalidInput(f"field {field!r} is {_json_type(value)}, expected a list of messages")
    if not value:
        raise InvalidInput(f"field {field!r} is an empty list of messages")
    out = []
    for i, m in enumerate(value):
        at = f"{field}.{i}"
        if not isinstance(m, dict):
            raise InvalidInput(f"field {at!r} is {_json_type(m)}, expected a message object")
        for key in ("role", "content"):
            if key not in m:
                raise InvalidInput(f"field '{at}.{key}' is missing")
        for key in m:
            if key not in ("role", "content", "name", "weight"):
                raise InvalidInput(f"extra field '{at}.{key}'")
        if m["role"] not in ROLES:
            raise InvalidInput(f"field '{at}.role' is {m['role']!r}: use one of {', '.join(ROLES)} "
                               "(no tool calls)")
        message = {"role": m["role"], "content": _text(m["content"], f"{at}.content", empty=True)}
        if "name" in m:
            message["name"] = _text(m["name"], f"{at}.name")
        if "weight" in m:
            if m["role"] != "assistant" or m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
                raise InvalidInput(f"field '{at}.weight' must be 0 or 1, on an assistant message")
            if m["weight"] == 0 and i == len(value) - 1:
                raise InvalidInput(f"field '{at}.weight' is 0: the completion would not be trained on")
        out.append(message)
    return out


def _prompt(value: Any, field: str, render: Render) -> str:
    """A prompt: a string, or messages rendered by ``render``."""
    if isinstance(value, list):
        return render(_messages(value, field))
    if not isinstance(value, str):
        raise InvalidInput(f"field {field!r} is {_json_type(value)}, expected a string or a list "
                           "of messages")
    return _text(value, field, empty=True)


def _reply(value: Any, field: str) -> str:
    """A completion: a string, or one assistant message (TRL, OpenAI) whose content it is."""
    if isinstance(value, list):
        messages = _messages(value, field)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise InvalidInput(f"field {field!r} must be one assistant message, not "
                               f"{len(messages)} message(s) of {messages[0]['role']!r}")
        return _text(messages[0]["content"], f"{field}.0.content")
    if not isinstance(value, str):
        raise InvalidInput(f"field {field!r} is {_json_type(value)}, expected a string or a list "
                           "of one assistant message")
    return _text(value, field)


def _split(messages: list[dict[str, Any]], field: str) -> tuple[list[dict[str, Any]], str]:
    """A conversation as (the messages before its last, the last one's content, the assistant's)."""
    *before, last = messages
    if last["role"] != "assistant":
        raise InvalidInput(f"field {field!r}: the last message is the completion, the assistant's, "
                           f"not {last['role']!r}")
    if not before:
        raise InvalidInput(f"field {field!r}: give the prompt's messages before the assistant's")
    return before, _text(last["content"], f"{field}.{len(before)}.content")


def _pair(row: _Row, render: Render) -> dict[str, Any]:
    if "messages" in row.row:  # OpenAI supervised, TRL conversational language modelling
        row.only("messages")
        before, completion = _split(_messages(row["messages"], "messages"), "messages")
        return row.record(prompt=render(before), completion=completion)
    row.only("prompt", "completion")
    return row.record(prompt=_prompt(row["prompt"], "prompt", render),
                      completion=_reply(row["completion"], "completion"))


def _paired(row: _Row, render: Render) -> dict[str, Any]:
    if "input" in row.row:  # OpenAI DPO
        row.only("input", "preferred_output", "non_preferred_output")
        given = row["input"]
        if not isinstance(given, dict):
            raise InvalidInput(f"field 'input' is {_json_type(given)}, expected an object with "
                               "messages")
        if "messages" not in given:
            raise InvalidInput("field 'input.messages' is missing")
        for key in given:
            if key != "messages":
                raise InvalidInput(f"extra field 'input.{key}'")
        prompt = render(_messages(given["messages"], "input.messages"))
        chosen = _reply(row["preferred_output"], "preferred_output")
        rejected = _reply(row["non_preferred_output"], "non_preferred_output")
    elif "prompt" not in row.row and isinstance(row.row.get("chosen"), list):
        row.only("chosen", "rejected")  # TRL's implicit prompt: the conversations' shared start
        before, chosen = _split(_messages(row["chosen"], "chosen"), "chosen")
        rejected_messages = _messages(row["rejected"], "rejected") \
            if isinstance(row["rejected"], list) else None
        if rejected_messages is None:
            raise InvalidInput(f"field 'rejected' is {_json_type(row['rejected'])}, expected a "
                               "list of messages like 'chosen'")
        other, rejected = _split(rejected_messages, "rejected")
        if other != before:
            raise InvalidInput("fields 'chosen' and 'rejected' differ before their last message: "
                               "give the prompt in 'prompt'")
        prompt = render(before)
    else:
        row.only("prompt", "chosen", "rejected")
        prompt = _prompt(row["prompt"], "prompt", render)
        chosen = _reply(row["chosen"], "chosen")
        rejected = _reply(row["rejected"], "rejected")
    if chosen == rejected:
        raise InvalidInput("chosen equals rejected")
    return row.record(prompt=prompt, chosen=chosen, rejected=rejected)


def _unpaired(row: _Row, render: Render) -> dict[str, Any]:
    row.only("prompt", "completion", "label")
    if not isinstance(row["label"], bool):
        raise InvalidInput(f"field 'label' is {_json_type(row['label'])}, expected true "
                           "(desirable) or false")
    return row.record(prompt=_prompt(row["prompt"], "prompt", render),
                      completion=_reply(row["completion"], "completion"), label=row["label"])


_RECORD: dict[str, Callable[[_Row, Render], dict[str, Any]]] = {
    "pairs": _pair, "paired": _paired, "unpaired": _unpaired}


# --- writing -------------------------------------------------------------------------------------


def records_jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    """One JSON object per line, keys sorted: the same records are the same bytes."""
    return "".join(json.dumps(dict(r), ensure_ascii=False, sort_keys=True) + "\n" for r in records)


def write_records(records: Iterable[Mapping[str, Any]], directory: str | Path) -> Path:
    """``records`` as ``<directory>/<sha256 of the content>.jsonl``, written atomically; the
    same records are the same file (kept, not rewritten)."""
    text = records_jsonl(records)
    path = Path(directory) / f"{hashlib.sha256(text.encode('utf-8')).hexdigest()}.jsonl"
    if not path.is_file():
        atomic_write_text(path, text)
    return path
