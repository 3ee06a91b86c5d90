"""Crash safety: kill -9 mid-run, resume, and get the same bits as a run that never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from genloop.errors import CorruptArtifact
from genloop.training.loop import train

from ..conftest import tiny_recipe_dict, workspace_env, write_corpus  # noqa: TID252

CKPT_FILES = {"weights.safetensors", "optimizer.safetensors", "rng.safetensors", "config.json",
              "state.json"}
TRAIN = "import sys, genloop; genloop.train(sys.argv[1])"
RESUME = ("import sys; from genloop.training.loop import train; "
          "r = train(None, resume=sys.argv[1]); print(r.model_ref, r.metrics['train_steps'])")


def start(recipe_file: Path, home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TRAIN, str(recipe_file)], env=workspace_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def assert_complete(ckpts: Path) -> None:
    """Every visible checkpoint is complete; ``last`` points at one; temp dirs are hidden."""
    for entry in ckpts.iterdir():
        if entry.name.startswith("."):
            continue  # in-progress temp dirs and links are dot-names, never taken as checkpoints
        assert entry.name in ("last", "best") or entry.name.startswith("step-"), entry
        assert not entry.name.endswith(".tmp")
        if entry.is_symlink():
            assert entry.resolve().is_dir(), f"{entry.name} dangles"
            entry = entry.resolve()
        assert CKPT_FILES <= {f.name for f in entry.iterdir()}, entry


def wait_for_run(proc: subprocess.Popen, home: Path, deadline: float) -> Path:
    """The run directory ``proc`` creates under ``home`` (polled: it is another process's file)."""
    runs = home / "runs"
    while not (runs.is_dir() and any(runs.iterdir())):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (run_dir,) = runs.iterdir()
    return run_dir


def last_step(ckpts: Path) -> int:
    try:
        return int(os.readlink(ckpts / "last").removeprefix("step-"))
    except FileNotFoundError:
        return -1


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_identical(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    # dropout on: the resumed run must also restore the RNG state, not only weights and moments
    recipe = tiny_recipe_dict(corpus, name="crash", steps=120, checkpoint_every=20, eval_every=40,
                              log_every=1, batch_size=4)
    recipe["model"]["config"]["dropout"] = 0.1
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    home_a, home_b = tmp_path / "a", tmp_path / "b"

    victim = start(recipe_file, home_a)
    reference = start(recipe_file, home_b)  # the uninterrupted run, alongside
    try:
        deadline = time.monotonic() + 90
        run_dir = wait_for_run(victim, home_a, deadline)
        ckpts = run_dir / "checkpoints"
        while last_step(ckpts) < 40:
            assert victim.poll() is None, f"finished before the kill: {victim.stderr.read()}"
            assert time.monotonic() < deadline
            if last_step(ckpts) >= 0:
                target = os.readlink(ckpts / "last")
                ok = CKPT_FILES <= {f.name for f in (ckpts / target).iterdir()} \
                    if (ckpts / target).is_dir() else False
                # a miss is only allowed if `last` moved on meanwhile (the old dir was pruned)
                assert ok or os.readlink(ckpts / "last") != target
            time.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    killed_at = last_step(ckpts)
    assert 40 <= killed_at < 120
    assert_complete(ckpts)

    resumed = subprocess.run(
        [sys.executable, "-c", RESUME, run_dir.name], env=workspace_env(home_a),
        capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["crash@1", "120"]
    assert last_step(ckpts) == 120
    assert_complete(ckpts)

    assert reference.wait(timeout=120) == 0, reference.stderr.read()
    (ref_run,) = (home_b / "runs").iterdir()
    got = load_file(str(ckpts / "last" / "weights.safetensors"))
    want = load_file(str(ref_run / "checkpoints" / "last" / "weights.safetensors"))
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), \
        [k for k in want if not torch.equal(got[k], want[k])]
    # the metrics log holds each step once, with the uninterrupted run's losses
    assert train_losses(run_dir) == train_losses(ref_run)
    assert [step for step, _ in train_losses(run_dir)] == list(range(1, 121))


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(x["step"], x["train/loss"]) for x in rows if "train/loss" in x]


def test_resume_from_truncated_checkpoint_is_corrupt_artifact(workspace, tiny_recipe):
    result = train(tiny_recipe(name="trunc", steps=6, checkpoint_every=3))
    weights = result.run_dir / "checkpoints" / "last" / "weights.safetensors"
    data = weights.read_bytes()
    weights.chmod(0o644)
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArtifact, match="weights.safetensors"):
        train(None, resume=result.run_id)
