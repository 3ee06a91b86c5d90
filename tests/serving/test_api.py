"""The API's behaviour through a real server: bounds, records, feedback, idempotency, metrics,
admission control, rate limits, disconnects; and failures injected into an in-process app."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from genloop.generation import service
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig

from .conftest import start_server


@pytest.fixture(scope="module")
def api(server, served_workspace):
    with server.client(served_workspace.key) as c:
        yield c


def complete(api, **kw):
    body = {"model": "tiny-text", "prompt": "The cat", "max_tokens": 6, "seed": 1, **kw}
    return api.post("/v1/completions", json=body)


# --- bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body,field", [
    ({"model": "tiny-text", "prompt": "x", "max_tokens": 4, "temperatur": 1}, "temperatur"),
    ({"model": "tiny-text", "prompt": "x", "max_tokens": 5000}, "max_tokens"),
    ({"model": "tiny-text", "prompt": "x", "n": 9}, "n"),
    ({"model": "tiny-text", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "tiny-text", "prompt": "x", "temperature": -1}, "temperature"),
    ({"model": "tiny-text", "prompt": "x" * 20_000}, "prompt"),
    ({"model": "tiny-text", "prompt": "x" * 100}, "prompt"),  # longer than the model's context
    ({"model": "bad name!", "prompt": "x"}, "model"),
    ({"prompt": "x"}, "model"),
])
def test_bad_requests_get_400_naming_the_field(api, body, field):
    r = api.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_bad_image_requests(api, served_workspace):
    base = {"model": served_workspace.image_model}
    for extra, field in [({"n": 17}, "n"), ({"size": "512x512"}, "size"), ({"steps": 0}, "steps"),
                         ({"prompt": "a giraffe"}, "prompt"), ({"class": 12}, "class"),
                         ({"quality": "hd"}, "quality")]:
        r = api.post("/v1/images/generations", json={**base, **extra})
        assert r.status_code == 400 and field in r.json()["error"]["message"], (extra, r.text)


def test_image_guidance_has_the_cores_name_on_the_wire(api, served_workspace):
    """``guidance_scale`` is the name on every face (``guidance``, its old HTTP name, still read)."""
    for key, value in (("guidance_scale", 3.5), ("guidance", 1.5)):
        r = api.post("/v1/images/generations", json={"model": served_workspace.image_model, "n": 1,
                                                     "seed": 1, key: value})
        assert r.status_code == 200, r.text
        gid = r.json()["data"][0]["generation_id"]
        assert api.get(f"/v1/generations/{gid}").json()["request"]["guidance_scale"] == value
    r = api.post("/v1/images/generations", json={"model": served_workspace.image_model,
                                                 "guidance_scale": 99})
    assert r.status_code == 400 and "guidance_scale" in r.json()["error"]["message"]


def test_oversized_and_malformed_bodies(api):
    r = api.post("/v1/completions", content=b"{" + b" " * (1 << 20) + b"}",
                 headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = api.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert api.get("/v1/nothing-here").status_code == 404
    assert api.get("/v1/models/nope").status_code == 404


# --- records, feedback, idempotency -------------------------------------------------------------


def test_generation_records_page_and_restore(api):
    ids = [complete(api, seed=s, prompt=f"Run {s}").json()["choices"][0]["generation_id"]
           for s in range(3)]
    page = api.get("/v1/generations", params={"limit": 2, "kind": "text"}).json()
    assert [g["id"] for g in page["data"]] == ids[::-1][:2] and page["has_more"]
    rest = api.get("/v1/generations", params={"limit": 2, "before": page["data"][-1]["id"]}).json()
    assert rest["data"][0]["id"] == ids[0]
    one = api.get(f"/v1/generations/{ids[1]}").json()
    assert one["request"]["prompt"] == "Run 1" and one["request"]["max_new_tokens"] == 6
    assert one["request"]["api"] == "completions" and one["seed"] == 1
    content = api.get(f"/v1/generations/{ids[1]}/content")
    assert content.text == one["output"] and content.headers["content-type"].startswith("text/plain")
    assert api.get("/v1/generations/ffffffff").status_code == 404


def test_feedback_rating_thumbs_and_preference(api):
    a, b = (complete(api, seed=s).json()["choices"][0]["generation_id"] for s in (10, 11))
    r = api.post(f"/v1/generations/{a}/feedback", json={"rating": 4, "comment": "nice"})
    assert r.status_code == 201 and r.json()["value"] == 4 and r.json()["kind"] == "rating"
    assert api.post(f"/v1/generations/{a}/feedback", json={"thumbs": "down"}).json()["value"] == -1
    p = api.post("/v1/preferences", json={"chosen": b, "rejected": a})
    assert p.status_code == 201 and p.json()["other_generation_id"] == a
    kinds = sorted(f["kind"] for f in api.get(f"/v1/generations/{a}").json()["feedback"])
    assert kinds == ["preference", "rating", "thumbs"]
    for bad in ({"rating": 6}, {"rating": 3, "thumbs": "up"}, {}, {"thumbs": "sideways"}):
        assert api.post(f"/v1/generations/{a}/feedback", json=bad).status_code == 400, bad
    assert api.post("/v1/generations/ffff/feedback", json={"rating": 1}).status_code == 404
    assert api.post("/v1/preferences", json={"chosen": a, "rejected": a}).status_code == 400


def test_idempotency_keys_replay_and_conflict(api):
    gid = complete(api, seed=20).json()["choices"][0]["generation_id"]
    h = {"Idempotency-Key": f"rate-{gid}"}
    first = api.post(f"/v1/generations/{gid}/feedback", json={"rating": 5}, headers=h)
    again = api.post(f"/v1/generations/{gid}/feedback", json={"rating": 5}, headers=h)
    assert again.json() == first.json() and again.headers.get("idempotent-replayed") == "true"
    other = api.post(f"/v1/generations/{gid}/feedback", json={"rating": 1}, headers=h)
    assert other.status_code == 409
    assert len(api.get(f"/v1/generations/{gid}").json()["feedback"]) == 1
    h = {"Idempotency-Key": "completion-once"}
    c1 = api.post("/v1/completions", json={"model": "tiny-text", "prompt": "A", "max_tokens": 5},
                  headers=h)
    c2 = api.post("/v1/completions", json={"model": "tiny-text", "prompt": "A", "max_tokens": 5},
                  headers=h)
    assert c1.json() == c2.json()  # unseeded, yet the same: replayed, not generated again
    assert c2.headers.get("idempotent-replayed") == "true"


def test_metrics_are_prometheus_text(api):
    complete(api)
    text = api.get("/metrics").text
    assert 'genloop_generated_tokens_total{model="tiny-text@1"}' in text
    assert "genloop_time_to_first_token_seconds_bucket" in text
    assert 'genloop_http_requests_total{method="POST",route="/v1/completions",status="200"}' in text


# --- load: admission, rate limit, disconnect ------------------------------------------------------


def stream_lines(client, body):
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        for line in r.iter_lines():
            yield r, line


def test_full_queue_gets_503_with_retry_after(served_workspace):
    srv = start_server(served_workspace, "--max-batch", "1", "--queue", "0")
    try:
        with srv.client(served_workspace.key) as c, srv.client(served_workspace.key) as c2:
            # greedy: the same long text every run (a sampled one might end early and free the slot)
            body = {"model": "tiny-text", "prompt": "The", "max_tokens": 2000, "temperature": 0}
            lines = stream_lines(c, body)
            r, _ = next(lines)
            assert r.status_code == 200
            busy = c2.post("/v1/completions", json={**body, "max_tokens": 2})
            assert busy.status_code == 503, busy.text
            assert int(busy.headers["retry-after"]) >= 1
            assert busy.json()["error"]["type"] == "overloaded_error"
            still = sum(line.startswith("data: {") for _, line in itertools.islice(lines, 100))
            assert still > 10, "the first stream ended: the test did not hold the only slot"
    finally:
        srv.stop()


def test_rate_limit_gets_429_with_retry_after(served_workspace):
    srv = start_server(served_workspace, "--rate-limit", "6")  # bursts of 5
    try:
        with srv.client(served_workspace.key) as c:
            codes = [c.get("/v1/models").status_code for _ in range(8)]
            assert codes[:5] == [200] * 5 and 429 in codes[5:]
            r = c.get("/v1/models")
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["type"] == "rate_limit_error"
    finally:
        srv.stop()


def metric(client, name):
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_that_disconnects_stops_its_generation(server, served_workspace, api):
    body = {"model": "tiny-text", "prompt": "The", "max_tokens": 2000, "temperature": 1.0}
    with server.client(served_workspace.key) as c:
        seen = 0
        for _r, line in stream_lines(c, body):
            seen += line.startswith("data:")
            if seen == 5:
                break  # leaves the with-block: the connection is closed
    deadline = time.monotonic() + 5
    while metric(api, 'genloop_running_sequences{model="tiny-text@1"}') > 0:
        assert time.monotonic() < deadline, "the generation went on after the client left"
        time.sleep(0.05)
    tokens = metric(api, 'genloop_generated_tokens_total{model="tiny-text@1"}')
    time.sleep(0.5)
    assert metric(api, 'genloop_generated_tokens_total{model="tiny-text@1"}') == tokens


# --- failures injected in-process -----------------------------------------------------------------


@pytest.fixture
def inprocess(served_workspace, monkeypatch):
    monkeypatch.setenv("GENLOOP_HOME", str(served_workspace.home))
    monkeypatch.delenv("GENLOOP_DB_URL", raising=False)
    service._CACHE.clear()
    # failures are injected into the in-process batcher
    app = create_app(ServeConfig(auth=False, keepalive_s=0.05, decode="thread"))
    with TestClient(app) as client:
        yield client
    service._CACHE.clear()


def test_a_failure_mid_stream_sends_an_error_event(inprocess, monkeypatch):
    from genloop.models import gpt

    real = gpt.slot_decoder
    calls = {"n": 0}

    def failing(model, slots):
        decoder = real(model, slots)
        step = decoder.step

        def flaky(slots_, tokens):
            calls["n"] += 1
            if calls["n"] == 3:
                time.sleep(0.2)  # long enough for a keep-alive comment
                raise RuntimeError("injected failure")
            return step(slots_, tokens)

        decoder.step = flaky
        return decoder

    batcher = service.load("tiny-text").batcher()
    monkeypatch.setattr(batcher, "family", dataclasses.replace(batcher.family, slot_decoder=failing))
    body = {"model": "tiny-text", "prompt": "The", "max_tokens": 50, "temperature": 0, "stream": True}
    with inprocess.stream("POST", "/v1/completions", json=body) as r:
        lines = [line for line in r.iter_lines() if line]
    events = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    assert "error" in events[-1] and "injected failure" in events[-1]["error"]["message"]
    assert "data: [DONE]" not in lines
    assert ": keep-alive" in lines
    # the loop recovers: the next request works
    ok = inprocess.post("/v1/completions", json={**body, "stream": False, "max_tokens": 3})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


def test_concurrent_streams_share_decoding_steps(served_workspace):
    """Eight streams at once take far fewer decoding steps than eight one after another."""
    srv = start_server(served_workspace)
    try:
        results = []

        def one(i):
            with srv.client(served_workspace.key) as c:
                body = {"model": "tiny-text", "prompt": f"Go {i}", "max_tokens": 40,
                        "temperature": 1.0, "seed": i}
                text = "".join(json.loads(line[6:])["choices"][0]["text"]
                               for _, line in stream_lines(c, body)
                               if line.startswith("data: {"))
                results.append(text)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        with srv.client(served_workspace.key) as c:
            text = c.get("/metrics").text
        count = next(float(x.split()[-1]) for x in text.splitlines()
                     if x.startswith("genloop_batch_size_count"))
        total = next(float(x.split()[-1]) for x in text.splitlines()
                     if x.startswith("genloop_batch_size_sum"))
        assert len(results) == 8
        assert total / count > 2, f"mean batch {total / count:.2f}: requests did not share steps"
    finally:
        srv.stop()


def test_auth_off_only_on_loopback_and_said_loudly(served_workspace, tmp_path):
    from ..conftest import run_cli  # noqa: TID252

    refused = run_cli(["serve", "--no-auth", "--host", "0.0.0.0"], served_workspace.home, timeout=60)
    assert refused.returncode == 2 and "loopback" in refused.stderr
    srv = start_server(served_workspace, "--no-auth", log=tmp_path / "noauth.log")
    try:
        with srv.client(None) as c:
            assert c.get("/health").json()["auth"] is False
            assert c.get("/v1/models").status_code == 200
    finally:
        srv.stop()
    assert "AUTH IS OFF" in (tmp_path / "noauth.log").read_text()


def test_several_models_behind_one_server_with_lru_unloading(served_workspace, tmp_path):
    """With room for one loaded model, alternating text and image requests load, unload and load
    again; every answer is right, and the metrics say one model is loaded."""
    srv = start_server(served_workspace, "--models-loaded", "1", log=tmp_path / "lru.log")
    try:
        with srv.client(served_workspace.key) as c:
            for _ in range(2):
                text = c.post("/v1/completions", json={"model": "tiny-text@1", "prompt": "A",
                                                       "max_tokens": 3, "seed": 1})
                image = c.post("/v1/images/generations", json={
                    "model": served_workspace.image_model, "n": 1, "response_format": "b64_json"})
                assert text.status_code == 200 and image.status_code == 200
            assert text.json()["choices"][0]["text"]
            assert metric(c, "genloop_loaded_models") == 1
    finally:
        srv.stop()
