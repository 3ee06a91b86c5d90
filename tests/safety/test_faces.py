"""Moderation on every face of a real tiny model: the Python API (generate, stream, replay), the
HTTP routes (plain, streamed, chat) in-process, ``/v1/moderations`` through the official openai
client; blocked prompts refused, blocked outputs withheld with ``content_filter``, verdicts in
the records, failing closed; and a stream whose later tokens trip the filter sends none of it."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

import genloop
from genloop.errors import InvalidInput
from genloop.models.modeldir import ModelDir
from genloop.safety.moderator import ContentBlocked, ModerationFailed, OutputWithheld
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import Store

from ..conftest import module_workspace, tiny_recipe_dict, write_corpus  # noqa: TID252

GREEDY = {"max_new_tokens": 60, "temperature": 0.0, "seed": 3}
PROMPT = "The "


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with a tiny gpt (context 96) and its greedy output for PROMPT, unmoderated."""
    root = tmp_path_factory.mktemp("moderation")
    with module_workspace(root / "home"):
        recipe = tiny_recipe_dict(write_corpus(root / "corpus.txt"), name="mod", steps=30)
        recipe["model"]["config"]["block_size"] = 96
        ref = genloop.train(recipe).model_ref
        (root / "home" / "moderation.yaml").write_text("pii: {email: off, phone: off, card: off}\n")
        model = genloop.load(ref)
        text = model.generate(PROMPT, **GREEDY)[0].text
        assert len(text) >= 40, text
        yield {"home": root / "home", "ref": ref, "model": model, "text": text,
               "store": Store()}


def policy(ws, body: str) -> None:
    (ws["home"] / "moderation.yaml").write_text(body)


def late_filter(ws, action: str = "block") -> tuple[str, int]:
    """A policy blocking a piece of the model's greedy output well after its start (hold-back
    8 characters, PII off): the text before it may stream, none of it may."""
    text = ws["text"]
    start = len(text) * 2 // 3
    piece = text[start : start + 5]
    policy(ws, "pii: {email: off, phone: off, card: off}\nstream_holdback: 8\npatterns:\n"
               f"  - {{category: late, pattern: {json.dumps(re.escape(piece))}, action: {action}}}\n")
    return piece, text.find(piece)


@pytest.fixture
def client(ws):
    with TestClient(create_app(ServeConfig(auth=False), ws["store"])) as c:
        yield c


def sse(response) -> list[dict]:
    chunks = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line[6:]))
    return chunks


def test_python_face_withholds_a_blocked_output_and_records_why(ws):
    piece, _ = late_filter(ws)
    out = ws["model"].generate(PROMPT, **GREEDY)[0]
    assert out.text == "" and out.finish_reason == "content_filter"
    record = ws["store"].list_generations(limit=1)[0]
    assert record.output == "" and record.safety["withheld"] is True
    assert record.safety["output"]["reason"] == "blocked: late (pattern)"
    assert piece not in json.dumps(record.safety)  # spans, never the text
    assert genloop.generation.service.replay(record.id).matches  # replays as withheld


def test_python_stream_sends_nothing_of_a_later_blocked_piece(ws):
    piece, at = late_filter(ws)
    sent = []
    with pytest.raises(OutputWithheld, match="late"):
        for shown in ws["model"].stream(PROMPT, **GREEDY):
            sent.append(shown)
    streamed = "".join(sent)
    assert ws["text"].startswith(streamed) and len(streamed) <= at, (streamed, at)
    assert ws["store"].list_generations(limit=1)[0].safety["withheld"]


def test_http_stream_whose_later_tokens_trip_the_filter(ws, client):
    piece, at = late_filter(ws)
    body = {"model": ws["ref"], "prompt": PROMPT, "max_tokens": 60, "temperature": 0, "seed": 3,
            "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        chunks = sse(r)
    streamed = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert ws["text"].startswith(streamed) and len(streamed) <= at, (streamed, at)
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "content_filter"
    gen = client.get(f"/v1/generations/{last['generation_id']}").json()
    assert gen["output"] == "" and gen["safety"]["withheld"] is True


def test_http_stream_that_passes_is_the_whole_text_and_redacted_pieces_go_out_redacted(ws, client):
    piece, at = late_filter(ws, action="redact")
    body = {"model": ws["ref"], "prompt": PROMPT, "max_tokens": 60, "temperature": 0, "seed": 3,
            "stream": True, "logprobs": 2}
    with client.stream("POST", "/v1/completions", json=body) as r:
        chunks = sse(r)
    streamed = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert streamed == ws["text"].replace(piece, "[LATE]")
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["choices"][0].get("logprobs") is None for c in chunks if c["choices"])


def test_http_plain_and_chat_blocked_output_is_content_filter(ws, client):
    late_filter(ws)
    body = {"model": ws["ref"], "prompt": PROMPT, "max_tokens": 60, "temperature": 0, "seed": 3}
    choice = client.post("/v1/completions", json=body).json()["choices"][0]
    assert choice["text"] == "" and choice["finish_reason"] == "content_filter"


def test_a_blocked_prompt_is_refused_and_nothing_recorded(ws, client):
    policy(ws, "blocklists:\n  - {category: violence, terms: [kill them, 杀人]}\n")
    before = ws["store"].count_generations(ws["ref"])
    for prompt in ("we KILL  them", "我要杀人"):
        r = client.post("/v1/completions", json={"model": ws["ref"], "prompt": prompt,
                                                 "max_tokens": 4})
        assert r.status_code == 400 and "violence" in r.json()["error"]["message"], r.text
        r = client.post("/v1/chat/completions", json={
            "model": ws["ref"], "max_tokens": 4,
            "messages": [{"role": "user", "content": prompt}]})
        assert r.status_code == 400 and "violence" in r.json()["error"]["message"], r.text
    with pytest.raises(ContentBlocked, match="violence"):
        ws["model"].generate("kill them", max_new_tokens=4)
    assert ws["store"].count_generations(ws["ref"]) == before


def test_pii_in_a_chat_prompt_is_redacted_in_what_the_model_reads_and_the_record(ws, client):
    policy(ws, "")  # the default: PII redacted
    r = client.post("/v1/chat/completions", json={
        "model": ws["ref"], "max_tokens": 4, "seed": 1,
        "messages": [{"role": "user", "content": "I am bob@example.com"}]})
    assert r.status_code == 200, r.text
    gen = client.get(f"/v1/generations/{r.json()['choices'][0]['generation_id']}").json()
    assert "bob@example.com" not in json.dumps(gen)
    assert gen["request"]["messages"][0]["content"] == "I am [EMAIL]"
    assert gen["safety"]["prompt"]["categories"] == ["email"]


def test_a_check_that_raises_fails_closed_on_every_face(ws, client, request):
    """The policy names a classifier whose weights are corrupt: 503, nothing recorded."""
    from genloop.safety.classifier import register_classifier, train_classifier

    clf = train_classifier([("kill", "bad"), ("hello", "ok")], steps=5, buckets=1 << 10)
    version = register_classifier(ws["store"], "brokenclf", clf, "sha256:x", {})
    ModelDir(version.path).weights_file.write_bytes(b"not weights")
    policy(ws, f"classifier: {{model: {version.ref}, labels: [bad]}}\n")
    request.addfinalizer(lambda: policy(ws, ""))
    before = ws["store"].count_generations(ws["ref"])
    r = client.post("/v1/completions", json={"model": ws["ref"], "prompt": "hi", "max_tokens": 4})
    assert r.status_code == 503 and "classifier" in r.json()["error"]["message"], r.text
    with pytest.raises(ModerationFailed, match="classifier"):
        ws["model"].generate("hi", max_new_tokens=4)
    with pytest.raises(ModerationFailed):
        list(ws["model"].stream("hi", max_new_tokens=4))
    assert client.post("/v1/moderations", json={"input": "hi"}).status_code == 503
    assert ws["store"].count_generations(ws["ref"]) == before


def test_moderations_through_the_official_openai_client(ws, client):
    import openai

    policy(ws, "blocklists:\n  - {category: violence, terms: [kill them, 杀人]}\n")
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=client)
    reply = api.moderations.create(input=["we kill them", "今天天气很好", "mail a@b.io", "我要杀人"])
    flagged = [r.flagged for r in reply.results]
    assert flagged == [True, False, True, True]
    first = reply.results[0]
    assert first.categories.violence is True and first.category_scores.violence == 1.0
    assert first.categories.hate is False
    extra = reply.results[2].model_extra or {}
    assert extra["action"] == "redact" and extra["redacted"] == "mail [EMAIL]"
    assert reply.results[2].categories.model_extra["email"] is True
    single = api.moderations.create(input="hello there")
    assert not single.results[0].flagged and single.model == "genloop-moderation"


def test_a_policy_file_that_goes_bad_while_serving_is_503_naming_file_key_and_pattern(ws, client,
                                                                                      request):
    """The server started on a good policy; the file is then broken: every request moderation
    reads it for is refused with 503 (the server's misconfiguration, not the client's fault),
    in one line naming the file, the key and the pattern, and nothing is recorded."""
    request.addfinalizer(lambda: policy(ws, ""))
    policy(ws, "patterns:\n  - {category: x, pattern: '(unclosed'}\n")
    before = ws["store"].count_generations(ws["ref"])
    for path, body in (("/v1/completions", {"model": ws["ref"], "prompt": "hi", "max_tokens": 4}),
                       ("/v1/chat/completions", {"model": ws["ref"], "max_tokens": 4, "messages": [
                           {"role": "user", "content": "hi"}]}),
                       ("/v1/moderations", {"input": "hi"})):
        r = client.post(path, json=body)
        assert r.status_code == 503, (path, r.text)
        message = r.json()["error"]["message"]
        assert "\n" not in message and str(ws["home"] / "moderation.yaml") in message, message
        assert "patterns.0.pattern" in message and "(unclosed" in message, message
    with pytest.raises(InvalidInput, match="patterns.0.pattern"):
        ws["model"].generate("hi", max_new_tokens=4)
    assert ws["store"].count_generations(ws["ref"]) == before


@pytest.mark.parametrize("stream", [False, True])
def test_a_slow_prompt_check_does_not_stall_the_event_loop(ws, client, request, monkeypatch,
                                                           stream):
    """The policy's classifier takes a while to load on the first check (as a big one would): the
    prompt is checked off the event loop, so /health answers meanwhile."""
    import threading
    import time

    from genloop.safety import classifier as clf

    model = clf.train_classifier([("kill", "bad"), ("hello", "ok")], steps=5, buckets=1 << 10)
    version = clf.register_classifier(ws["store"], f"slowclf{int(stream)}", model, "sha256:x", {})
    slow = clf.load_classifier
    loading = threading.Event()

    def load(store, ref):
        loading.set()
        time.sleep(1.5)
        return slow(store, ref)

    monkeypatch.setattr(clf, "load_classifier", load)
    policy(ws, f"classifier: {{model: {version.ref}, labels: [bad], action: flag}}\n")
    request.addfinalizer(lambda: policy(ws, ""))
    replies = []
    body = {"model": ws["ref"], "prompt": "hi", "max_tokens": 4, "stream": stream}
    worker = threading.Thread(target=lambda: replies.append(client.post("/v1/completions",
                                                                        json=body)))
    worker.start()
    assert loading.wait(30), "the completion never reached its prompt check"
    t0 = time.perf_counter()
    assert client.get("/health").status_code == 200
    took = time.perf_counter() - t0
    worker.join(30)
    assert replies and replies[0].status_code == 200, replies
    assert took < 0.8, f"/health waited {took:.2f} s behind a prompt check"


def test_a_beam_search_request_is_moderated_too(ws, client):
    """``num_beams`` > 1 runs beside the batcher: its prompt is checked first all the same."""
    policy(ws, "blocklists:\n  - {category: violence, terms: [kill them]}\n")
    r = client.post("/v1/completions", json={"model": ws["ref"], "prompt": "kill them",
                                             "max_tokens": 4, "num_beams": 2})
    assert r.status_code == 400 and "violence" in r.json()["error"]["message"], r.text
