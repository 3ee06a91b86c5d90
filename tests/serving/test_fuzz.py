"""Property-based fuzzing of the whole OpenAPI surface of a real ``genloop serve``: every operation
in the server's own ``/openapi.json`` gets schemathesis-generated requests (valid and invalid);
none may answer 5xx, and every answer must match the schema the document gives for its status.
A 500 is a bug by the API's contract (docs/api.md); 503 is allowed only as the overload answer,
which a server with a generous queue never gives to these few requests.

Generated strings almost never name a real model or generation, so a hook swaps real references
into the bodies and paths some of the time: the fuzzing then reaches the sampling, recording and
feedback code, not only the 404 path. The server runs with no rate limit and ``--max-tokens 32``
so that fuzzed completions stay cheap.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error, response_schema_conformance  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402

from .conftest import Server, Workspace, start_server  # noqa: E402

# The suite runs a fixed set of examples (derandomized: the same requests every run, so CI is
# reproducible). To hunt for new failures: GENLOOP_FUZZ_RANDOM=1 GENLOOP_FUZZ_EXAMPLES=200.
MAX_EXAMPLES = int(os.environ.get("GENLOOP_FUZZ_EXAMPLES", "20"))
RANDOM = os.environ.get("GENLOOP_FUZZ_RANDOM") == "1"


@pytest.fixture(scope="module")
def fuzz_server(served_workspace: Workspace) -> Iterator[Server]:
    srv = start_server(served_workspace, "--rate-limit", "0", "--max-tokens", "32")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def real_ids(fuzz_server: Server, served_workspace: Workspace) -> dict[str, list[str]]:
    """A text and an image generation, so fuzzed paths and preferences can point at real rows."""
    ws = served_workspace
    with fuzz_server.client(ws.key) as http:
        text = http.post("/v1/completions", json={"model": ws.text_model, "prompt": "The",
                                                 "max_tokens": 4, "seed": 1})
        image = http.post("/v1/images/generations", json={"model": ws.image_model, "seed": 1})
    assert text.status_code == 200 and image.status_code == 200, (text.text, image.text)
    generations = [text.json()["choices"][0]["generation_id"], image.json()["data"][0]["generation_id"]]
    models = [ws.text_model, f"{ws.text_model}@1", ws.image_model, f"{ws.image_model}@1"]
    return {"generations": generations, "models": models}


def _mixed_in(original: Any, real: list[Any]) -> st.SearchStrategy:
    """The generated value or one of the real ones (the generated one as often as all real ones)."""
    return st.one_of(st.just(original), st.sampled_from(real))


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server, served_workspace: Workspace, real_ids: dict[str, list[str]]):
    schema = schemathesis.openapi.from_url(
        f"{fuzz_server.url}/openapi.json",
        headers={"Authorization": f"Bearer {served_workspace.key}"}, timeout=30)
    references = {"model": real_ids["models"], "generation_id": real_ids["generations"],
                  "chosen": real_ids["generations"], "rejected": real_ids["generations"],
                  "max_tokens": [1, 8, 32]}

    def with_real_references(values: Any) -> st.SearchStrategy:
        if not isinstance(values, dict):
            return st.just(values)
        fields = {k: (_mixed_in(v, references[k]) if k in references else st.just(v))
                  for k, v in values.items()}
        return st.fixed_dictionaries(fields)

    schema.hook("flatmap_body")(lambda context, body: with_real_references(body))
    schema.hook("flatmap_path_parameters")(lambda context, params: with_real_references(params))
    return schema


def _fuzz(operation, mode: GenerationMode, hooks, auth: dict[str, str],  # noqa: ANN001
          failures: list[str], statuses: Counter) -> None:
    """MAX_EXAMPLES requests for one operation; a failed check or a dropped connection is kept
    with its request (not shrunk: the curl line is reproduction enough)."""

    @given(case=operation.as_strategy(generation_mode=mode, hooks=hooks))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=not RANDOM,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def one(case) -> None:  # noqa: ANN001 - a schemathesis Case
        try:
            response = case.call_and_validate(
                headers=auth, checks=[not_a_server_error, response_schema_conformance], timeout=60)
        except (Exception, FailureGroup) as e:  # FailureGroup is a BaseExceptionGroup
            first = str(e).splitlines()[0] if str(e) else ""
            failures.append(f"{operation.label} ({mode}): {type(e).__name__}: {first}\n"
                            f"  {case.as_curl_command(headers=auth)}")
            return
        statuses[(operation.method.upper(), mode, response.status_code // 100)] += 1

    try:
        one()
    except Unsatisfiable:  # nothing to make invalid: GET /health and /metrics take no input
        assert mode is GenerationMode.NEGATIVE, operation.label


@pytest.mark.slow
def test_no_operation_answers_5xx(api_schema, served_workspace: Workspace) -> None:
    """Every operation of /openapi.json, with valid and with invalid data: never a 5xx, and
    every answer (errors too) as documented."""
    auth = {"Authorization": f"Bearer {served_workspace.key}"}
    failures: list[str] = []
    statuses: Counter = Counter()
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 12, [op.label for op in operations]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, api_schema.hooks, auth, failures, statuses)
    assert not failures, f"{len(failures)} requests failed:\n" + "\n".join(failures[:20])
    # the real references let the fuzzing past validation into generation and feedback
    assert statuses[("POST", GenerationMode.POSITIVE, 2)] > 0, statuses


@pytest.mark.parametrize("route,body", [
    ("/v1/completions", {"prompt": "The", "n": 2, "stream": True}),
    ("/v1/completions", {"prompt": ["The", "A"], "stream": True, "stream_options": {"include_usage": True}}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "n": 2, "stream": True,
                              "stream_options": {"include_usage": True}}),
], ids=["completions", "completions-usage", "chat-usage"])
def test_streams_conform_to_their_documented_events(api_schema, served_workspace: Workspace,
                                                    route: str, body: dict[str, Any]) -> None:
    """The fuzzing above rarely draws a valid streamed request: each event of a real stream
    (chunks, the usage chunk, ``[DONE]``) against the event schema of /openapi.json."""
    case = api_schema[route]["POST"].Case(
        body={"model": served_workspace.text_model, "max_tokens": 4, **body})
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {served_workspace.key}"},
        checks=[not_a_server_error, response_schema_conformance], timeout=60)
    assert response.headers["content-type"][0].startswith("text/event-stream")


@pytest.mark.parametrize("body", [
    {"temperature": 1e-45},  # logits / temperature overflow to inf: softmax gives NaN
    {"top_p": 1e-46},  # below float32's smallest subnormal: p rounds to 0, every token dropped
    {"top_p": 5e-324, "top_k": 1},
    {"temperature": 3.7855938646167296e-261},  # rounds to 0.0 in float32: 0/0 gave NaN
], ids=["temperature-1e-45", "top_p-1e-46", "top_p-5e-324-top_k-1", "temperature-4e-261"])
@pytest.mark.parametrize("route", ["completions", "chat/completions"])
def test_fuzzing_findings_are_not_server_errors(fuzz_server: Server, served_workspace: Workspace,
                                                route: str, body: dict[str, Any]) -> None:
    """Requests the fuzzing found answering 500; valid by the schema, so 200 (or a 400 naming
    the field) is the answer."""
    ws = served_workspace
    text = {"messages": [{"role": "user", "content": "Hi"}]} if route.startswith("chat") else {
        "prompt": "The"}
    with fuzz_server.client(ws.key) as http:
        r = http.post(f"/v1/{route}", json={"model": ws.text_model, "max_tokens": 4, **text, **body})
    assert r.status_code in (200, 400), r.text


@pytest.mark.parametrize("field,body", [
    ("prompt", {"prompt": "\udbac x"}), ("prompt", {"prompt": ["ok", "\ud800"]}),
    ("stop", {"prompt": "x", "stop": "\udfff"}), ("user", {"prompt": "x", "user": "\ud800"}),
    ("messages.0.content", {"messages": [{"role": "user", "content": "\udbac x"}]}),
])
def test_lone_surrogates_are_a_400_naming_the_field(fuzz_server: Server, served_workspace: Workspace,
                                                    field: str, body: dict[str, Any]) -> None:
    """JSON may escape a lone surrogate; it is not text, cannot be tokenized or stored: 400."""
    route = "chat/completions" if "messages" in body else "completions"
    with fuzz_server.client(served_workspace.key) as http:
        raw = json.dumps({"model": served_workspace.text_model, "max_tokens": 2, **body})  # \\ud800
        r = http.post(f"/v1/{route}", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith(field), r.text
