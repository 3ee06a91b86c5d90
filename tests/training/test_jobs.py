"""The fine-tuning worker as a real process: killed with SIGKILL mid-job, a replacement reclaims
the job once its heartbeat is stale and resumes its run from the last checkpoint, ending with the
same weights as a job that was never interrupted (CPU: the loop replays the same batches); two
workers running side by side never run the same job; SIGTERM puts the job back in the queue."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import genloop
from genloop.data.formats import write_records
from genloop.store import Store

from ..conftest import (  # noqa: TID252
    _OBJECTS,
    _SUBJECTS,
    _VERBS,
    BIN,
    tiny_recipe_dict,
    wait_until,
    workspace_env,
    write_corpus,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def base(workspace: Path, tmp_path: Path) -> Path:
    """`poet@1`, a tiny gpt with dropout (so a resume must restore the RNG too), and records."""
    recipe = tiny_recipe_dict(write_corpus(tmp_path / "corpus.txt"), name="poet", steps=30)
    recipe["model"]["config"]["dropout"] = 0.1
    genloop.train(recipe)
    rng = random.Random(3)
    rows = [{"prompt": rng.choice(_SUBJECTS), "completion": f" {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."}
            for _ in range(60)]
    return write_records(rows, workspace / "records")


STEPS = 60  # the first checkpoint is at step 10: the kill (or SIGTERM) lands long before the end


def queue(store: Store, records: Path, steps: int = STEPS) -> str:
    return store.create_job(
        model="poet@1", objective="sft", method={"type": "supervised"},
        hyperparameters={"steps": steps, "eval_every": 10, "checkpoint_every": 10, "batch_size": 4},
        data={"kind": "pairs", "source": str(records)}, seed=11).id


def worker(home: Path, *flags: str) -> subprocess.Popen:
    log = home.parent / f"worker-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        process = subprocess.Popen([str(BIN / "genloop"), "worker", "--poll", "0.1", *flags],
                                   env=workspace_env(home), stdout=out, stderr=subprocess.STDOUT)
    process.log = log  # type: ignore[attr-defined]
    return process


def alive(*processes: subprocess.Popen) -> bool:
    """True; a worker that exited fails the test at once, with its log (a wait would only time
    out, showing the job still queued)."""
    for p in processes:
        assert p.poll() is None, f"worker exited with {p.returncode}:\n{p.log.read_text()[-3000:]}"  # type: ignore[attr-defined]
    return True


def stop(*processes: subprocess.Popen) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def weights(store: Store, ref: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(store.resolve(ref).path) / "weights.safetensors"))


def started_by(store: Store, job_id: str) -> list[str]:
    return [e.message for e in store.list_job_events(job_id, limit=1000)
            if e.message.startswith("Fine-tuning job started by worker")]


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_job_ends_as_if_never_interrupted(workspace, base):
    store = Store()
    killed = queue(store, base)
    first = worker(workspace, "--stale", "2")
    others: list[subprocess.Popen] = []
    try:
        wait_until(lambda: alive(first) and store.list_job_checkpoints(killed), 120,
                   lambda: (store.get_job(killed), first.log.read_text()[-3000:]))
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        at_kill = store.get_job(killed)
        assert at_kill.status == "running" and at_kill.run_id is not None
        assert store.get_run(at_kill.run_id).step < STEPS, "finished before the kill"
        uninterrupted = queue(store, base)  # the same job, run by one worker start to end
        others = [worker(workspace, "--stale", "2"), worker(workspace, "--stale", "2")]
        wait_until(lambda: alive(*others)
                   and all(store.get_job(j).finished for j in (killed, uninterrupted)), 240,
                   lambda: [store.get_job(j) for j in (killed, uninterrupted)])
    finally:
        stop(first, *others)
    resumed, reference = store.get_job(killed), store.get_job(uninterrupted)
    assert resumed.status == reference.status == "succeeded", (resumed.error, reference.error)
    assert resumed.run_id == at_kill.run_id and resumed.attempts == 2  # resumed, not restarted
    assert {resumed.fine_tuned_model, reference.fine_tuned_model} == {"poet@2", "poet@3"}
    got, want = weights(store, resumed.fine_tuned_model), weights(store, reference.fine_tuned_model)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), \
        [k for k in want if not torch.equal(got[k], want[k])]
    messages = [e.message for e in store.list_job_events(killed, limit=1000)]
    assert any("stopped responding; job reclaimed" in m for m in messages)
    # two workers ran side by side: each start of each job is one worker's, exactly once
    assert len(started_by(store, killed)) == 2 and len(started_by(store, uninterrupted)) == 1
    assert "resuming run" in started_by(store, killed)[0]


@pytest.mark.slow
def test_sigterm_puts_the_job_back_and_the_next_worker_resumes_it(workspace, base):
    store = Store()
    job = queue(store, base)
    first = worker(workspace)
    try:
        wait_until(lambda: alive(first) and store.list_job_checkpoints(job), 120,
                   lambda: (store.get_job(job), first.log.read_text()[-3000:]))
        first.terminate()
        assert first.wait(60) == 0
    finally:
        stop(first)
    back = store.get_job(job)
    assert back.status == "queued" and back.worker is None and back.run_id is not None
    assert store.get_run(back.run_id).step < STEPS
    done = subprocess.run([str(BIN / "genloop"), "worker", "--once"], env=workspace_env(workspace),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    finished = store.get_job(job)
    assert finished.status == "succeeded" and finished.run_id == back.run_id
    assert finished.fine_tuned_model == "poet@2"
    assert store.get_run(back.run_id).step == STEPS
