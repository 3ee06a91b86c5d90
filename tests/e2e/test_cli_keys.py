"""`genloop keys create/list/revoke` through the real command: the secret is printed once, lists
never show it, a revoked key stops verifying, and bad input is one line and a non-zero exit."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from genloop.store import Store

Cli = Callable[..., CompletedProcess]


def one_error_line(r: CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


@pytest.mark.slow
def test_keys_create_list_revoke(workspace: Path, cli: Cli) -> None:
    r = cli(["keys", "create", "laptop"], workspace)
    assert r.returncode == 0, r.stderr
    secret = r.stdout.strip()
    assert re.fullmatch(r"gl_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", secret), r.stdout
    assert "not shown again" in r.stderr and secret not in r.stderr
    key_id = secret[3:15]

    store = Store()
    try:
        assert store.verify_key(secret).name == "laptop"  # type: ignore[union-attr]

        listed = cli(["keys", "list"], workspace)
        assert listed.returncode == 0, listed.stderr
        assert key_id in listed.stdout and "laptop" in listed.stdout and secret[:10] in listed.stdout
        assert secret not in listed.stdout and secret[15:25] not in listed.stdout

        dup = cli(["keys", "create", "laptop"], workspace)
        assert dup.returncode == 2 and "already exists" in one_error_line(dup)

        revoked = cli(["keys", "revoke", "laptop"], workspace)
        assert revoked.returncode == 0, revoked.stderr
        assert key_id in revoked.stdout
        assert store.verify_key(secret) is None
        row = next(line for line in cli(["keys", "list"], workspace).stdout.splitlines()
                   if key_id in line)
        assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", row)) == 2  # created and revoked

        missing = cli(["keys", "revoke", "nope"], workspace)
        assert missing.returncode == 3 and "'nope'" in one_error_line(missing)
    finally:
        store.close()


@pytest.mark.slow
def test_keys_create_takes_a_scope_and_an_owner_and_list_shows_them(workspace: Path, cli: Cli) -> None:
    plain = cli(["keys", "create", "laptop"], workspace)
    bot = cli(["keys", "create", "alice-bot", "--scope", "read", "--owner", "alice"], workspace)
    assert plain.returncode == 0 and bot.returncode == 0, plain.stderr + bot.stderr
    assert "scope read, owner alice" in bot.stderr
    store = Store()
    try:
        laptop = store.verify_key(plain.stdout.strip())
        alice = store.verify_key(bot.stdout.strip())
        assert laptop is not None and (laptop.scope, laptop.owner) == ("generate", "laptop")
        assert alice is not None and (alice.scope, alice.owner) == ("read", "alice")
    finally:
        store.close()
    rows = {cells[1]: cells[2:4] for line in cli(["keys", "list"], workspace).stdout.splitlines()
            if line.count("…") == 1 for cells in [line.replace("│", " ").split()]}
    assert rows == {"laptop": ["generate", "laptop"], "alice-bot": ["read", "alice"]}
    bad = cli(["keys", "create", "x", "--scope", "root"], workspace)
    assert bad.returncode == 2 and "scope 'root' is invalid" in one_error_line(bad)


@pytest.mark.parametrize("command", [["keys"], ["keys", "create"], ["keys", "revoke"]])
def test_keys_help_shows_an_example(command: list[str], workspace: Path, cli: Cli) -> None:
    r = cli([*command, "--help"], workspace)
    assert r.returncode == 0, r.stderr
    assert "Example" in r.stdout
