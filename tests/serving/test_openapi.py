"""``/openapi.json`` describes every answer: each success names its schema (a component, or the
media type of a text, PNG or event-stream body with its schema), errors are the error object,
and what the routes really send is exactly those models (checked on live answers, streams too)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from genloop.generation import service
from genloop.serving import schemas
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import Store

# documented with their own schema
NOT_JSON = {"text/event-stream", "text/plain", "image/png", "application/jsonl"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app = create_app(ServeConfig(auth=False), store=Store("sqlite://"))
    with TestClient(app) as client:
        r = client.get("/openapi.json")
    assert r.status_code == 200, r.text
    return r.json()


def operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{method.upper()} {path}", op) for path, item in document["paths"].items()
            for method, op in item.items()]


def test_every_success_names_its_schema(document):
    components = document["components"]["schemas"]
    ops = operations(document)
    assert len(ops) >= 12, [label for label, _ in ops]
    for label, op in ops:
        successes = {status: r for status, r in op["responses"].items() if status.startswith("2")}
        assert successes, f"{label}: no 2xx response"
        for status, response in successes.items():
            content = response.get("content")
            assert content, f"{label} {status}: no content"
            for media_type, entry in content.items():
                schema = entry.get("schema")
                assert schema, f"{label} {status} {media_type}: no schema"
                if media_type == "application/json":
                    ref = schema.get("$ref", "")
                    assert ref.startswith("#/components/schemas/"), f"{label}: {schema}"
                    assert components[ref.rsplit("/", 1)[1]].get("properties"), f"{label}: {ref}"
                else:
                    assert media_type in NOT_JSON, f"{label}: undocumented media type {media_type}"
                    assert schema.get("type"), f"{label} {media_type}: {schema}"


def test_errors_are_the_error_object_and_never_fastapis_422(document):
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for label, op in operations(document):
        assert "422" not in op["responses"], label  # validation errors are 400s (docs/api.md)
        assert "default" in op["responses"], label
        for status, response in op["responses"].items():
            if not status.startswith("2"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (label, status)
        for status in ("429", "503"):
            if status in op["responses"]:
                assert "Retry-After" in op["responses"][status]["headers"], (label, status)


@pytest.mark.parametrize("path,model,chunk", [
    ("/v1/completions", "Completion", schemas.CompletionChunk),
    ("/v1/chat/completions", "ChatCompletion", schemas.ChatCompletionChunk),
])
def test_text_routes_document_json_and_the_event_stream(document, path, model, chunk):
    ok = document["paths"][path]["post"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith(f"/{model}")
    assert "Idempotent-Replayed" in ok["headers"]
    event = ok["content"]["text/event-stream"]["schema"]
    data = event["properties"]["data"]
    assert event["required"] == ["data"] and data["if"] == {"const": "[DONE]"}
    content = data["else"]
    assert content["contentMediaType"] == "application/json"
    titles = [s["title"] for s in content["contentSchema"]["anyOf"]]
    assert titles == [chunk.__name__, "ErrorResponse"]
    assert "$ref" not in json.dumps(content), "inline: FastAPI registers no component for chunks"


def test_writes_document_their_status_and_replay_header(document):
    for path in ("/v1/generations/{generation_id}/feedback", "/v1/preferences"):
        responses = document["paths"][path]["post"]["responses"]
        assert "200" not in responses and "409" in responses, path
        assert responses["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/FeedbackObject")
        assert "Idempotent-Replayed" in responses["201"]["headers"]
    assert "Idempotent-Replayed" in document["paths"]["/v1/images/generations"]["post"][
        "responses"]["200"]["headers"]


# --- what the routes send is exactly the documented models ---------------------------------------


def exactly(model: type[BaseModel], payload: dict[str, Any]) -> None:
    """``payload`` is ``model``: no field missing, none extra, every value of its type."""
    parsed = model.model_validate(payload)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == payload, model


def events(response) -> list[dict[str, Any]]:  # noqa: ANN001 - an httpx streamed response
    data = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]", data[-3:]
    return [json.loads(d) for d in data[:-1]]


@pytest.fixture(scope="module")
def live(served_workspace):
    mp = pytest.MonkeyPatch()
    mp.setenv("GENLOOP_HOME", str(served_workspace.home))
    mp.delenv("GENLOOP_DB_URL", raising=False)
    service._CACHE.clear()
    with TestClient(create_app(ServeConfig(auth=False))) as client:
        yield client
    service._CACHE.clear()
    mp.undo()


def test_json_answers_are_their_models(live, served_workspace):
    text, image = served_workspace.text_model, served_workspace.image_model
    exactly(schemas.Health, live.get("/health").json())
    exactly(schemas.ModelList, live.get("/v1/models").json())
    exactly(schemas.ModelObject, live.get(f"/v1/models/{image}").json())
    exactly(schemas.ModelObject, live.get(f"/v1/models/{text}").json())
    completion = live.post("/v1/completions", json={"model": text, "prompt": ["The", "A"], "n": 2,
                                                    "max_tokens": 4, "seed": 3}).json()
    exactly(schemas.Completion, completion)
    assert len(completion["choices"]) == 4
    chat = live.post("/v1/chat/completions", json={
        "model": text, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}).json()
    exactly(schemas.ChatCompletion, chat)
    for response_format, present, absent in (("url", "url", "b64_json"), ("b64_json", "b64_json", "url")):
        images = live.post("/v1/images/generations", json={
            "model": image, "n": 2, "seed": 1, "response_format": response_format}).json()
        exactly(schemas.ImagesResponse, images)
        assert all(present in d and absent not in d and "class" in d for d in images["data"]), images
    chosen, rejected = (c["generation_id"] for c in completion["choices"][:2])
    rating = live.post(f"/v1/generations/{chosen}/feedback", json={"rating": 4})
    assert rating.status_code == 201 and "idempotent-replayed" not in rating.headers
    exactly(schemas.FeedbackObject, rating.json())
    preference = live.post("/v1/preferences", json={"chosen": chosen, "rejected": rejected})
    assert preference.status_code == 201
    exactly(schemas.FeedbackObject, preference.json())
    one = live.get(f"/v1/generations/{chosen}").json()
    exactly(schemas.GenerationObject, one)
    assert sorted(f["kind"] for f in one["feedback"]) == ["preference", "rating"]
    exactly(schemas.GenerationList, live.get("/v1/generations", params={"limit": 3}).json())


@pytest.mark.parametrize("route,chunk", [("completions", schemas.CompletionChunk),
                                         ("chat/completions", schemas.ChatCompletionChunk)])
def test_streamed_chunks_are_their_model(live, served_workspace, route, chunk):
    text = ({"messages": [{"role": "user", "content": "Hi"}]} if route.startswith("chat")
            else {"prompt": "The"})
    body = {"model": served_workspace.text_model, "max_tokens": 5, "n": 2, "stream": True,
            "stream_options": {"include_usage": True}, **text}
    with live.stream("POST", f"/v1/{route}", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = events(r)
    for c in chunks:
        exactly(chunk, c)
    last = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert sorted(c["choices"][0]["index"] for c in last) == [0, 1]
    assert all(c["choices"][0]["generation_id"] for c in last)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_a_stream_that_fails_sends_the_error_object(live, served_workspace, monkeypatch):
    from genloop.serving.routers import text

    async def failing(self, event):  # noqa: ANN001, ANN202 - _Run.finish failing to record
        raise RuntimeError("injected: the store is gone")

    monkeypatch.setattr(text._Run, "finish", failing)
    body = {"model": served_workspace.text_model, "prompt": "The", "max_tokens": 3, "stream": True}
    with live.stream("POST", "/v1/completions", json=body) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] != "[DONE]"
    error = json.loads(data[-1])
    exactly(schemas.ErrorResponse, error)
    assert "injected" in error["error"]["message"]
