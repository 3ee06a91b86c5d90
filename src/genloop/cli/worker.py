"""``genloop worker``: claim fine-tuning jobs from the workspace's store and run them, one at a
time (``training/jobs.py``). Start as many as the machine has room for: the store hands each job
to exactly one."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from genloop.cli.console import command_app, err, faced

app = command_app()


@app.command(epilog="Examples:\n\n"
             "    genloop worker                  # run jobs as they come, until Ctrl-C\n\n"
             "    genloop worker --once           # run one queued job (if any), then exit\n\n"
             "    genloop serve --worker          # the server with one worker beside it")
@faced
def worker(
    poll: Annotated[float, typer.Option(min=0.05, help="seconds between looks at an empty queue")] = 1.0,
    once: Annotated[bool, typer.Option(help="run at most one job, then exit")] = False,
    stale: Annotated[float, typer.Option(
        min=1.0, help="seconds without a heartbeat after which a running job's worker is taken "
        "for dead and the job resumed by another")] = 60.0,
    parent: Annotated[int | None, typer.Option(
        hidden=True, help="stop when this process ends (`genloop serve --worker`)")] = None,
) -> None:
    """Run the fine-tuning jobs of POST /v1/fine_tuning/jobs; SIGTERM or Ctrl-C puts the job in
    hand back in the queue (it resumes from its last checkpoint)."""
    from genloop.training.jobs import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    done = run_worker(poll_s=poll, once=once, stale_after_s=stale, parent_pid=parent)
    err.print(f"worker: {done} job{'s' if done != 1 else ''} run")
