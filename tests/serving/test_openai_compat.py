"""OpenAI's optional fields, as generic clients send them, against a real ``genloop serve``: the
official ``openai`` client with ``max_completion_tokens``, ``logprobs``/``top_logprobs``, the
penalties and ``logit_bias`` works unchanged (completions and chat, plain and streamed); the
logprobs are the model's own log-softmax at each step (checked against a forward pass of the
served model); the penalties and the bias decode the same on every face; token-id prompts, echo,
message names, text parts and the developer role are honoured; and every field no language model
can honour is a 400 that names it and says it is not supported (not "unknown field")."""

from __future__ import annotations

from typing import Any

import pytest
import torch

openai = pytest.importorskip("openai")

PROMPT = "The cat"


@pytest.fixture(scope="module")
def client(server, served_workspace):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=served_workspace.key, max_retries=0)


@pytest.fixture(scope="module")
def http(server, served_workspace):
    with server.client(served_workspace.key) as c:
        yield c


@pytest.fixture(scope="module")
def served(served_workspace):
    """The served text model, loaded in this process from the same workspace."""
    import os

    from genloop.generation.service import load
    from genloop.store import Store

    old = os.environ.get("GENLOOP_HOME")
    os.environ["GENLOOP_HOME"] = str(served_workspace.home)
    try:
        yield load(served_workspace.text_model, Store())
    finally:
        if old is None:
            os.environ.pop("GENLOOP_HOME", None)
        else:
            os.environ["GENLOOP_HOME"] = old


def token_id(tokenizer, text: str) -> int:
    """The id behind a token's text in logprobs (the model's tokenizer is character level)."""
    specials = {"<eos>": tokenizer.eos_id, "<unk>": tokenizer.unk_id}
    if text in specials:
        return specials[text]
    ids = tokenizer.encode(text)
    assert len(ids) == 1, (text, ids)
    return ids[0]


COMPAT = dict(presence_penalty=0.5, frequency_penalty=0.3, logit_bias={"5": -2.0}, seed=3,
              temperature=0.9)


def test_openai_client_completions_with_the_compat_fields(client, served_workspace):
    kw = dict(model=served_workspace.text_model, prompt=PROMPT, max_tokens=10, logprobs=3, **COMPAT)
    plain = client.completions.create(**kw)
    choice = plain.choices[0]
    n = plain.usage.completion_tokens
    assert 1 <= n <= 10
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n
    # a character model: one token, one character (<unk> decodes to nothing)
    assert "".join(t for t in lp.tokens if t != "<unk>") == choice.text
    assert lp.text_offset[0] == len(PROMPT) and lp.text_offset == sorted(lp.text_offset)
    for top, logprob in zip(lp.top_logprobs, lp.token_logprobs, strict=True):
        assert len(top) == 3 and list(top.values()) == sorted(top.values(), reverse=True)
        assert logprob <= 0
    pieces, logprobs = [], []
    for chunk in client.completions.create(stream=True, **kw):
        for c in chunk.choices:
            pieces.append(c.text)
            if c.logprobs:
                logprobs += c.logprobs.token_logprobs
    assert "".join(pieces) == choice.text
    assert logprobs == pytest.approx(lp.token_logprobs, abs=1e-6)


def test_openai_client_chat_with_the_compat_fields(client, served_workspace):
    kw = dict(model=served_workspace.text_model, max_completion_tokens=8, logprobs=True,
              top_logprobs=3, messages=[{"role": "user", "content": "Who walks?"}], **COMPAT)
    plain = client.chat.completions.create(**kw)
    choice = plain.choices[0]
    assert plain.usage.completion_tokens <= 8
    content = choice.logprobs.content
    assert len(content) == plain.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and entry.logprob <= values[0] + 1e-6
        if entry.bytes is not None:
            assert bytes(entry.bytes).decode() == entry.token
    streamed, entries = [], []
    for chunk in client.chat.completions.create(stream=True, **kw):
        for c in chunk.choices:
            streamed.append(c.delta.content or "")
            if c.logprobs and c.logprobs.content:
                entries += c.logprobs.content
    assert "".join(streamed) == choice.message.content
    assert [e.token for e in entries] == [e.token for e in content]
    assert [e.logprob for e in entries] == pytest.approx([e.logprob for e in content], abs=1e-6)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("settings", [{"temperature": 0.0}, COMPAT], ids=["greedy", "sampled"])
def test_logprobs_are_the_models_own_log_softmax(http, served, served_workspace, settings):
    """Each token's logprob and its top alternatives are log_softmax of the model's logits at
    that step (before penalties, bias and temperature), as a full forward pass computes them."""
    r = http.post("/v1/completions", json={"model": served_workspace.text_model, "prompt": PROMPT,
                                           "max_tokens": 10, "logprobs": 5, **settings})
    assert r.status_code == 200, r.text
    lp = r.json()["choices"][0]["logprobs"]
    tok = served.tokenizer
    generated = [token_id(tok, t) for t in lp["tokens"]]
    ids = torch.tensor([tok.encode(PROMPT) + generated])
    with torch.no_grad():
        logp = torch.log_softmax(served.network(ids).float(), dim=-1)[0]  # (T, V)
    start = len(tok.encode(PROMPT)) - 1  # the position that predicts the first generated token
    for i, token in enumerate(generated):
        step = logp[start + i]
        assert lp["token_logprobs"][i] == pytest.approx(step[token].item(), abs=1e-4)
        top = lp["top_logprobs"][i]
        best = step.topk(5)
        assert list(top.values()) == pytest.approx(best.values.tolist(), abs=1e-4)
        assert {token_id(tok, t) for t in top} == set(best.indices.tolist())
        if settings["temperature"] == 0.0:  # greedy: the chosen token is the most likely
            assert token == best.indices[0].item()


@pytest.mark.usefixtures("one_thread")
def test_penalties_and_bias_decode_the_same_on_every_face(http, served, served_workspace):
    """HTTP (the batcher) and the Python face (the family's sample loop) give the same text for
    the same penalties, bias and seed; and they change the text (they are not ignored)."""
    body = {"model": served_workspace.text_model, "prompt": PROMPT, "max_tokens": 20,
            "seed": 8, "temperature": 0.8}
    extra = {"frequency_penalty": 1.5, "presence_penalty": 0.5, "logit_bias": {"3": 4.0}}
    plain = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
    over_http = http.post("/v1/completions", json={**body, **extra}).json()["choices"][0]["text"]
    python = served.generate(PROMPT, max_new_tokens=20, seed=8, temperature=0.8,
                             logit_bias={3: 4.0}, frequency_penalty=1.5, presence_penalty=0.5)
    assert python[0].text == over_http
    assert over_http != plain
    # the bias at its ends: +100 makes a token certain, -100 bans it
    e = served.tokenizer.encode("e")[0]
    forced = http.post("/v1/completions", json={**body, "max_tokens": 5,
                                                 "logit_bias": {str(e): 100}}).json()
    assert forced["choices"][0]["text"] == "eeeee"
    greedy = {**body, "temperature": 0, "max_tokens": 1}
    first = http.post("/v1/completions", json=greedy).json()["choices"][0]["text"]
    banned = {str(served.tokenizer.encode(first)[0]): -100}
    again = http.post("/v1/completions", json={**greedy, "logit_bias": banned}).json()
    assert again["choices"][0]["text"] != first
    # frequency penalty: repeats are penalised, so a strongly penalised greedy text repeats less
    long = {**body, "temperature": 0, "max_tokens": 30}
    repeats = http.post("/v1/completions", json=long).json()["choices"][0]["text"]
    fewer = http.post("/v1/completions", json={**long, "frequency_penalty": 2.0}).json()
    text = fewer["choices"][0]["text"]
    assert len(set(text)) >= len(set(repeats)) and text != repeats


def test_token_id_prompts_are_the_decoded_text(http, served, served_workspace):
    ids = served.tokenizer.encode(PROMPT)
    body = {"model": served_workspace.text_model, "max_tokens": 6, "seed": 4}
    as_text = http.post("/v1/completions", json={**body, "prompt": PROMPT}).json()
    as_ids = http.post("/v1/completions", json={**body, "prompt": ids}).json()
    assert as_ids["choices"][0]["text"] == as_text["choices"][0]["text"]
    assert as_ids["usage"]["prompt_tokens"] == len(ids)
    two = http.post("/v1/completions", json={**body, "prompt": [ids, ids[:3]]}).json()
    assert two["choices"][0]["text"] == as_text["choices"][0]["text"] and len(two["choices"]) == 2
    vocab = served.tokenizer.vocab_size
    bad = http.post("/v1/completions", json={**body, "prompt": [1, vocab]})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("prompt:")
    assert f"token id {vocab}" in bad.json()["error"]["message"]
    mixed = http.post("/v1/completions", json={**body, "prompt": [1, "x"]})
    assert mixed.status_code == 400


def test_echo_prepends_the_prompt(http, served_workspace):
    body = {"model": served_workspace.text_model, "prompt": PROMPT, "max_tokens": 6, "seed": 4}
    plain = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
    echoed = http.post("/v1/completions", json={**body, "echo": True}).json()
    assert echoed["choices"][0]["text"] == PROMPT + plain
    with http.stream("POST", "/v1/completions", json={**body, "echo": True, "stream": True}) as r:
        import json

        chunks = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == PROMPT + plain
    both = http.post("/v1/completions", json={**body, "echo": True, "logprobs": 1})
    assert both.status_code == 400 and "does not support" in both.json()["error"]["message"]


def test_max_completion_tokens_is_max_tokens(http, served_workspace):
    body = {"model": served_workspace.text_model, "seed": 1, "stop": ["no such stop"],
            "messages": [{"role": "user", "content": "Hi"}]}
    r = http.post("/v1/chat/completions", json={**body, "max_completion_tokens": 3}).json()
    assert r["usage"]["completion_tokens"] <= 3
    same = http.post("/v1/chat/completions",
                     json={**body, "max_completion_tokens": 3, "max_tokens": 3})
    assert same.status_code == 200
    differ = http.post("/v1/chat/completions",
                       json={**body, "max_completion_tokens": 3, "max_tokens": 4})
    assert differ.status_code == 400 and "max_completion_tokens" in differ.json()["error"]["message"]


def _record_prompt(http, reply: dict[str, Any]) -> str:
    gid = reply["choices"][0]["generation_id"]
    return http.get(f"/v1/generations/{gid}").json()["request"]["prompt"]


def test_names_parts_and_the_developer_role_in_the_transcript(http, served_workspace):
    body = {"model": served_workspace.text_model, "max_tokens": 4, "seed": 2}
    system = http.post("/v1/chat/completions", json={**body, "messages": [
        {"role": "system", "content": "A play."}, {"role": "user", "content": "Hi"}]}).json()
    developer = http.post("/v1/chat/completions", json={**body, "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "play."}]},
        {"role": "user", "content": "Hi", "name": "ROMEO"}]}).json()
    assert _record_prompt(http, system) == "A play.\n\nUSER:\nHi\n\nASSISTANT:\n"
    assert _record_prompt(http, developer) == "A\nplay.\n\nROMEO:\nHi\n\nASSISTANT:\n"
    spaced = http.post("/v1/chat/completions", json={**body, "messages": [
        {"role": "user", "content": "Hi", "name": "two\n\nlines"}]})
    assert spaced.status_code == 400 and spaced.json()["error"]["param"] == "messages.0.name"


UNSUPPORTED = [
    ("completions", "tools", {"tools": [{"type": "function", "function": {"name": "f"}}]}),
    ("chat/completions", "tools", {"tools": [{"type": "function", "function": {"name": "f"}}]}),
    ("chat/completions", "tool_choice", {"tool_choice": "auto"}),
    ("chat/completions", "functions", {"functions": [{"name": "f"}]}),
    ("chat/completions", "function_call", {"function_call": {"name": "f"}}),
    ("chat/completions", "response_format", {"response_format": {"type": "json_object"}}),
    ("completions", "suffix", {"suffix": "end"}),
    ("chat/completions", "messages.1.role", {"messages": [
        {"role": "user", "content": "Hi"}, {"role": "tool", "content": "42", "tool_call_id": "x"}]}),
    ("chat/completions", "messages.0.tool_calls", {"messages": [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "x", "type": "function"}]}]}),
    ("chat/completions", "messages.0.content", {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]}),
]


@pytest.mark.parametrize("route,param,body", UNSUPPORTED,
                         ids=[f"{r.split('/')[0]}-{p}" for r, p, _ in UNSUPPORTED])
def test_what_a_language_model_cannot_honour_is_a_400_saying_so(http, served_workspace, route,
                                                                 param, body):
    text = {"messages": [{"role": "user", "content": "Hi"}]} if route.startswith("chat") else {
        "prompt": "x"}
    r = http.post(f"/v1/{route}", json={"model": served_workspace.text_model, "max_tokens": 2,
                                        **text, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert "does not support" in error["message"] and "unknown field" not in error["message"]


@pytest.mark.parametrize("body", [
    {"tools": None, "tool_choice": "none", "parallel_tool_calls": False},
    {"tools": [], "response_format": {"type": "text"}},
], ids=["nulls", "empty"])
def test_the_defaults_of_unsupported_fields_are_accepted(http, served_workspace, body):
    """What clients send when they mean 'no tools' is not refused."""
    r = http.post("/v1/chat/completions", json={
        "model": served_workspace.text_model, "max_tokens": 2,
        "messages": [{"role": "user", "content": "Hi"}], **body})
    assert r.status_code == 200, r.text


def test_best_of_equal_to_n_is_n(http, served_workspace):
    body = {"model": served_workspace.text_model, "prompt": "x", "max_tokens": 3, "seed": 5, "n": 2}
    a = http.post("/v1/completions", json=body).json()
    b = http.post("/v1/completions", json={**body, "best_of": 2}).json()
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]
    fewer = http.post("/v1/completions", json={**body, "best_of": 1})
    assert fewer.status_code == 400 and fewer.json()["error"]["param"] == "best_of"
