"""Issue 10's error defects, each reproduced: version numbers that overflowed the database, 500s
missing from /metrics, a chunked body over the limit, malformed validation messages, ids that
were the seed, and the smaller ones (HEAD /health, Basic re-prompt, ``@01``, booleans taken as
numbers, an empty prompt list, choice seeds past 2^63 − 1).

Most need no model: an in-process app over an empty in-memory store answers them before any
model is loaded. The ids need generations, so they use the real server of tests/serving/conftest.py.
"""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from genloop.errors import InvalidInput, NotFound
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import Store, parse_model_ref

TOP = 2**63 - 1


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A workspace with no models (errors only; nothing generates)."""
    monkeypatch.setenv("GENLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENLOOP_DB_URL", raising=False)
    s = Store()
    yield s
    s.close()


@pytest.fixture
def empty(store):
    """An app with auth off over the empty workspace."""
    app = create_app(ServeConfig(auth=False), store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def keyed(store):
    """An app with auth on and one key; yields (client, key)."""
    _, secret = store.create_key("tests")
    app = create_app(ServeConfig(), store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, secret


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"}, r.text
    return body["error"]


# --- 1. any version number is a 400 or a 404, never a 500 ---------------------------------------

HUGE_REFS = ["python-docs@99999999999999999999", "python-docs@9223372036854775808",
             "python-docs@9223372036854775807", "python-docs@2147483648", "python-docs@2147483647"]


def _ask(client, route: str, ref: str):
    if route == "completions":
        return client.post("/v1/completions", json={"model": ref, "prompt": "x"})
    if route == "chat":
        return client.post("/v1/chat/completions",
                           json={"model": ref, "messages": [{"role": "user", "content": "x"}]})
    if route == "images":
        return client.post("/v1/images/generations", json={"model": ref})
    if route == "generations":
        return client.get("/v1/generations", params={"model": ref})
    return client.get(f"/v1/models/{ref}")


@pytest.mark.parametrize("route", ["completions", "chat", "images", "model", "generations"])
@pytest.mark.parametrize("ref", HUGE_REFS)
def test_any_version_number_is_a_400_or_404(empty, route, ref):
    r = _ask(empty, route, ref)
    if route == "generations" and r.status_code == 200:  # a filter: no record matches
        assert r.json()["data"] == [] and int(ref.split("@")[1]) < 2**31
        return
    assert r.status_code in (400, 404), r.text
    assert "python-docs@" in error_of(r)["message"]


def test_the_store_refuses_versions_no_row_can_hold(store):
    with pytest.raises(InvalidInput, match="at most"):
        store.resolve("python-docs@99999999999999999999")
    with pytest.raises(InvalidInput, match="at most"):
        parse_model_ref("python-docs@2147483648")
    with pytest.raises(NotFound):
        store.resolve("python-docs@2147483647")


# --- 2. a 500 is counted in /metrics like every other status ----------------------------------


def test_a_500_is_counted_in_metrics(empty, monkeypatch):
    state = empty.app.state.genloop

    def broken():
        raise RuntimeError("injected failure")

    monkeypatch.setattr(state.store, "list_models", broken)
    r = empty.get("/v1/models")
    assert r.status_code == 500
    assert error_of(r)["type"] == "server_error" and "RuntimeError" in error_of(r)["message"]
    metrics = empty.get("/metrics").text
    assert 'genloop_http_requests_total{method="GET",route="/v1/models",status="500"} 1.0' in metrics


def test_a_500_is_not_raised_past_the_app(store, monkeypatch):
    """The catch-all answers the 500 itself: nothing escapes to the server (which would log a
    second traceback, and in tests re-raise)."""
    app = create_app(ServeConfig(auth=False), store=store)
    monkeypatch.setattr(app.state.genloop.store, "list_models",
                        lambda: (_ for _ in ()).throw(RuntimeError("injected")))
    with TestClient(app) as client:  # raise_server_exceptions=True
        assert client.get("/v1/models").status_code == 500


# --- 5. a body over the limit is a 413 however it is sent ----------------------------------------


def test_a_chunked_oversized_body_is_413(empty):
    def chunks():
        yield b'{"model": "x", "prompt": "'
        for _ in range(64):
            yield b"x" * (1 << 14)  # 1 MiB of prompt in all
        yield b'"}'

    r = empty.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413, r.text
    assert "larger than the limit" in error_of(r)["message"]
    # under the limit, chunked, the body is read as usual
    r = empty.post("/v1/completions", content=iter([b'{"model": "x",', b' "prompt": "y"}']),
                   headers={"content-type": "application/json"})
    assert r.status_code == 404, r.text  # parsed: model x does not exist


# --- 8. validation errors name the field, in words --------------------------------------------


@pytest.mark.parametrize("body,param", [
    ({"prompt": 5}, "prompt"),
    ({"prompt": {"a": 1}}, "prompt"),
    ({"prompt": "\ud800"}, "prompt"),
    ({"prompt": ["ok", "\ud800"]}, "prompt.1"),
    ({"prompt": "x", "stop": 5}, "stop"),
    ({"prompt": "x", "stop": "\udfff"}, "stop"),
    ({"prompt": "x", "stop": [5]}, "stop.0"),
    ({"prompt": "x", "stop": ["a"] * 5}, "stop"),
    ({"prompt": "x", "temperatur": 1}, "temperatur"),
])
def test_a_bad_field_is_named_in_words(empty, body, param):
    raw = json.dumps({"model": "x", **body})  # json.dumps escapes lone surrogates as \ud800
    r = empty.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert error["param"] == param, error
    assert error["message"].startswith(f"{param}: "), error
    assert "function-" not in error["message"] and "[" not in error["message"].split(":")[0], error


def test_a_wrong_type_says_what_is_expected(empty):
    error = error_of(empty.post("/v1/completions", json={"model": "x", "prompt": 5}))
    assert error["message"] == ("prompt: expected a string or a list of strings or a list of "
                                "integers or a list of lists of integers"), error
    raw = json.dumps({"model": "x", "prompt": "\ud800"})
    error = error_of(empty.post("/v1/completions", content=raw,
                                headers={"content-type": "application/json"}))
    assert error["message"] == "prompt: not valid Unicode text (a lone surrogate)", error


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'"text"', b"null"])
def test_whole_body_errors_have_no_param(empty, content):
    r = empty.post("/v1/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert error["param"] is None, error
    assert error["message"].startswith("body: "), error


def test_a_body_that_is_not_json_says_so(empty):
    error = error_of(empty.post("/v1/completions", content=b"{not json",
                                headers={"content-type": "application/json"}))
    assert "not valid JSON" in error["message"] and error["param"] is None, error


# --- 9. every response has its own id; the seed stays in the record ----------------------------


@pytest.fixture(scope="module")
def api(server, served_workspace):
    with server.client(served_workspace.key) as c:
        yield c


def test_response_ids_are_unique_and_the_seed_is_recorded(api, served_workspace):
    model = served_workspace.text_model
    ids, gids = set(), []
    for route, body, prefix in [
        ("/v1/completions", {"prompt": "The"}, "cmpl-"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}, "chatcmpl-"),
    ]:
        for _ in range(2):
            r = api.post(route, json={"model": model, "max_tokens": 2, "seed": 42, **body})
            assert r.status_code == 200, r.text
            rid = r.json()["id"]
            assert rid.startswith(prefix) and rid != prefix + format(42, "x"), rid
            ids.add(rid)
            gids.append(r.json()["choices"][0]["generation_id"])
    assert len(ids) == 4
    assert all(api.get(f"/v1/generations/{g}").json()["seed"] == 42 for g in gids)
    # a stream's chunks share their response's id, and it is new too
    with api.stream("POST", "/v1/completions", json={"model": model, "prompt": "The", "max_tokens": 3,
                                                      "seed": 42, "stream": True}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"] not in ids


# --- 14. the smaller ones -------------------------------------------------------------------------


def test_head_health(keyed):
    client, _ = keyed
    r = client.head("/health")
    assert r.status_code == 200 and r.content == b""
    assert client.get("/health").json()["status"] == "ok"


def test_a_wrong_basic_key_lets_the_browser_ask_again(keyed):
    client, key = keyed
    basic = "Basic " + base64.b64encode(b"me:gl_wrong").decode()
    for authorization, scheme in [(None, "Basic"), (basic, "Basic"), ("Bearer gl_wrong", "Bearer"),
                                  ("Basic %%%", "Basic")]:
        headers = {"Authorization": authorization} if authorization else {}
        r = client.get("/v1/models", headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].split()[0] == scheme, (authorization, r.headers)
    good = "Basic " + base64.b64encode(f"me:{key}".encode()).decode()
    assert client.get("/v1/models", headers={"Authorization": good}).status_code == 200


@pytest.mark.parametrize("ref", ["python-docs@01", "python-docs@00", "python-docs@0"])
def test_a_version_is_written_one_way(empty, ref):
    with pytest.raises(InvalidInput, match=ref.split("@")[1]):
        parse_model_ref(ref)
    r = empty.get(f"/v1/models/{ref}")
    assert r.status_code == 400, r.text
    assert ref in error_of(r)["message"]


@pytest.mark.parametrize("route,body,param", [
    ("completions", {"prompt": "x", "seed": True}, "seed"),
    ("completions", {"prompt": "x", "n": True}, "n"),
    ("completions", {"prompt": "x", "max_tokens": True}, "max_tokens"),
    ("completions", {"prompt": "x", "temperature": True}, "temperature"),
    ("completions", {"prompt": "x", "seed": "42"}, "seed"),
    ("chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": True}, "n"),
    ("images/generations", {"class": True}, "class"),
    ("images/generations", {"n": True}, "n"),
    ("images/generations", {"seed": False}, "seed"),
])
def test_booleans_are_not_numbers(empty, route, body, param):
    r = empty.post(f"/v1/{route}", json={"model": "x", **body})
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param, r.text


def test_numbers_are_still_numbers(empty):
    """Integers where a float is asked still pass (1 for temperature), as OpenAI's clients send."""
    for body in ({"prompt": "x", "temperature": 1, "top_p": 1, "seed": 3, "n": 2},
                 {"prompt": "x", "seed": TOP}):
        r = empty.post("/v1/completions", json={"model": "x", **body})
        assert r.status_code == 404, r.text  # valid: model x does not exist
    r = empty.post("/v1/images/generations", json={"model": "x", "class": 3, "guidance_scale": 2})
    assert r.status_code == 404, r.text


def test_an_empty_prompt_list_is_refused(empty):
    r = empty.post("/v1/completions", json={"model": "x", "prompt": []})
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == "prompt"


@pytest.mark.parametrize("route,body,choices", [
    ("completions", {"prompt": "x", "n": 3}, 3),
    ("completions", {"prompt": ["a", "b"], "n": 2}, 4),
    ("chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 3}, 3),
    ("images/generations", {"n": 2}, 2),
])
def test_choice_seeds_never_pass_2_63(empty, route, body, choices):
    """Choice i is seeded seed + i; a request whose last choice would pass 2^63 − 1 is refused,
    not wrapped round to 0, 1, ...; the highest seed that fits is accepted."""
    r = empty.post(f"/v1/{route}", json={"model": "x", **body, "seed": TOP - choices + 2})
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert error["param"] == "seed" and str(TOP - choices + 1) in error["message"], error
    r = empty.post(f"/v1/{route}", json={"model": "x", **body, "seed": TOP - choices + 1})
    assert r.status_code == 404, r.text  # valid: model x does not exist
