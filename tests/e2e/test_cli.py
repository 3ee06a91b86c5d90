"""The real `genloop` command in a subprocess: help, train → generate → models → eval, and bad
input: one line on stderr starting with "error:", a non-zero exit, nothing half-written."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from ..conftest import run_cli, tiny_recipe_dict, write_corpus  # noqa: TID252

COMMANDS = [[], ["train"], ["tune"], ["generate"], ["eval"], ["quickstart"], ["data"],
            ["data", "prepare"], ["data", "from-feedback"], ["data", "list"], ["models"],
            ["models", "list"], ["models", "show"], ["worker"], ["import"], ["export"],
            ["models", "quantize"], ["merge"],
            ["kg"], ["kg", "load"], ["kg", "list"], ["kg", "query"], ["kg", "stats"], ["kg", "link"],
            ["kg", "check"]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A workspace holding one trained model, `cli@1`, trained through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    corpus = write_corpus(root / "corpus.txt")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(corpus, name="cli", steps=60)))
    home = root / "home"
    r = run_cli(["train", str(recipe), "--set", "train.steps=30", "--set", "eval.prompt=The"],
                home)
    assert r.returncode == 0, r.stderr
    assert "cli@1" in r.stdout
    return home, root


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "genloop")
def test_help_shows_an_example(command: list[str], tmp_path: Path) -> None:
    r = run_cli([*command, "--help"], tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert "Example" in r.stdout
    assert not (tmp_path / "home").exists()  # help writes nothing


LOADED = """import json, sys
from genloop.cli.main import app
sys.argv = ["genloop", *sys.argv[1:]]
try:
    app()
except SystemExit:
    pass
print(json.dumps(["torch" in sys.modules, sorted(m for m in sys.modules if m.startswith("genloop.cli."))]))
"""


@pytest.mark.parametrize(("command", "torch_loaded"), [
    (["keys", "--help"], False), (["data", "list", "--help"], False), (["serve", "--help"], False),
    (["generate", "--help"], True),
])
def test_a_command_imports_only_its_own_module(command: list[str], torch_loaded: bool) -> None:
    """`genloop keys list` starts fast: torch comes only with the commands that need it."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", LOADED, *command], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "COLUMNS": "200"})
    loaded, modules = json.loads(r.stdout.strip().splitlines()[-1])
    assert loaded == torch_loaded, r.stdout[-2000:]
    assert modules == sorted(["genloop.cli.main", "genloop.cli.console", f"genloop.cli.{command[0]}",
                              *(["genloop.cli.options"] if command[0] != "keys" else [])])


def test_train_generate_models_eval(trained: tuple[Path, Path]) -> None:
    home, _ = trained
    gen = ["generate", "cli", "--prompt", "The cat", "--seed", "1", "--max-new-tokens", "24",
           "--no-stream", "--json"]
    first, second = run_cli(gen, home), run_cli(gen, home)
    assert first.returncode == 0, first.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["text"] == b["text"] and a["model"] == "cli@1" and a["prompt"] == "The cat"
    assert a["seed"] == 1 and a["tokens"] > 0

    # the core's sampling settings reach the CLI: a logit bias of +100 forces one token
    forced = run_cli([*gen, "--logit-bias", "5=100", "--presence-penalty", "0.5"], home)
    assert forced.returncode == 0, forced.stderr
    text = json.loads(forced.stdout)["text"]
    assert len(text) > 1 and len(set(text)) == 1, text

    listing = run_cli(["models", "list"], home)
    assert listing.returncode == 0 and "cli@1" in listing.stdout and "gpt" in listing.stdout
    show = run_cli(["models", "show", "cli@1"], home)
    assert show.returncode == 0 and "cli@1" in show.stdout and "Metrics" in show.stdout

    ev = run_cli(["eval", "cli@1", "--samples", "1"], home)
    assert ev.returncode == 0, ev.stderr
    assert "val_loss" in ev.stdout


PROGRESS = {"data", "build"}


def snapshot(home: Path) -> set[str]:
    """Every path in the workspace, the database's own files aside."""
    return {str(p.relative_to(home)) for p in home.rglob("*") if not p.name.startswith("genloop.db")}


def assert_clean_failure(r, home: Path, before: set[str], *expected: str) -> None:
    assert r.returncode != 0
    *progress, error = r.stderr.strip().splitlines()
    # train reports its phases on stderr (stdout stays for results) before it can fail; the
    # error itself is exactly one line, the last, and nothing else on stderr looks like one
    assert all(line.split(":")[0] in PROGRESS for line in progress), r.stderr
    assert error.startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    for word in expected:
        assert word.lower() in error.lower(), (word, error)
    after = snapshot(home)
    assert after == before, after ^ before
    leftovers = [p for p in after if ".tmp" in p or ".staging" in p]
    assert not leftovers


def _bad_recipes(root: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    corpus = root / "corpus.txt"
    (root / "empty.txt").write_text("")
    (root / "binary.txt").write_bytes(b"hello\x00\x01\x02" * 100)
    cases = {
        "empty corpus": (["--set", f"data.source={root / 'empty.txt'}"], ("empty.txt",)),
        "binary corpus": (["--set", f"data.source={root / 'binary.txt'}"], ("binary",)),
        "missing corpus": (["--set", f"data.source={root / 'nope.txt'}"], ("nope.txt",)),
        "unknown preset": (["--set", "model.preset=gigantic"], ("gigantic",)),
        "unknown key": (["--set", "train.stepz=3"], ("train.stepz",)),
        "wrong type": (["--set", "train.steps=abc"], ("train.steps",)),
    }
    return {k: ([str(root / "recipe.yaml"), "--set", f"name=bad{i}", *v[0]], v[1])
            for i, (k, v) in enumerate(cases.items())} | {
        "missing recipe": ([str(root / "missing.yaml")], ("missing.yaml",)),
        "corpus as recipe": ([str(corpus)], ("recipe",)),
    }


BAD_TRAIN = ["empty corpus", "binary corpus", "missing corpus", "unknown preset", "unknown key",
             "wrong type", "missing recipe", "corpus as recipe"]


@pytest.mark.parametrize("case", BAD_TRAIN)
def test_bad_train_input(trained: tuple[Path, Path], case: str) -> None:
    home, root = trained
    args, expected = _bad_recipes(root)[case]
    before = snapshot(home)
    r = run_cli(["train", *args], home)
    assert_clean_failure(r, home, before, *expected)


def _register_copy(home: Path, name: str, damage) -> None:
    """Register a copy of cli@1 as ``name`` with its weights file damaged by ``damage``."""
    import genloop.store as store_mod

    old = os.environ.get("GENLOOP_HOME")
    os.environ["GENLOOP_HOME"] = str(home)
    try:
        store = store_mod.Store()
        src = Path(store.resolve("cli@1").path)
        staged = home / "models" / f".staging-test-{name}"
        shutil.copytree(src, staged)
        damage(staged / "weights.safetensors")
        store.register_model(name, staged, family="gpt")
        store.close()
    finally:
        if old is None:
            os.environ.pop("GENLOOP_HOME")
        else:
            os.environ["GENLOOP_HOME"] = old


def _pickle(path: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    path.unlink()
    torch.save(tensors, path)  # a pickle under the safetensors name


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize(("name", "damage", "expected"), [
    ("pickled", _pickle, ("safetensors",)),
    ("truncated", _truncate, ("weights.safetensors",)),
])
def test_damaged_weights_are_refused(trained: tuple[Path, Path], name, damage, expected) -> None:
    home, _ = trained
    _register_copy(home, name, damage)
    before = snapshot(home)
    r = run_cli(["generate", name, "--prompt", "The", "--seed", "1", "--no-stream"], home)
    assert_clean_failure(r, home, before, *expected)


@pytest.mark.parametrize(("args", "expected"), [
    (["generate", "nosuch", "--prompt", "The"], ("nosuch",)),
    (["generate", "cli@7", "--prompt", "The"], ("cli@7", "cli@1")),
    (["generate", "cli", "--prompt", "The cat " * 40, "--no-stream"], ("context",)),
    (["generate", "cli", "--prompt", "The", "--logit-bias", "abc"], ("--logit-bias", "TOKEN_ID=BIAS")),
    (["generate", "cli", "--prompt", "The", "--logit-bias", "99999=5"], ("logit_bias", "99999")),
    (["models", "show", "nosuch"], ("nosuch",)),
    (["eval", "nosuch"], ("nosuch",)),
])
def test_bad_generate_input(trained: tuple[Path, Path], args: list[str], expected) -> None:
    home, _ = trained
    before = snapshot(home)
    r = run_cli(args, home)
    assert_clean_failure(r, home, before, *expected)


def test_eval_on_held_out_text(trained: tuple[Path, Path]) -> None:
    home, root = trained
    text = "The cat dreams of the quiet sea. A dog waits for a letter. The river paints the market."
    (root / "held.txt").write_text(text + "Ω", encoding="utf-8")  # Ω: not in the corpus
    r = run_cli(["eval", "cli", "--data", str(root / "held.txt"), "--json"], home)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["model"] == "cli@1" and m["tokens"] == m["characters"] == len(text) + 1  # char tokenizer
    assert (m["unknown_characters"], m["unknown"]) == (1, "Ω")
    assert m["unknown_share"] == pytest.approx(1 / (len(text) + 1))
    assert m["bits_per_char"] == pytest.approx(m["nats_per_char"] / math.log(2))
    assert m["context"] == 32 and m["stride"] == 16 and 0 < m["nats_per_char"] < 5

    rows = "\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(text.split(" A ")))
    (root / "held.jsonl").write_text(rows + "\n", encoding="utf-8")
    r = run_cli(["eval", "cli", "--data", str(root / "held.jsonl"), "--field", "body"], home)
    assert r.returncode == 0, r.stderr
    for word in ("nats_per_token", "nats_per_char", "bits_per_char", "unknown_characters"):
        assert word in r.stdout, (word, r.stdout)
    # the two rows' characters and the <eos> between them
    assert re.search(rf"\bcharacters\W+{len(text) - 2}\b", r.stdout), r.stdout
    shown = run_cli(["models", "show", "cli@1"], home)
    assert "nats_per_char" not in shown.stdout  # held-out scores are reported, not stored


@pytest.mark.parametrize(("case", "expected"), [
    ("missing", ("nope.txt", "does not exist")),
    ("empty", ("empty.txt", "no text")),
    ("no field", ("rows.jsonl", "line 2", "'text'")),
    ("samples", ("--samples",)),
])
def test_bad_eval_data(trained: tuple[Path, Path], case: str, expected) -> None:
    home, root = trained
    (root / "empty.txt").write_text("  \n")
    (root / "rows.jsonl").write_text('{"text": "The cat"}\n{"body": "A dog"}\n')
    (root / "ok.txt").write_text("The cat")
    args = {"missing": ["--data", str(root / "nope.txt")], "empty": ["--data", str(root / "empty.txt")],
            "no field": ["--data", str(root / "rows.jsonl")],
            "samples": ["--data", str(root / "ok.txt"), "--samples", "2"]}[case]
    before = snapshot(home)
    r = run_cli(["eval", "cli", *args], home)
    assert_clean_failure(r, home, before, *expected)
