"""``/v1/files`` and ``/v1/fine_tuning/jobs`` in-process over a workspace with a tiny text model:
every bad input is a 400 that names the field (and the line) with nothing written; supervised and
DPO jobs run by a worker register ``name@N`` that answers at once; a cancel stops a running job
within one evaluation interval; a job straight from a model's feedback (genloop extra)."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import genloop
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import Store
from genloop.training.jobs import Worker

from ..conftest import _OBJECTS, _SUBJECTS, _VERBS, tiny_recipe_dict, wait_until, write_corpus  # noqa: TID252

pytestmark = pytest.mark.usefixtures("one_thread")
LIMIT = 4096  # bytes of an upload, in these tests


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workspace with `poet@1` (a tiny gpt, context 32) and `digits@1` (registered as a gan)."""
    root = tmp_path_factory.mktemp("ft")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_HOME", str(root / "home"))
        mp.delenv("GENLOOP_DB_URL", raising=False)
        genloop.train(tiny_recipe_dict(write_corpus(root / "corpus.txt"), name="poet", steps=30))
        staged = root / "home" / "staging" / "digits"
        staged.mkdir(parents=True)
        (staged / "config.json").write_text("{}")
        store = Store()
        store.register_model("digits", staged, family="gan")
        store.close()
        yield root / "home"


@pytest.fixture
def client(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("GENLOOP_HOME", str(home))
    monkeypatch.delenv("GENLOOP_DB_URL", raising=False)
    config = ServeConfig(auth=False, max_file_bytes=LIMIT, max_file_lines=50)
    with TestClient(create_app(config)) as c:
        yield c


def sentences(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(rng.choice(_SUBJECTS), f" {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}.") for _ in range(n)]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


SFT = jsonl([{"prompt": p, "completion": c} for p, c in sentences(30)])
DPO = jsonl([{"prompt": p, "chosen": c, "rejected": c[::-1]} for p, c in sentences(30, 1)])


def upload(client: TestClient, data: bytes, purpose: str = "fine-tune", name: str = "f.jsonl"):
    return client.post("/v1/files", files={"file": (name, data)}, data={"purpose": purpose})


def written(home: Path) -> dict[str, Any]:
    """What a refused request must not have added: files, their rows, records, jobs."""
    store = Store()
    try:
        return {"files": sorted(p.name for p in (home / "files").glob("*")),
                "records": sorted(p.name for p in (home / "records").glob("*")),
                "file_rows": [f.id for f in store.list_files()],
                "jobs": [j.id for j in store.list_jobs(limit=1000)]}
    finally:
        store.close()


def refused(client: TestClient, home: Path, call, param: str, *words: str) -> None:  # noqa: ANN001
    before = written(home)
    r = call()
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["message"].startswith(f"{param}: "), error
    for w in words:
        assert w in error["message"], error["message"]
    assert written(home) == before


@pytest.mark.parametrize(("data", "purpose", "param", "words"), [
    (b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion"\n', "fine-tune", "file",
     ("not JSON Lines", "line 2")),
    (b"\n\n", "fine-tune", "file", ("empty",)),
    (b'["a list"]\n', "fine-tune", "file", ("line 1", "not a JSON object")),
    (b'{"prompt": "a", "completion": "' + b"x" * LIMIT + b'"}\n', "fine-tune", "file",
     ("larger than the limit", str(LIMIT))),
    (b'{"a": 1}\n' * 51, "fine-tune", "file", ("more than the limit of 50 lines",)),
    (SFT, "batch", "purpose", ("'batch'", "fine-tune")),
], ids=["not-jsonl", "empty", "not-objects", "too-big", "too-many-lines", "wrong-purpose"])
def test_a_bad_upload_is_a_400_naming_it_and_nothing_is_written(client, home, data, purpose,
                                                                 param, words):
    refused(client, home, lambda: upload(client, data, purpose), param, *words)


def test_an_oversized_upload_is_refused_while_it_streams(client, home):
    chunks = iter([b"x" * 1024] * (LIMIT // 1024 + 80))  # no Content-Length: chunked
    refused(client, home, lambda: client.post(
        "/v1/files", content=chunks,
        headers={"content-type": "multipart/form-data; boundary=b"}), "file", "larger than the limit")


def test_a_good_upload_is_listed_read_and_deleted(client, home):
    r = upload(client, SFT, name="poems.jsonl")
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["object"] == "file" and f["purpose"] == "fine-tune" and f["id"].startswith("file-")
    assert f["bytes"] == len(SFT) and f["lines"] == 30 and f["filename"] == "poems.jsonl"
    assert f["id"] in [x["id"] for x in client.get("/v1/files").json()["data"]]
    assert client.get(f"/v1/files/{f['id']}").json() == f
    assert client.get(f"/v1/files/{f['id']}/content").content == SFT
    assert client.delete(f"/v1/files/{f['id']}").json() == {"id": f["id"], "object": "file",
                                                            "deleted": True}
    assert client.get(f"/v1/files/{f['id']}").status_code == 404


def job_body(file_id: str, method: str = "supervised", **hp: Any) -> dict[str, Any]:
    return {"model": "poet", "training_file": file_id,
            "method": {"type": method, method: {"hyperparameters": hp}}}


def test_a_bad_job_is_a_400_naming_the_line_and_field_and_nothing_is_written(client, home):
    def file_of(rows: list[dict[str, Any]]) -> str:
        return upload(client, jsonl(rows)).json()["id"]

    ok = {"prompt": "The cat", "completion": " sings."}
    missing = file_of([ok, ok, {"prompt": "The dog"}])
    extra = file_of([ok, {**ok, "foo": 1}])
    same = file_of([{"prompt": "A", "chosen": " b.", "rejected": " c."},
                    {"prompt": "A", "chosen": " b.", "rejected": " b."}])
    long = file_of([ok, ok, ok, {"prompt": "The cat " * 10, "completion": " x."}])
    good = file_of([ok, ok])
    post = lambda body: lambda: client.post("/v1/fine_tuning/jobs", json=body)  # noqa: E731
    cases = [
        (job_body(missing), "training_file", (missing, "line 3", "'completion' is missing")),
        (job_body(extra), "training_file", ("line 2", "extra field 'foo'")),
        (job_body(same, "dpo"), "training_file", ("line 2", "chosen equals rejected")),
        (job_body(long), "training_file", ("line 4", "prompt is 80 tokens", "context is 32")),
        (job_body("file-0000"), "training_file", ("no file with id 'file-0000'",)),
        ({**job_body(good), "model": "nope"}, "model", ("'nope' not found", "poet")),
        ({**job_body(good, "dpo"), "model": "digits"}, "method.type",
         ("digits@1 is a gan", "cannot take objective 'dpo'")),
        ({"model": "poet"}, "training_file", ("give a training_file",)),
        ({**job_body(good), "from_feedback": {"objective": "sft"}}, "training_file", ("exactly one",)),
        ({**job_body(good), "suffix": "Not A Name"}, "suffix", ("invalid",)),
        (job_body(good, beta=0.5), "method.supervised.hyperparameters.beta", ("preference",)),
    ]
    for body, param, words in cases:
        refused(client, home, post(body), param, *words)
    r = client.post("/v1/fine_tuning/jobs", json={"model": "poet", "training_file": good,
                                                  "method": {"type": "reinforcement"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "method.type", r.text


def test_too_little_feedback_says_how_much_more_is_needed(client, home):
    refused(client, home, lambda: client.post("/v1/fine_tuning/jobs", json={
        "model": "poet", "from_feedback": {"objective": "dpo"}}), "from_feedback",
        "0 usable preference pairs", "8 more needed (at least 8)")


def run_one(home: Path) -> None:
    worker = Worker(Store(), stale_after_s=30)
    assert worker.run(once=True) == 1
    worker.store.close()


def test_supervised_and_dpo_jobs_register_versions_that_answer_at_once(client, home):
    for method, data in (("supervised", SFT), ("dpo", DPO)):
        file_id = upload(client, data).json()["id"]
        r = client.post("/v1/fine_tuning/jobs", json=job_body(file_id, method, steps=8,
                                                              eval_every=4, checkpoint_every=4))
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["object"] == "fine_tuning.job" and job["status"] == "queued"
        assert job["model"] == "poet@1" or job["model"].startswith("poet@")
        assert job["method"]["type"] == method and job["training_file"] == file_id
        run_one(home)
        done = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
        assert done["status"] == "succeeded", done
        assert done["fine_tuned_model"].startswith("poet@")
        # tokens for supervised tuning; preference batches are counted in pairs, not tokens
        assert done["trained_tokens"] > 0 if method == "supervised" else done["trained_tokens"] is None
        assert done["finished_at"] >= done["created_at"] and done["error"] is None
        events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 200}).json()
        kinds = {e["type"] for e in events["data"]}
        assert kinds == {"message", "metrics"}
        assert events["data"][0]["message"] == "The job has successfully completed"
        steps = [e["data"]["step"] for e in events["data"] if e["type"] == "metrics"]
        assert max(steps) == 8
        checkpoints = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
        assert [c["step_number"] for c in checkpoints] == [8, 4]
        assert checkpoints[0]["fine_tuned_model_checkpoint"] == f"{done['run_id']}:step-8"
        card = client.get(f"/v1/models/{done['fine_tuned_model']}").json()
        assert card["id"] == done["fine_tuned_model"]
        answer = client.post("/v1/completions", json={"model": done["fine_tuned_model"],
                                                      "prompt": "The cat", "max_tokens": 5, "seed": 1})
        assert answer.status_code == 200 and answer.json()["model"] == done["fine_tuned_model"]
    listed = client.get("/v1/fine_tuning/jobs", params={"limit": 1}).json()
    assert listed["has_more"] and len(listed["data"]) == 1


def test_a_cancelled_job_stops_within_one_evaluation_interval(client, home):
    file_id = upload(client, SFT).json()["id"]
    job = client.post("/v1/fine_tuning/jobs", json=job_body(
        file_id, steps=900, eval_every=5, checkpoint_every=5)).json()  # <1000: no torch.compile
    worker = Worker(Store(), stale_after_s=30)
    thread = threading.Thread(target=worker.run, kwargs={"once": True})
    thread.start()
    try:
        def latest_step() -> int:
            events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()["data"]
            return max([e["data"]["step"] for e in events if e["type"] == "metrics"], default=0)

        wait_until(lambda: latest_step() >= 3, 60)
        r = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "running", r.text
        asked_at = latest_step()
        thread.join(60)
        assert not thread.is_alive()
    finally:
        worker.shutdown.set()
        thread.join(60)
    done = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert done["status"] == "cancelled" and done["fine_tuned_model"] is None
    run = Store().get_run(done["run_id"])
    assert run.status == "stopped"
    assert run.step <= asked_at + 5, (run.step, asked_at)  # within one evaluation interval
    r = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert r.status_code == 400 and "already cancelled" in r.json()["error"]["message"]
