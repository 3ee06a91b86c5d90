"""Fine-tuning files in genloop's, TRL's and OpenAI's shapes read into canonical records; every
bad input refused in one line naming the line and the field; records written content-hashed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from genloop.data.formats import plain_render, read_tuning_records, write_records
from genloop.errors import InvalidInput
from genloop.generation.chat import ChatMessage, ChatTemplate
from genloop.tokenizers import train_tokenizer

USER = {"role": "user", "content": "Write a line on spring."}
SYSTEM = {"role": "system", "content": "You are a poet."}
PROMPT = "You are a poet.\n\nUSER:\nWrite a line on spring.\n\nASSISTANT:\n"


def write(path: Path, *rows: Any) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def read(tmp_path: Path, form: str, *rows: Any, **kw: Any) -> list[dict[str, Any]]:
    return read_tuning_records(write(tmp_path / "f.jsonl", *rows), form, **kw)


def say(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# --- every accepted shape ------------------------------------------------------------------------


def test_the_plain_rendering_is_the_default_chat_template() -> None:
    messages = [SYSTEM, USER, {"role": "assistant", "content": "Buds."},
                {"role": "user", "content": "More", "name": "Ann"}]
    assert plain_render(messages) == ChatTemplate().render([ChatMessage(**m) for m in messages])
    assert plain_render([SYSTEM, USER]) == PROMPT


def test_pairs_in_every_shape(tmp_path: Path) -> None:
    records = read(
        tmp_path, "pairs",
        {"prompt": "spring", "completion": "buds open"},                          # genloop / TRL
        {"prompt": [SYSTEM, USER], "completion": say("buds open")},               # TRL conversational
        {"messages": [SYSTEM, USER, {"role": "assistant", "content": "buds open"}]},  # OpenAI
        {"messages": [SYSTEM, USER, {"role": "assistant", "content": "no", "weight": 0},
                      USER, {"role": "assistant", "content": "buds open", "weight": 1}]},
        {"prompt": "", "completion": "x", "generation_ids": ["a"], "feedback_ids": ["b", "c"]},
    )
    assert records[0] == {"prompt": "spring", "completion": "buds open"}
    assert records[1] == records[2] == {"prompt": PROMPT, "completion": "buds open"}
    assert records[3]["prompt"] == (PROMPT + "no\n\nUSER:\nWrite a line on spring.\n\n"
                                    "ASSISTANT:\n") and records[3]["completion"] == "buds open"
    assert records[4] == {"prompt": "", "completion": "x", "generation_ids": ["a"],
                          "feedback_ids": ["b", "c"]}  # lineage is kept


def test_paired_preferences_in_every_shape(tmp_path: Path) -> None:
    records = read(
        tmp_path, "paired",
        {"prompt": "spring", "chosen": "buds", "rejected": "snow"},
        {"prompt": [SYSTEM, USER], "chosen": say("buds"), "rejected": say("snow")},
        {"chosen": [SYSTEM, USER, *say("buds")], "rejected": [SYSTEM, USER, *say("snow")]},
        {"input": {"messages": [SYSTEM, USER]}, "preferred_output": say("buds"),
         "non_preferred_output": say("snow")},
    )
    assert records[0] == {"prompt": "spring", "chosen": "buds", "rejected": "snow"}
    assert records[1] == records[2] == records[3] == {"prompt": PROMPT, "chosen": "buds",
                                                      "rejected": "snow"}


def test_unpaired_preferences_trl_kto(tmp_path: Path) -> None:
    assert read(tmp_path, "unpaired",
                {"prompt": "spring", "completion": "buds", "label": True},
                {"prompt": [USER], "completion": say("snow"), "label": False}) == [
        {"prompt": "spring", "completion": "buds", "label": True},
        {"prompt": "USER:\nWrite a line on spring.\n\nASSISTANT:\n", "completion": "snow",
         "label": False}]


def test_the_callers_render_and_blank_lines_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"messages": [USER, *say("ok")]}).encode()
                     + b"\r\n\r\n" + json.dumps({"prompt": "p", "completion": "c"}).encode())
    records = read_tuning_records(path, "pairs", render=lambda ms: f"<{len(ms)} messages>")
    assert records == [{"prompt": "<1 messages>", "completion": "ok"},
                       {"prompt": "p", "completion": "c"}]


def test_a_prompt_within_the_context_passes(tmp_path: Path) -> None:
    tok = train_tokenizer("char", ["abcdef"])
    assert read(tmp_path, "pairs", {"prompt": "abc", "completion": "d"}, tokenizer=tok,
                max_prompt_tokens=3) == [{"prompt": "abc", "completion": "d"}]


# --- every bad input, with its message -----------------------------------------------------------

OK_PAIR = {"prompt": "p", "completion": "c"}
BAD = [
    ("pairs", ["[1, 2]"], "line 1: not JSON Lines: an array, not a JSON object"),
    ("pairs", [OK_PAIR, "{nope"], "line 2: not JSON Lines: invalid JSON"),
    ("pairs", [{"prompt": "p"}], "line 1: field 'completion' is missing"),
    ("pairs", [OK_PAIR, {**OK_PAIR, "foo": 1}], "line 2: extra field 'foo'"),
    ("pairs", [{"prompt": 3, "completion": "c"}],
     "line 1: field 'prompt' is a number, expected a string or a list of messages"),
    ("pairs", [{"prompt": "p", "completion": ""}], "line 1: field 'completion' is empty"),
    ("pairs", [{"prompt": "p", "completion": [USER]}],
     "line 1: field 'completion' must be one assistant message"),
    ("pairs", [{"messages": [USER]}], "line 1: field 'messages': the last message is the completion"),
    ("pairs", [{"messages": say("hi")}], "line 1: field 'messages': give the prompt's messages"),
    ("pairs", [{"messages": [USER, *say("a")], "tools": []}], "line 1: extra field 'tools'"),
    ("pairs", [{"messages": [{"role": "tool", "content": "x"}, *say("a")]}],
     "line 1: field 'messages.0.role' is 'tool'"),
    ("pairs", [{"messages": [{"role": "user"}, *say("a")]}],
     "line 1: field 'messages.0.content' is missing"),
    ("pairs", [{"messages": [{**USER, "tool_calls": []}, *say("a")]}],
     "line 1: extra field 'messages.0.tool_calls'"),
    ("pairs", [{"messages": [USER, {"role": "assistant", "content": "a", "weight": 0}]}],
     "line 1: field 'messages.1.weight' is 0"),
    ("pairs", [{"prompt": "p", "completion": "\ud800"}],
     "line 1: field 'completion' is not valid Unicode text"),
    ("pairs", [{**OK_PAIR, "generation_ids": "g"}],
     "line 1: field 'generation_ids' is a string, expected a list of strings"),
    ("paired", [{"prompt": "p", "chosen": "a"}], "line 1: field 'rejected' is missing"),
    ("paired", [{"chosen": "a", "rejected": "b"}], "line 1: field 'prompt' is missing"),
    ("paired", [{"prompt": "p", "chosen": "a", "rejected": "b"},
                {"prompt": "p", "chosen": "same", "rejected": "same"}],
     "line 2: chosen equals rejected"),
    ("paired", [{"chosen": [USER, *say("a")], "rejected": [SYSTEM, USER, *say("b")]}],
     "line 1: fields 'chosen' and 'rejected' differ before their last message"),
    ("paired", [{"input": {"messages": [USER], "tools": []}, "preferred_output": say("a"),
                 "non_preferred_output": say("b")}], "line 1: extra field 'input.tools'"),
    ("paired", [{"input": {"messages": [USER]}, "preferred_output": say("a")}],
     "line 1: field 'non_preferred_output' is missing"),
    ("paired", [{"input": {"messages": [USER]}, "preferred_output": say("a"),
                 "non_preferred_output": say("a")}], "line 1: chosen equals rejected"),
    ("unpaired", [{"prompt": "p", "completion": "c", "label": "yes"}],
     "line 1: field 'label' is a string, expected true (desirable) or false"),
    ("unpaired", [{"prompt": "p", "completion": "c"}], "line 1: field 'label' is missing"),
]


@pytest.mark.parametrize("form,rows,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_input_is_one_line_naming_the_line_and_field(tmp_path: Path, form: str,
                                                         rows: list[Any], message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        read(tmp_path, form, *rows)
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_an_empty_or_binary_file(tmp_path: Path) -> None:
    for content, message in ((b"", "the file is empty"), (b"\n  \n", "the file is empty"),
                             (b'{"a": 1}\n\x00\x01', "line 2: not JSON Lines: a NUL byte"),
                             (b'{"prompt": "\xff"}', "line 1: not JSON Lines: not UTF-8 text")):
        (tmp_path / "f.jsonl").write_bytes(content)
        with pytest.raises(InvalidInput, match=f"^{message}"):
            read_tuning_records(tmp_path / "f.jsonl", "pairs")
    with pytest.raises(InvalidInput, match="does not exist"):
        read_tuning_records(tmp_path / "missing.jsonl", "pairs")
    with pytest.raises(InvalidInput, match="form 'dpo' is unknown"):
        read_tuning_records(tmp_path / "f.jsonl", "dpo")


def test_a_prompt_longer_than_the_context(tmp_path: Path) -> None:
    tok = train_tokenizer("char", ["abcdef"])
    with pytest.raises(InvalidInput, match="^line 2: prompt is 6 tokens, the model's context is 4$"):
        read(tmp_path, "pairs", {"prompt": "abc", "completion": "d"},
             {"prompt": "abcdef", "completion": "d"}, tokenizer=tok, max_prompt_tokens=4)
    with pytest.raises(ValueError, match="needs the tokenizer"):
        read(tmp_path, "pairs", OK_PAIR, max_prompt_tokens=4)


# --- writing -------------------------------------------------------------------------------------


def test_records_are_written_content_hashed(tmp_path: Path) -> None:
    records = [{"prompt": "p", "completion": "春", "feedback_ids": ["f1"]},
               {"completion": "c", "prompt": "q"}]
    path = write_records(records, tmp_path / "records")
    assert path.suffix == ".jsonl" and len(path.stem) == 64
    assert write_records([dict(reversed(list(r.items()))) for r in records],
                         tmp_path / "records") == path  # key order does not matter
    assert write_records(records[:1], tmp_path / "records") != path
    assert read_tuning_records(path, "pairs") == records
    assert "春" in path.read_text(encoding="utf-8")
    assert not [p for p in (tmp_path / "records").iterdir() if p.name.startswith(".")]
