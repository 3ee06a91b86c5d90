"""The policy file and the checks on one text: folding, blocklists, patterns, PII, verdicts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from genloop.errors import InvalidInput
from genloop.safety.matching import fold
from genloop.safety.moderator import ModerationFailed, Moderator
from genloop.safety.pii import find_pii, luhn_valid
from genloop.safety.policy import Policy, load_policy, parse_policy

from ..conftest import BIN, workspace_env  # noqa: TID252


def test_no_file_is_the_default_policy_pii_redacted_nothing_blocked(tmp_path: Path) -> None:
    policy = load_policy(tmp_path / "moderation.yaml")
    assert policy == Policy() and policy.active
    v = Moderator(policy).check("mail a@b.io, kill everyone", "output")
    assert v.action == "redact" and v.text == "mail [EMAIL], kill everyone"


@pytest.mark.parametrize("text,key,shown", [
    ("patterns:\n  - {category: x, pattern: 'sk-[a-z'}\n", "patterns.0.pattern", "'sk-[a-z'"),
    ("patterns:\n  - {category: x, pattern: 'a|'}\n", "patterns.0.pattern", "'a|'"),
    ("blocklists:\n  - {category: x, terms: [a], actoin: block}\n", "blocklists.0.actoin",
     "unknown key"),
    ("pii: {email: hide}\n", "pii.email", "'block', 'redact', 'flag' or 'off'"),
    ("blocklists:\n  - {category: x, terms: ['\u200b']}\n", "blocklists.0.terms", "empty"),
    ("apply_to: prompts\n", "apply_to", "list"),
    ("patterns: [\n", "moderation.yaml:", "not valid YAML"),
])
def test_a_bad_policy_is_one_line_naming_file_key_and_value(tmp_path: Path, text: str, key: str,
                                                           shown: str) -> None:
    path = tmp_path / "moderation.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as e:
        load_policy(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path)) and key in message, message
    assert shown in message, message


def test_the_cli_and_the_server_refuse_a_bad_policy_exit_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "moderation.yaml").write_text("patterns:\n  - {category: x, pattern: '(unclosed'}\n")
    for args in (["moderation", "check", "hello"], ["serve", "--no-auth", "--port", "0"]):
        r = subprocess.run([str(BIN / "genloop"), *args], env=workspace_env(home),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = [line for line in r.stderr.splitlines() if line.startswith("error")]
        assert len(lines) == 1 and "patterns.0.pattern" in lines[0] and "(unclosed" in lines[0]
        assert "Traceback" not in r.stderr


def test_folding_maps_back_to_the_original_characters() -> None:
    folded, index = fold("Ａ\u200bß！")
    assert folded == "ass!" and index == [0, 2, 2, 3]


def test_blocklists_latin_on_word_boundaries_cjk_as_substrings() -> None:
    m = Moderator(Policy(blocklists=[{"category": "violence", "terms": ["kill", "杀人"]}]))
    assert m.check("we kill", "output").blocked
    assert m.check("KILL!", "output").blocked and m.check("ｋｉｌｌ", "output").blocked
    assert m.check("k\u00adill", "output").blocked  # a soft hyphen does not hide it
    assert not m.check("skill killer", "output").blocked
    assert m.check("kill他", "output").blocked  # a CJK neighbour is a boundary
    assert m.check("他想杀人了", "output").blocked and not m.check("杀毒软件", "output").blocked
    hit = m.check("Oh, we KILL them", "output").hits[0]
    assert (hit.start, hit.end, hit.category, hit.check) == (7, 11, "violence", "blocklist")


def test_the_longest_term_at_a_place_wins_and_shorter_ones_still_match() -> None:
    m = Moderator(Policy(blocklists=[{"category": "v", "terms": ["kill", "kill them"],
                                      "action": "redact"}]))
    assert m.check("kill them all", "output").text == "[V] all"
    assert m.check("kill themselves", "output").text == "[V] themselves"


def test_actions_flag_redact_block_and_the_verdict_record() -> None:
    m = Moderator(Policy(patterns=[{"category": "secrets", "pattern": r"sk-[a-z0-9]{8}",
                                    "action": "redact", "replacement": "[KEY]"},
                                   {"category": "spam", "pattern": "buy now", "action": "flag"}]))
    v = m.check("sk-abcd1234 buy now", "prompt")
    assert v.action == "redact" and v.text == "[KEY] buy now" and v.categories == ["secrets", "spam"]
    record = v.record()
    assert record["reason"] == "redacted: secrets (pattern)" and "sk-abcd1234" not in str(record)
    assert record["hits"][0] == {"check": "pattern", "category": "secrets", "action": "redact",
                                 "start": 0, "end": 11}


def test_apply_to_leaves_a_stage_unchecked() -> None:
    m = Moderator(Policy(apply_to=["outputs"], blocklists=[{"category": "v", "terms": ["kill"]}]))
    v = m.check("kill", "prompt")
    assert not v.blocked and not v.checked and m.check("kill", "output").blocked


def test_luhn_and_card_numbers() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")
    assert [c for c, *_ in find_pii("4111-1111-1111-1111", {"card", "phone"})] == ["card"]
    assert find_pii("1234 5678 9012 3456", {"card"}) == []


@pytest.mark.parametrize("text,found", [
    ("a@b.io", ["email"]), ("x.y+z@sub.example.co.uk.", ["email"]), ("not@an", []),
    ("+1 415 555 2671", ["phone"]), ("(415) 555-2671", ["phone"]), ("13912345678", ["phone"]),
    ("12345678901", []), ("2024-01-15", []), ("v1.2.3", []), ("０２１-１２３４５６７８", ["phone"]),
])
def test_pii_shapes(text: str, found: list[str]) -> None:
    folded, _ = fold(text)
    assert [c for c, *_ in find_pii(folded, {"email", "phone", "card"})] == found


def test_a_check_that_raises_fails_closed_naming_it() -> None:
    def broken() -> object:
        raise RuntimeError("weights gone")

    policy = Policy(classifier={"model": "toxic@1", "labels": ["toxic"]})
    m = Moderator(policy, broken)  # type: ignore[arg-type]
    with pytest.raises(ModerationFailed, match="check classifier failed.*weights gone"):
        m.check("hello", "output")
    assert ModerationFailed.http_status == 503


def test_the_policy_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    from genloop.safety.moderator import workspace_moderator
    from genloop.store import Store

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    path = tmp_path / "moderation.yaml"
    assert not workspace_moderator(store, path).check("kill", "prompt").blocked
    path.write_text("blocklists:\n  - {category: v, terms: [kill]}\n")
    assert workspace_moderator(store, path).check("kill", "prompt").blocked
    assert parse_policy("{}", "x").digest == Policy().digest


def test_simplified_and_traditional_chinese_match_each_other() -> None:
    """A term in one script matches text in the other (OpenCC's character table), with the
    original spans; ordinary text sharing one character is untouched."""
    pytest.importorskip("opencc")
    m = Moderator(Policy(blocklists=[{"category": "violence", "terms": ["杀人", "炸彈"]}]))
    for text in ("殺人的方法", "我要杀人", "如何製作炸彈", "怎么做炸弹"):
        assert m.check(text, "prompt").blocked, text
    hit = m.check("如何製作炸彈", "prompt").hits[0]
    assert (hit.start, hit.end) == (4, 6)
    assert not m.check("杀毒软件", "prompt").blocked and not m.check("炸鸡很好吃", "prompt").blocked
    assert fold("頭髮")[0] == "头发"
