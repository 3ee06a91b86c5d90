"""The official ``openai`` client against a real ``genloop serve --worker``: upload a file, create
supervised and DPO jobs, retrieve them, list their events, cancel one, and complete with the
tuned model as soon as ``models.list`` shows it. Then the server (and its worker) is restarted
mid-job: the job is still there and finishes, resumed from its checkpoint."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import pytest

from ..conftest import _OBJECTS, _SUBJECTS, _VERBS, Server, wait_until  # noqa: TID252
from .conftest import Workspace, make_workspace, start_server

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("oft"), image=False)


@pytest.fixture(scope="module")
def server(ws: Workspace) -> Iterator[Server]:
    srv = start_server(ws, "--worker", "--rate-limit", "0")
    yield srv
    srv.stop()


def client_of(server: Server, ws: Workspace):  # noqa: ANN201
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=ws.key, max_retries=0)


def records(kind: str, n: int = 40) -> bytes:
    rng = random.Random(kind)
    rows = []
    for _ in range(n):
        prompt, good = rng.choice(_SUBJECTS), f" {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
        if kind == "supervised":  # OpenAI's chat form
            rows.append({"messages": [{"role": "user", "content": prompt},
                                      {"role": "assistant", "content": good}]})
        else:  # OpenAI's preference form
            rows.append({"input": {"messages": [{"role": "user", "content": prompt}]},
                         "preferred_output": [{"role": "assistant", "content": good}],
                         "non_preferred_output": [{"role": "assistant", "content": good[::-1]}]})
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def finished(client, job_id: str, timeout: float = 180):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in ("succeeded", "failed",
                                                                            "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


@pytest.mark.parametrize("method", ["supervised", "dpo"])
def test_files_create_then_a_job_whose_model_answers(server, ws, method):
    client = client_of(server, ws)
    f = client.files.create(file=(f"{method}.jsonl", records(method)), purpose="fine-tune")
    assert f.id.startswith("file-") and f.purpose == "fine-tune" and f.bytes > 0
    job = client.fine_tuning.jobs.create(
        model=f"{ws.text_model}@1", training_file=f.id, seed=5,
        method={"type": method, method: {"hyperparameters": {
            "n_epochs": 1, "batch_size": 4, **({"beta": 0.2} if method == "dpo" else {})}}})
    assert job.object == "fine_tuning.job" and job.status == "queued"
    assert job.model == f"{ws.text_model}@1" and job.training_file == f.id
    done = finished(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith(f"{ws.text_model}@")
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert events[0].message == "The job has successfully completed"
    assert any(e.type == "metrics" and "train_loss" in (e.data or {}) for e in events)
    assert {m.id for m in client.models.list()} >= {done.fine_tuned_model}
    answer = client.completions.create(model=done.fine_tuned_model, prompt="The cat", max_tokens=8,
                                       seed=1)
    assert answer.model == done.fine_tuned_model and answer.choices[0].text
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=50)]


def test_cancel_stops_a_running_job(server, ws):
    client = client_of(server, ws)
    f = client.files.create(file=("long.jsonl", records("supervised")), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=ws.text_model, training_file=f.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "steps": 900, "eval_every": 5, "checkpoint_every": 5}}})
    wait_until(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running", 120)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.id == job.id and cancelled.status in ("running", "cancelled")
    done = finished(client, job.id, timeout=60)
    assert done.status == "cancelled" and done.fine_tuned_model is None
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(job.id)


@pytest.mark.slow
def test_a_server_restart_loses_no_job(ws, server):
    client = client_of(server, ws)
    f = client.files.create(file=("restart.jsonl", records("supervised")), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=ws.text_model, training_file=f.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "steps": 300, "eval_every": 10, "checkpoint_every": 10}}})
    wait_until(lambda: list(client.fine_tuning.jobs.checkpoints.list(job.id)), 120)
    server.stop()  # the worker beside it stops too, putting the job back in the queue
    again = start_server(ws, "--worker", "--rate-limit", "0")
    try:
        client = client_of(again, ws)
        back = client.fine_tuning.jobs.retrieve(job.id)
        assert back.status in ("queued", "running", "succeeded"), back
        done = finished(client, job.id)
        assert done.status == "succeeded", done.error
        assert done.run_id == back.run_id  # the same run, resumed from its checkpoint
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=500)]
        assert any("back in the queue" in m for m in messages), messages
        assert sum(m.startswith("Fine-tuning job started") for m in messages) == 2
    finally:
        again.stop()
