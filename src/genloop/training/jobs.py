"""The fine-tuning worker: claims a job from the store and runs it on the one loop.

    claim     the oldest queued job, or a running one whose worker stopped beating (the store
              claims atomically: two workers never hold one job)
    run       a new run (its id recorded on the job before it starts) of ``tune_recipe`` on the
              job's data, or — when the job has a run with a checkpoint — that run resumed from
              its last checkpoint (bit-identical on CPU: the loop replays the same batches)
    report    each log and evaluation becomes a metrics event, each checkpoint a checkpoint row;
              a thread beats the job's heartbeat meanwhile
    stop      at every log and evaluation the job is read: a cancel stops the run cleanly
              (``StopTraining``) within one evaluation interval; a worker that lost its job
              (presumed dead, and replaced) stops without writing
    finish    succeeded with ``fine_tuned_model`` = the registered ``name@N`` (served at once: the
              server resolves models from the store), or failed with the error's one line

A worker shut down (SIGTERM, Ctrl-C) puts its job back in the queue; one killed outright leaves
it running until its heartbeat is stale, then the next worker claims and resumes it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genloop.errors import Conflict, GenloopError, NotFound
from genloop.store import JobRecord, Store
from genloop.store.jobs import STALE_AFTER_S
from genloop.training.loop import Progress, StopTraining, TrainResult, train
from genloop.training.recipe import load_recipe
from genloop.training.tune import tune_recipe

log = logging.getLogger("genloop.worker")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:4]}"


@dataclass
class _Flags:
    """What the heartbeat thread and the shutdown signal tell the training thread."""

    shutdown: threading.Event
    cancel: bool = False
    lost: bool = False
    done: threading.Event = field(default_factory=threading.Event)  # the job ended: stop beating
    last: dict[str, float] = field(default_factory=dict)  # the latest train and valid loss


class Worker:
    """Runs jobs one at a time; ``shutdown`` (an Event) stops it after, or inside, its job."""

    def __init__(self, store: Store | None = None, *, name: str | None = None,
                 stale_after_s: float = STALE_AFTER_S, heartbeat_s: float | None = None):
        self.store = store or Store()
        self.name = name or worker_name()
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s or max(0.2, min(10.0, stale_after_s / 4))
        self.shutdown = threading.Event()

    def run(self, *, poll_s: float = 1.0, once: bool = False) -> int:
        """Claim and run jobs until shut down (``once``: at most one, then return); the number
        of jobs run."""
        done = 0
        while not self.shutdown.is_set():
            job = self.store.claim_job(self.name, stale_after_s=self.stale_after_s)
            if job is None:
                if once:
                    break
                self.shutdown.wait(poll_s)
                continue
            self.run_job(job)
            done += 1
            if once:
                break
        return done

    # --- one job ----------------------------------------------------------------------------

    def run_job(self, job: JobRecord) -> JobRecord | None:
        """Run a claimed job to its end; the finished job (None when it was taken away or put
        back in the queue)."""
        flags = _Flags(self.shutdown)
        beat = threading.Thread(target=self._beat, args=(job.id, flags), daemon=True)
        beat.start()
        try:
            result = self._train(job, flags)
        except StopTraining:
            return self._stopped(job, flags)
        except (KeyboardInterrupt, SystemExit):
            self._release(job)
            raise
        except Exception as e:  # noqa: BLE001 - every failure ends the job, with its one line
            if flags.lost:
                return None
            if not isinstance(e, GenloopError):
                log.exception("fine-tuning job %s failed", job.id)
            message = (str(e).strip().splitlines() or [type(e).__name__])[0][:500]
            if not isinstance(e, GenloopError):
                message = f"{type(e).__name__}: {message}"
            return self._finish(job, "failed", error=message)
        finally:
            flags.done.set()
            beat.join()
        tokens = result.metrics.get("train_tokens")
        return self._finish(job, "succeeded", fine_tuned_model=result.model_ref,
                            trained_tokens=int(tokens) if tokens is not None else None)

    def _train(self, job: JobRecord, flags: _Flags) -> TrainResult:
        on_progress = self._reporter(job, flags)
        registered = self._registered(job)
        if registered is not None:  # its worker died between registering and finishing
            return TrainResult(job.run_id or "", Path(), registered, {})
        if job.run_id is not None and self._resumable(job.run_id):
            return train(None, resume=job.run_id, on_progress=on_progress)
        if job.run_id is not None:
            self._abandon(job.run_id)
        run_id = uuid.uuid4().hex[:12]
        self.store.set_job_run(job.id, self.name, run_id)
        return train(self.recipe(job), run_id=run_id, on_progress=on_progress)

    def recipe(self, job: JobRecord) -> Any:
        """The tune's recipe: ``tune_recipe`` with the job's hyperparameters."""
        hp = job.hyperparameters
        auto = lambda key: None if hp.get(key, "auto") == "auto" else hp[key]  # noqa: E731
        epochs = auto("n_epochs") if hp.get("steps") is None else None
        base_name = job.model.partition("@")[0]
        recipe = tune_recipe(job.model, job.data, job.objective, steps=hp.get("steps"),
                             epochs=epochs, batch_size=auto("batch_size"), beta=auto("beta"),
                             sft_weight=hp.get("sft_weight"), seed=job.seed,
                             name=f"{base_name}-{job.suffix}" if job.suffix else None,
                             store=self.store)
        tree = recipe.frozen()
        train_section = tree["train"]
        if auto("learning_rate_multiplier") is not None:
            train_section["lr"] = train_section["lr"] * float(hp["learning_rate_multiplier"])
        for key in ("eval_every", "checkpoint_every"):
            if hp.get(key) is not None:
                train_section[key] = hp[key]
                train_section["log_every"] = min(train_section.get("log_every", 10), hp[key])
        return load_recipe(tree)

    def _registered(self, job: JobRecord) -> str | None:
        if job.run_id is None:
            return None
        refs = [v.ref for v in self.store.list_models() if v.run_id == job.run_id]
        return refs[-1] if refs else None

    def _resumable(self, run_id: str) -> bool:
        try:
            run = self.store.get_run(run_id)
        except NotFound:
            return False
        return (Path(run.path) / "checkpoints" / "last").is_dir()

    def _abandon(self, run_id: str) -> None:
        """A run whose worker died before its first checkpoint: marked failed, a new one starts."""
        try:
            self.store.update_run(run_id, status="failed",
                                  error="its worker stopped before the first checkpoint")
        except NotFound:
            pass

    # --- reporting --------------------------------------------------------------------------

    def _reporter(self, job: JobRecord, flags: _Flags) -> Any:
        def report(p: Progress) -> None:
            if flags.lost:
                raise StopTraining("the job was taken over by another worker")
            if p.phase in ("train", "eval"):
                self._check(job, flags)
            if flags.cancel or flags.shutdown.is_set():
                raise StopTraining("cancelled" if flags.cancel else "worker shutting down")
            try:
                self._event(job, p, flags)
            except Conflict:
                flags.lost = True
                raise StopTraining("the job was taken over by another worker") from None

        return report

    def _event(self, job: JobRecord, p: Progress, flags: _Flags) -> None:
        store, me = self.store, self.name
        extra = dict(p.metrics or {})
        if p.phase == "train" and p.loss is not None:
            flags.last["train_loss"] = p.loss
            store.add_job_event(job.id, me, f"Step {p.step}/{p.steps}: training loss={p.loss:.4f}",
                                type="metrics", data={"step": p.step, "total_steps": p.steps,
                                                      "train_loss": p.loss, "learning_rate": p.lr,
                                                      **extra})
        elif p.phase == "eval" and p.val_loss is not None:
            flags.last["valid_loss"] = p.val_loss
            store.add_job_event(job.id, me, f"Step {p.step}/{p.steps}: validation loss="
                                f"{p.val_loss:.4f}", type="metrics",
                                data={"step": p.step, "total_steps": p.steps, "valid_loss": p.val_loss,
                                      **{f"valid_{k}": v for k, v in extra.items()}})
        elif p.phase == "checkpoint":
            run_id = Path(p.message).parent.parent.name  # runs/<id>/checkpoints/last
            store.add_job_checkpoint(job.id, me, run_id=run_id, step=p.step, metrics=dict(flags.last),
                                     path=p.message)
        elif p.phase in ("build", "register") or (p.phase == "eval" and p.message):
            store.add_job_event(job.id, me, f"{p.phase}: {p.message}")

    def _check(self, job: JobRecord, flags: _Flags) -> None:
        """Read the job (and beat its heartbeat): a cancel, or a job no longer ours."""
        try:
            record = self.store.heartbeat_job(job.id, self.name)
        except Conflict:
            flags.lost = True
            return
        flags.cancel = flags.cancel or record.cancel_requested

    def _beat(self, job_id: str, flags: _Flags) -> None:
        while not flags.done.wait(self.heartbeat_s):
            try:
                record = self.store.heartbeat_job(job_id, self.name)
            except Conflict:
                flags.lost = True
                return
            except Exception:  # noqa: BLE001 - a database hiccup: the next beat retries
                log.warning("heartbeat of job %s failed", job_id, exc_info=True)
                continue
            flags.cancel = flags.cancel or record.cancel_requested

    # --- endings ----------------------------------------------------------------------------

    def _stopped(self, job: JobRecord, flags: _Flags) -> JobRecord | None:
        if flags.lost:
            return None
        if flags.cancel:
            return self._finish(job, "cancelled")
        self._release(job)
        return None

    def _release(self, job: JobRecord) -> None:
        try:
            self.store.release_job(job.id, self.name)
        except Conflict:
            pass

    def _finish(self, job: JobRecord, status: str, **kw: Any) -> JobRecord | None:
        try:
            return self.store.finish_job(job.id, self.name, status, **kw)
        except Conflict:
            return None  # taken over meanwhile: its new worker finishes it


def _watch_parent(pid: int, shutdown: threading.Event) -> None:
    """Shut down once process ``pid`` (the ``genloop serve`` that started this worker) is gone:
    a server killed by a signal runs no cleanup of its own."""
    while not shutdown.wait(0.5):
        if os.getppid() != pid:
            shutdown.set()


def run_worker(*, poll_s: float = 1.0, once: bool = False, stale_after_s: float = STALE_AFTER_S,
               parent_pid: int | None = None) -> int:
    """``genloop worker``: run jobs until SIGTERM or Ctrl-C (the job in hand goes back to the
    queue), or until process ``parent_pid`` ends; the number run."""
    worker = Worker(stale_after_s=stale_after_s)
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid, worker.shutdown), daemon=True).start()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: worker.shutdown.set())
    log.info("worker %s polling every %.1f s", worker.name, poll_s)
    try:
        return worker.run(poll_s=poll_s, once=once)
    finally:
        signal.signal(signal.SIGTERM, previous)
