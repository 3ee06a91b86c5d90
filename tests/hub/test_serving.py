"""Imported models served by a real ``genloop serve`` through the official ``openai`` client:
concurrent requests share the continuous batcher (the hf slot decoder) and each gets exactly
what it gets alone; chat goes through the model's own jinja template."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ..conftest import start_server  # noqa: TID252
from ..serving.conftest import create_key  # noqa: TID252
from .conftest import save_model, transformers

openai = pytest.importorskip("openai")
LAYOUTS = ("gpt2", "llama")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from genloop.hub.imports import import_model
    from genloop.store import Store

    root = tmp_path_factory.mktemp("hf-served")
    home = root / "home"
    # imported in process (the import command's own CLI test is in test_imports.py): two CLI
    # starts, each importing transformers, cost more than the rest of this module's setup
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GENLOOP_HOME", str(home))
        env.delenv("GENLOOP_DB_URL", raising=False)
        env.delenv("GENLOOP_CACHE", raising=False)
        store = Store()
        for layout in LAYOUTS:
            import_model(save_model(root / layout, layout), f"tiny-{layout}", store)
        store.close()
    key = create_key(home, "tests")
    server = start_server(home)
    yield server, key, root
    server.stop()


@pytest.fixture(scope="module")
def client(served):
    server, key, _ = served
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batched_requests_equal_each_alone(client, layout):
    model = f"tiny-{layout}"
    asks = [dict(prompt=p, seed=s, max_tokens=n, temperature=t) for p, s, n, t in [
        ("ROMEO:", 1, 30, 0.8), ("JULIET: O Romeo, Romeo", 2, 12, 1.0), ("But soft", 3, 24, 0.0),
        ("the", 4, 40, 0.9), ("wherefore art thou", 5, 18, 0.7), ("O", 6, 33, 1.0)]]

    def ask(kw):
        return client.completions.create(model=model, **kw).choices[0].text

    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(ask, asks))
    alone = [ask(kw) for kw in asks]
    assert together == alone
    assert len(set(alone)) == len(alone)
    # streaming gives the same text
    stream = client.completions.create(model=model, stream=True, **asks[0])
    assert "".join(c.choices[0].text for c in stream if c.choices) == alone[0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_chat_goes_through_the_models_template(client, served, layout):
    server, key, root = served
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    reply = client.chat.completions.create(model=f"tiny-{layout}", messages=messages, seed=9,
                                           max_tokens=10, temperature=0.8)
    assert reply.choices[0].message.role == "assistant"
    gid = reply.choices[0].model_extra["generation_id"]
    with server.client(key) as http:
        record = http.get(f"/v1/generations/{gid}").json()
        info = http.get(f"/v1/models/tiny-{layout}").json()
    expected = transformers.AutoTokenizer.from_pretrained(root / layout).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    assert record["request"]["prompt"] == expected
    assert record["output"] == reply.choices[0].message.content
    assert info["chat_template"]["jinja"].startswith("{{ bos_token }}")
