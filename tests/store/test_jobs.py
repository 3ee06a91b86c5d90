"""Fine-tuning jobs in the store, on SQLite and PostgreSQL: a job is claimed by exactly one of many
concurrent workers, a dead worker's job is reclaimed once its heartbeat is stale (and the dead
worker can write nothing more), cancels, events and checkpoints newest first, files by owner."""

from __future__ import annotations

import threading
import time

import pytest

from genloop.errors import Conflict, InvalidInput, NotFound
from genloop.store import Store


def job(store: Store, owner: str | None = None, **kw):
    return store.create_job(model="m@1", objective="sft", method={"type": "supervised"},
                            hyperparameters={"steps": 3}, data={"kind": "pairs", "source": "x"},
                            seed=1, owner=owner, **kw)


def test_concurrent_workers_never_claim_the_same_job(store, db_url):
    made = {job(store).id for _ in range(6)}
    claims: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)

    def worker(name: str) -> None:
        mine = Store(db_url)  # a connection of its own, as a separate process has
        barrier.wait()
        got = []
        while (claimed := mine.claim_job(name)) is not None:
            got.append(claimed.id)
        claims[name] = got
        mine.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [j for got in claims.values() for j in got]
    assert sorted(everything) == sorted(made)  # each job once, none lost
    for name, got in claims.items():
        assert all(store.get_job(j).worker == name for j in got)
    assert store.claim_job("late") is None


def test_the_oldest_queued_job_goes_first_and_a_running_one_stays_with_its_worker(store):
    first, second = job(store), job(store)
    assert store.claim_job("a").id == first.id
    assert store.claim_job("b").id == second.id
    assert store.claim_job("c") is None  # both running, their heartbeats fresh
    beat = store.heartbeat_job(first.id, "a")
    assert beat.status == "running" and beat.worker == "a"
    with pytest.raises(Conflict, match="no longer run by worker b"):
        store.heartbeat_job(first.id, "b")


def test_a_stale_job_is_reclaimed_and_its_old_worker_can_write_nothing(store):
    j = job(store)
    store.claim_job("dead")
    store.set_job_run(j.id, "dead", "run123")
    time.sleep(0.3)
    assert store.claim_job("fresh", stale_after_s=60) is None  # not stale yet by a minute
    taken = store.claim_job("fresh", stale_after_s=0.2)
    assert taken is not None and taken.id == j.id and taken.worker == "fresh"
    assert taken.attempts == 2 and taken.run_id == "run123"  # the new worker resumes the run
    for write in (lambda: store.heartbeat_job(j.id, "dead"),
                  lambda: store.add_job_event(j.id, "dead", "late"),
                  lambda: store.finish_job(j.id, "dead", "succeeded", fine_tuned_model="m@9")):
        with pytest.raises(Conflict):
            write()
    done = store.finish_job(j.id, "fresh", "succeeded", fine_tuned_model="m@2")
    assert done.status == "succeeded" and done.fine_tuned_model == "m@2" and done.finished_at
    messages = [e.message for e in store.list_job_events(j.id, limit=50)]
    assert messages[0] == "The job has successfully completed"
    assert any("stopped responding" in m for m in messages) and "late" not in messages


def test_cancel_a_queued_job_at_once_and_a_running_one_through_its_worker(store):
    queued, running = job(store), job(store)
    store.claim_job("w")  # the oldest: `queued` is now running
    queued, running = running, queued
    assert store.cancel_job(queued.id).status == "cancelled"
    assert store.claim_job("w2") is None  # a cancelled job is never claimed
    asked = store.cancel_job(running.id)
    assert asked.status == "running" and asked.cancel_requested
    assert store.heartbeat_job(running.id, "w").cancel_requested  # what the worker reads
    assert store.finish_job(running.id, "w", "cancelled").status == "cancelled"
    with pytest.raises(InvalidInput, match="already cancelled"):
        store.cancel_job(running.id)


def test_a_dead_workers_cancelled_job_ends_cancelled_not_rerun(store):
    j = job(store)
    store.claim_job("dead")
    store.cancel_job(j.id)
    time.sleep(0.2)
    assert store.claim_job("w", stale_after_s=0.1) is None
    assert store.get_job(j.id).status == "cancelled"


def test_release_puts_the_job_back_with_its_run(store):
    j = job(store)
    store.claim_job("w")
    store.set_job_run(j.id, "w", "r1")
    back = store.release_job(j.id, "w")
    assert back.status == "queued" and back.worker is None and back.run_id == "r1"
    again = store.claim_job("w2")
    assert again.id == j.id and again.run_id == "r1"


def test_events_and_checkpoints_list_newest_first_and_page(store):
    j = job(store, events=("Validating training file: file-1",))
    store.claim_job("w")
    for step in (1, 2, 3):
        store.add_job_event(j.id, "w", f"step {step}", type="metrics", data={"step": step})
        store.add_job_checkpoint(j.id, "w", run_id="r", step=step, metrics={"train_loss": 1.0 / step},
                                 path=f"/runs/r/step-{step}")
    events = store.list_job_events(j.id, limit=100)
    messages = [e.message for e in events]
    assert messages[:2] == ["Checkpoint saved at step 3", "step 3"]
    assert messages[-3:] == ["Fine-tuning job started by worker w", "Job enqueued",
                             "Validating training file: file-1"]
    page = store.list_job_events(j.id, limit=2)
    rest = store.list_job_events(j.id, limit=100, after=page[-1].id)
    assert [e.id for e in page + rest] == [e.id for e in events]
    checkpoints = store.list_job_checkpoints(j.id)
    assert [c.step for c in checkpoints] == [3, 2, 1]
    assert checkpoints[0].metrics == {"train_loss": pytest.approx(1 / 3)}
    assert [c.step for c in store.list_job_checkpoints(j.id, after=checkpoints[0].id)] == [2, 1]


def test_owners_see_only_their_jobs_and_files(store, workspace):
    mine, theirs = job(store, owner="alice"), job(store, owner="bob")
    assert [j.id for j in store.list_jobs(visible_to="alice")] == [mine.id]
    assert {j.id for j in store.list_jobs()} == {mine.id, theirs.id}
    for read in (store.get_job, store.cancel_job, store.list_job_events):
        with pytest.raises(NotFound, match=theirs.id):
            read(theirs.id, visible_to="alice")
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "f.jsonl").write_text("{}\n")
    f = store.add_file(file_id="file-abc", purpose="fine-tune", filename="f.jsonl", size=3,
                       lines=1, path=str(workspace / "f.jsonl"), owner="bob")
    assert store.list_files(visible_to="alice") == []
    with pytest.raises(NotFound):
        store.get_file(f.id, visible_to="alice")
    with pytest.raises(NotFound):
        store.delete_file(f.id, visible_to="alice")
    assert store.get_file(f.id, visible_to="bob").path == str(workspace / "f.jsonl")
    with pytest.raises(InvalidInput, match="purpose 'batch'"):
        store.add_file(file_id="file-x", purpose="batch", filename="f", size=1, lines=1, path="f")
