"""`genloop tune` in a subprocess: a model trained through the CLI, tuned with dpo on a file into
its next version (the card shows the tuning), and bad input as one error line, nothing written."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest
import yaml

from ..conftest import _OBJECTS, _SUBJECTS, _VERBS, run_cli, tiny_recipe_dict, write_corpus  # noqa: TID252
from .test_cli import assert_clean_failure, snapshot


@pytest.fixture(scope="module")
def tuned_home(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tune")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(write_corpus(root / "corpus.txt"), name="cli",
                                                      steps=30)))
    home = root / "home"
    r = run_cli(["train", str(recipe)], home)
    assert r.returncode == 0, r.stderr
    rng = random.Random(0)
    rows = []
    for _ in range(60):
        completion = f" {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
        rows.append({"prompt": rng.choice(_SUBJECTS), "chosen": completion,
                     "rejected": "".join(rng.sample(completion, len(completion)))})
    (root / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return home, root


def test_tune_a_model_on_a_preferences_file(tuned_home) -> None:
    home, root = tuned_home
    args = ["tune", "cli", "--data", str(root / "prefs.jsonl"), "--objective", "dpo", "--steps", "10",
            "--beta", "0.2", "--lr", "0.003"]
    shown = run_cli([*args, "--print-recipe"], home)
    assert shown.returncode == 0, shown.stderr
    recipe = yaml.safe_load(shown.stdout)
    assert recipe["parent"] == "cli@1" and recipe["name"] == "cli"
    assert recipe["train"]["objective"] == "dpo" and recipe["train"]["beta"] == 0.2
    r = run_cli(args, home)
    assert r.returncode == 0, r.stderr
    assert "cli@2" in r.stdout and "preference_accuracy" in r.stdout
    assert "reward acc" in r.stderr  # the evaluation lines show the objective's figures
    card = run_cli(["models", "show", "cli@2"], home)
    assert card.returncode == 0 and "Tuning" in card.stdout and "beta 0.2" in card.stdout
    assert "cli@1" in card.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["--objective", "dpo"], ("--data FILE or --from-feedback",)),
    (["--objective", "sft", "--data", "{prefs}", "--from-feedback"], ("one of them",)),
    (["--objective", "sft", "--data", "{prefs}", "--beta", "0.5"], ("beta", "dpo and kto")),
    (["--objective", "kto", "--data", "{prefs}", "--desirable-weight", "2", "--beta", "0.5"],
     ("completion",)),
    (["--objective", "ppo", "--data", "{prefs}"], ("'ppo'", "sft, dpo, kto")),
])
def test_bad_tune_input(tuned_home, args: list[str], expected: tuple[str, ...]) -> None:
    home, root = tuned_home
    args = [a.replace("{prefs}", str(root / "prefs.jsonl")) for a in args]
    before = snapshot(home)
    r = run_cli(["tune", "cli", *args], home)
    assert_clean_failure(r, home, before, *expected)


def test_tune_an_unknown_model(tuned_home) -> None:
    home, root = tuned_home
    before = snapshot(home)
    r = run_cli(["tune", "nobody", "--data", str(root / "prefs.jsonl"), "--objective", "dpo"], home)
    assert_clean_failure(r, home, before, "nobody")


def test_tune_from_feedback_the_model_lacks(tuned_home) -> None:
    """cli@1 has no feedback: too few records, said in one line, nothing written."""
    home, _ = tuned_home
    before = snapshot(home)
    r = run_cli(["tune", "cli", "--from-feedback", "--objective", "dpo"], home)
    assert_clean_failure(r, home, before, "needed")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _openai_rows(kind: str, n: int = 24) -> list[dict]:
    """OpenAI's fine-tuning shapes: chat messages (supervised) or preference pairs (DPO)."""
    rng = random.Random(1)
    rows = []
    for _ in range(n):
        user = {"role": "user", "content": rng.choice(_SUBJECTS)}
        reply = f"{rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
        if kind == "sft":
            rows.append({"messages": [user, {"role": "assistant", "content": reply}]})
        else:
            rows.append({"input": {"messages": [user]},
                         "preferred_output": [{"role": "assistant", "content": reply}],
                         "non_preferred_output": [{"role": "assistant", "content": reply[::-1]}]})
    return rows


def _newest(home: Path) -> str:
    r = run_cli(["models", "list"], home)
    assert r.returncode == 0, r.stderr
    return max(re.findall(r"\bcli@(\d+)", r.stdout), key=int)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_tune_on_openai_format_files(tuned_home, objective: str) -> None:
    """OpenAI's messages (sft) and preference (dpo) files tune the model into its next version;
    the card names the file, its hash and its record count."""
    home, root = tuned_home
    data = _write_jsonl(root / f"openai_{objective}.jsonl", _openai_rows(objective))
    before = int(_newest(home))
    r = run_cli(["tune", "cli@1", "--data", str(data), "--objective", objective, "--steps", "4"],
                home)
    assert r.returncode == 0, r.stderr
    assert int(_newest(home)) == before + 1
    card = run_cli(["models", "show", f"cli@{before + 1}"], home)
    assert card.returncode == 0, card.stderr
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    for shown in (data.name, sha, "cli@1"):
        assert shown in card.stdout, (shown, card.stdout)
    assert re.search(r"records\s+24\s", card.stdout), card.stdout  # the file's, as read
    # the canonical records (the chat template's transcript) are what the tune read
    records = [json.loads(line) for p in (home / "records").glob("*.jsonl")
               for line in p.read_text(encoding="utf-8").splitlines()]
    assert any(set(rec) == ({"prompt", "completion"} if objective == "sft" else
                            {"prompt", "chosen", "rejected"}) and "USER" in rec["prompt"]
               for rec in records)


@pytest.mark.parametrize(("objective", "rows", "expected"), [
    ("sft", [{"messages": [{"role": "user", "content": "The cat"},
                           {"role": "assistant", "content": "sings."}]},
             {"messages": [{"role": "user", "content": "A dog"},
                           {"role": "robot", "content": "runs."}]}],
     ("line 2", "messages.1.role", "'robot'")),
    ("dpo", [{"input": {"messages": [{"role": "user", "content": "The cat"}]},
              "preferred_output": [{"role": "assistant", "content": "sings."}]}],
     ("line 1", "'non_preferred_output' is missing")),
    ("sft", [{"messages": [{"role": "user", "content": "The cat " * 10},
                           {"role": "assistant", "content": "sings."}]}],
     ("line 1", "context is 32")),
], ids=["bad-role", "missing-field", "prompt-too-long"])
def test_a_bad_tuning_file_is_one_error_line_and_no_new_version(tuned_home, objective, rows,
                                                                expected) -> None:
    home, root = tuned_home
    data = _write_jsonl(root / "bad.jsonl", rows)
    newest = _newest(home)
    before = snapshot(home)
    r = run_cli(["tune", "cli", "--data", str(data), "--objective", objective], home)
    assert_clean_failure(r, home, before, "bad.jsonl", *expected)
    assert _newest(home) == newest


@pytest.mark.slow
def test_tune_with_lora_then_merge(tuned_home) -> None:
    """`--lora-rank` tunes adapters only (an adapter version over cli@1); `genloop merge` folds
    them into a full version that generates the same text for the same seed."""
    home, root = tuned_home
    r = run_cli(["tune", "cli@1", "--data", str(root / "prefs.jsonl"), "--objective", "dpo",
                 "--steps", "6", "--lora-rank", "4", "--lora-targets", "qkv,fc"], home)
    assert r.returncode == 0, r.stderr
    adapter = f"cli@{_newest(home)}"
    card = run_cli(["models", "show", adapter], home)
    assert "LoRA" in card.stdout and "rank 4" in card.stdout and "qkv, fc" in card.stdout
    merged = run_cli(["merge", adapter, "--name", "cli-merged"], home)
    assert merged.returncode == 0, merged.stderr
    assert f"merged {adapter} → cli-merged@1" in merged.stdout
    gen = ["--prompt", "The cat", "--seed", "2", "--max-new-tokens", "16", "--no-stream", "--json"]
    a, b = run_cli(["generate", adapter, *gen], home), run_cli(["generate", "cli-merged@1", *gen], home)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout)["text"] == json.loads(b.stdout)["text"]


@pytest.mark.parametrize(("args", "expected"), [
    (["tune", "cli@1", "--data", "{prefs}", "--objective", "dpo", "--steps", "2", "--lora-rank", "4",
      "--lora-targets", "q_proj"], ("no adaptable module 'q_proj'", "qkv, proj, fc")),
    (["tune", "cli@1", "--data", "{prefs}", "--objective", "dpo", "--lora-alpha", "8"],
     ("need --lora-rank",)),
    (["merge", "cli@1"], ("cli@1 holds full weights, not an adapter",)),
])
def test_bad_lora_input(tuned_home, args: list[str], expected: tuple[str, ...]) -> None:
    home, root = tuned_home
    args = [a.replace("{prefs}", str(root / "prefs.jsonl")) for a in args]
    before = snapshot(home)
    r = run_cli(args, home)
    assert_clean_failure(r, home, before, *expected)
