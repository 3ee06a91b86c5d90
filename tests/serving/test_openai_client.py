"""The official ``openai`` client, pointed at a real ``genloop serve``: models, completions, chat
(plain and streaming) and images, as a user of any OpenAI-speaking tool would call them."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def client(server, served_workspace):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=served_workspace.key, max_retries=0)


def test_models_list_shows_every_version(client, served_workspace):
    models = {m.id: m for m in client.models.list()}
    assert f"{served_workspace.text_model}@1" in models
    assert f"{served_workspace.image_model}@1" in models
    text = client.models.retrieve(served_workspace.text_model)
    assert text.id == f"{served_workspace.text_model}@1"
    assert text.model_extra["modality"] == "text" and text.model_extra["card"].startswith("#")


def test_completion_is_seeded_and_recorded(client, server, served_workspace):
    kw = dict(model=served_workspace.text_model, prompt="The cat", max_tokens=12, seed=7,
              temperature=0.8)
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text and len(a.choices[0].text) > 0
    assert a.model == f"{served_workspace.text_model}@1"
    assert a.usage.completion_tokens == 12 and a.usage.prompt_tokens == len("The cat")
    gid = a.choices[0].model_extra["generation_id"]
    with server.client(served_workspace.key) as http:
        record = http.get(f"/v1/generations/{gid}").json()
    assert record["output"] == a.choices[0].text
    assert record["seed"] == 7 and record["request"]["prompt"] == "The cat"


def test_n_choices_are_seeded_one_by_one(client, served_workspace):
    """Choice i of a request with seed s is the single choice of the same request with seed s+i."""
    kw = dict(model=served_workspace.text_model, prompt="A dog", max_tokens=10, temperature=1.0)
    three = client.completions.create(n=3, seed=100, **kw)
    assert [c.index for c in three.choices] == [0, 1, 2]
    third = client.completions.create(n=1, seed=102, **kw)
    assert three.choices[2].text == third.choices[0].text


def test_chat_plain_and_streaming_agree(client, served_workspace):
    kw = dict(model=served_workspace.text_model, max_tokens=20, seed=3, temperature=0.8,
              messages=[{"role": "system", "content": "A play."},
                        {"role": "user", "content": "Who walks to the house?"}])
    plain = client.chat.completions.create(**kw)
    assert plain.object == "chat.completion"
    assert plain.choices[0].message.role == "assistant"
    pieces, finish = [], None
    for chunk in client.chat.completions.create(stream=True, **kw):
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == plain.choices[0].message.content
    assert finish == plain.choices[0].finish_reason


def test_streaming_completion_with_usage(client, served_workspace):
    stream = client.completions.create(model=served_workspace.text_model, prompt="The", seed=1,
                                       max_tokens=120, stream=True,
                                       stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 120
    pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    # pieces the client has not read yet are sent together, so fewer chunks than tokens
    assert len(pieces) >= 2, "the text came in one piece: not streamed"


def test_images_generate_b64_and_url(client, server, served_workspace):
    out = client.images.generate(model=served_workspace.image_model, prompt="7", n=2,
                                 response_format="b64_json", extra_body={"seed": 5})
    assert len(out.data) == 2
    image = Image.open(io.BytesIO(base64.b64decode(out.data[0].b64_json)))
    assert image.size == (8, 8)
    assert out.data[0].model_extra["class"] == "7"
    assert image.text["genloop:model"] == f"{served_workspace.image_model}@1"  # provenance chunk
    by_url = client.images.generate(model=served_workspace.image_model, prompt="", n=1)
    url = by_url.data[0].url
    assert url.startswith(server.url)
    assert httpx.get(url).status_code == 401  # the file is behind the key too
    png = httpx.get(url, headers={"Authorization": f"Bearer {served_workspace.key}"})
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")


def test_errors_come_in_openai_shapes(client, served_workspace):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=served_workspace.text_model, prompt="x", max_tokens=0)
    assert "max_tokens" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=served_workspace.image_model, prompt="x", max_tokens=1)
    assert "images" in str(e.value)
    bad = openai.OpenAI(base_url=client.base_url, api_key="gl_000000000000_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
