"""Text ↔ image through the faces, on a real ``genloop serve`` and the real CLI over a workspace
whose models were trained by the CLI (seconds each): a text-diffusion and a text-GAN model drawn
from a sentence (``/v1/images/generations``, the official ``openai`` client, ``genloop generate
--prompt``), a captioner reading an uploaded image (``/v1/chat/completions`` with an image content part, the
``openai`` client, ``genloop generate --image``), and every bad input of issue 12 a 400 that names
the problem with nothing recorded."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ..conftest import (  # noqa: TID252
    Server,
    run_cli,
    start_server,
    tiny_captioner_recipe_dict,
    tiny_image_recipe_dict,
    tiny_recipe_dict,
    tiny_t2i_recipe_dict,
    train_recipes,
    write_corpus,
)

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

PROMPT = "a small red circle at the top left"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with a text model, a class-conditional image model, a text-to-image model
    and a captioner, all trained through the CLI."""
    root = tmp_path_factory.mktemp("text-image")
    home = root / "home"
    text = tiny_recipe_dict(write_corpus(root / "corpus.txt"), name="tiny-text", steps=10)
    train_recipes(root, home, [text, tiny_image_recipe_dict("gan", name="tiny-digits", steps=4),
                               tiny_t2i_recipe_dict(), tiny_captioner_recipe_dict(),
                               tiny_t2i_recipe_dict("tiny-t2i-gan", steps=4, family="text-gan")])
    return home


@pytest.fixture(scope="module")
def key(home: Path) -> str:
    r = run_cli(["keys", "create", "tests"], home)
    assert r.returncode == 0, r.stderr
    return next(w for w in r.stdout.split() if w.startswith("gl_"))


@pytest.fixture(scope="module")
def server(home: Path, key: str) -> Iterator[Server]:
    srv = start_server(home)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server: Server, key: str) -> Iterator[Any]:
    with server.client(key) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: Server, key: str) -> Any:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def shape_png(i: int = 0) -> bytes:
    """Image ``i`` of a few drawn from the shapes world (32×32 RGB: the captioner, trained at
    16×16, resizes what it reads)."""
    from genloop.data.shapes import draw_shapes

    return png(draw_shapes(8, seed=123)[0][i])


def huge_png(side: int = 30_000) -> bytes:
    """A valid 1-bit PNG of side × side pixels (about 110 kB: rows of zeros compress well) that
    would take gigabytes to decode."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    row = b"\0" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def chat_image(url: str, model: str = "tiny-cap", **kw: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url}}]}], **kw}


def generations(http: Any) -> int:
    return len(http.get("/v1/generations", params={"limit": 500}).json()["data"])


# --- text → image -------------------------------------------------------------------------


def test_models_say_what_they_read(http):
    models = {m["name"]: m for m in http.get("/v1/models").json()["data"]}
    assert models["tiny-t2i"]["conditioning"] == "text" and models["tiny-t2i"]["modality"] == "image"
    assert models["tiny-t2i-gan"]["conditioning"] == "text"
    assert models["tiny-cap"]["conditioning"] == "image" and models["tiny-cap"]["modality"] == "text"
    assert models["tiny-digits"]["conditioning"] == "class"
    assert models["tiny-text"]["conditioning"] == "none"


@pytest.mark.parametrize("model", ["tiny-t2i", "tiny-t2i-gan"])
def test_openai_images_generate_draws_a_sentence_seeded_and_recorded(client, http, model):
    kw = dict(model=model, prompt=PROMPT, n=2, response_format="b64_json",
              extra_body={"seed": 11, "steps": 3})
    a, b = client.images.generate(**kw), client.images.generate(**kw)
    assert len(a.data) == 2
    pixels = [np.asarray(Image.open(io.BytesIO(base64.b64decode(d.b64_json)))) for d in a.data]
    assert pixels[0].shape == (16, 16, 3) and not np.array_equal(pixels[0], pixels[1])
    hashes = lambda r: [d.model_extra["generation_id"] for d in r.data]  # noqa: E731
    same = [http.get(f"/v1/generations/{g}").json()["content_hash"] for g in hashes(a) + hashes(b)]
    assert same[:2] == same[2:]  # same seed, same images (each PNG has its own provenance)
    assert a.data[0].revised_prompt == PROMPT and a.model_extra["unknown_words"] == []
    record = http.get(f"/v1/generations/{a.data[1].model_extra['generation_id']}").json()
    assert record["request"]["prompt"] == PROMPT and record["kind"] == "image"
    other = client.images.generate(**{**kw, "prompt": "a large blue square on the right"})
    assert [http.get(f"/v1/generations/{g}").json()["content_hash"] for g in hashes(other)] != same[:2]


def test_unknown_words_are_reported_and_recorded_never_a_crash(http):
    r = http.post("/v1/images/generations", json={
        "model": "tiny-t2i", "prompt": "a small xyzzy circle", "n": 1, "seed": 1, "steps": 2})
    assert r.status_code == 200, r.text
    unknown = r.json()["unknown_words"]
    assert unknown == ["xyzzy"]  # the words, not their pieces, whatever the tokenizer
    record = http.get(f"/v1/generations/{r.json()['data'][0]['generation_id']}").json()
    assert record["request"]["unknown_words"] == unknown


def test_class_models_keep_their_class_names(http):
    r = http.post("/v1/images/generations", json={"model": "tiny-digits", "prompt": "7", "n": 1})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["class"] == "7" and r.json()["unknown_words"] is None


# --- image → text -------------------------------------------------------------------------


def test_openai_chat_with_an_image_part_returns_its_caption(client, http):
    url = data_url(shape_png(3))
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Describe the picture."},
        {"type": "image_url", "image_url": {"url": url, "detail": "low"}}]}]
    a = client.chat.completions.create(model="tiny-cap", messages=messages, seed=5)
    b = client.chat.completions.create(model="tiny-cap", messages=messages, seed=5)
    caption = a.choices[0].message.content
    assert a.object == "chat.completion" and a.choices[0].message.role == "assistant"
    assert caption and caption == b.choices[0].message.content  # greedy by default
    assert a.model == "tiny-cap@1" and a.usage.completion_tokens > 0
    gid = a.choices[0].model_extra["generation_id"]
    record = http.get(f"/v1/generations/{gid}").json()
    assert record["output"] == caption and record["kind"] == "text"
    assert record["request"]["messages"][0]["content"] == "Describe the picture."
    # the image it read is stored by content and comes back as it was sent
    sent = np.asarray(Image.open(io.BytesIO(shape_png(3))))
    back = http.get(f"/v1/generations/{gid}/input")
    assert back.status_code == 200 and back.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(back.content))), sent)
    sampled = client.chat.completions.create(model="tiny-cap", messages=messages, seed=5, n=3,
                                             temperature=1.5)
    assert len(sampled.choices) == 3 and all(c.model_extra["generation_id"] for c in sampled.choices)


def test_an_idempotency_key_stands_for_the_image_too(http):
    first = chat_image(data_url(shape_png(4)), seed=1)
    headers = {"Idempotency-Key": "caption-once"}
    a = http.post("/v1/chat/completions", json=first, headers=headers)
    again = http.post("/v1/chat/completions", json=first, headers=headers)
    assert a.status_code == again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == a.json()
    other = http.post("/v1/chat/completions", json=chat_image(data_url(shape_png(5)), seed=1),
                      headers=headers)  # the same text, another image: not the same request
    assert other.status_code == 409, other.text


def test_the_chats_text_is_moderated_as_a_text_chats_is(http, home):
    import yaml

    (home / "moderation.yaml").write_text(yaml.safe_dump({"patterns": [
        {"category": "test", "pattern": "forbidden", "action": "block"}]}))
    try:
        before = generations(http)
        body = chat_image(data_url(shape_png(0)))
        body["messages"][0]["content"][0]["text"] = "a forbidden question"
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content"
        assert "refused by the moderation policy" in r.json()["error"]["message"]
        assert generations(http) == before
    finally:
        (home / "moderation.yaml").unlink()


# --- bad input: each a 400 naming the problem, nothing recorded ---------------------------


def _truncated() -> bytes:
    whole = shape_png(0)
    return whole[: len(whole) // 2]


BAD = [
    ("empty prompt", "images", {"model": "tiny-t2i", "prompt": ""}, "prompt: empty"),
    ("prompt over the encoder's length", "images", {"model": "tiny-t2i", "prompt": "a " * 300},
     "this model reads at most 64"),
    ("sentence to a class-conditional model", "images",
     {"model": "tiny-digits", "prompt": PROMPT}, "is not a class of this model"),
    ("class to a text-conditioned model", "images",
     {"model": "tiny-t2i", "prompt": PROMPT, "class": "3"}, "class: model tiny-t2i@1 draws"),
    ("data: URL that is not an image", "chat", chat_image(data_url(b"hello", "text/plain")),
     "holds text/plain, not an image"),
    ("image bytes that are not an image", "chat", chat_image(data_url(b"not a png at all")),
     "messages.0.content: image: not a PNG, JPEG"),
    ("truncated image", "chat", None, "truncated"),
    ("30,000 × 30,000 image", "chat", None, "pixels"),
    ("remote http image URL", "chat", chat_image("http://example.com/cat.png"),
     "does not support remote image URLs"),
    ("remote https image URL", "chat", chat_image("https://example.com/cat.png"),
     "does not support remote image URLs"),
    ("image to a text-only model", "chat", None, "reads text only, not images"),
    ("captions streamed", "chat", None, "its captions are not streamed"),
    ("logprobs of a caption", "chat", None, "logprobs: model tiny-cap@1 is a captioner"),
    ("beam search in a text model's chat", "chat",
     {"model": "tiny-text", "num_beams": 2, "messages": [{"role": "user", "content": "hi"}]},
     "num_beams: chat with text model tiny-text@1 does not search beams"),
    ("captioner without an image", "chat",
     {"model": "tiny-cap", "messages": [{"role": "user", "content": "hi"}]},
     "captions images: send one"),
]


@pytest.mark.parametrize("what,route,body,says", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_400_naming_the_problem_and_records_nothing(http, what, route, body, says):
    if body is None:
        body = {"truncated image": lambda: chat_image(data_url(_truncated())),
                "30,000 × 30,000 image": lambda: chat_image(data_url(huge_png())),
                "image to a text-only model": lambda: chat_image(data_url(shape_png(0)),
                                                                 model="tiny-text"),
                "captions streamed": lambda: chat_image(data_url(shape_png(0)), stream=True),
                "logprobs of a caption": lambda: chat_image(data_url(shape_png(0)),
                                                            logprobs=True)}[what]()
    before = generations(http)
    path = "/v1/images/generations" if route == "images" else "/v1/chat/completions"
    r = http.post(path, json=body)
    assert r.status_code == 400, (what, r.status_code, r.text)
    error = r.json()["error"]
    assert says in error["message"], (what, error)
    assert "\n" not in error["message"]
    assert generations(http) == before, f"{what}: something was recorded"


def test_an_image_over_the_body_limit_is_a_413_before_anything_is_read(http):
    before = generations(http)
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    r = http.post("/v1/chat/completions", json=chat_image(data_url(png(noise))))  # ~1.9 MB
    assert r.status_code == 413 and "body" in r.json()["error"]["message"]
    assert generations(http) == before


# --- the CLI ------------------------------------------------------------------------------


def test_cli_draws_a_sentence_into_a_grid_with_a_table(home, tmp_path):
    out = tmp_path / "grid.png"
    r = run_cli(["generate", "tiny-t2i", "--prompt", "a large blue triangle on the left zorp",
                 "-n", "4", "--seed", "2", "--steps", "2", "--out", str(out)], home)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and Image.open(out).size[0] > 16
    assert "a large blue triangle on the left zorp" in r.stdout  # the table's title
    rows = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("│")]
    assert [row.split("│")[2].strip() for row in rows] == ["2", "3", "4", "5"]  # image i: seed + i
    assert "unknown words" in r.stderr and "zorp" in r.stderr.split("unknown words")[1]
    # two prompts: a row each, the same seeds on the columns, one signed grid of all six
    rows = tmp_path / "rows.png"
    r = run_cli(["generate", "tiny-t2i", "--prompt", PROMPT, "--prompt", "a large blue square "
                 "on the right", "-n", "3", "--steps", "2", "--out", str(rows), "--json"], home)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [ln["prompt"] for ln in lines] == [PROMPT] * 3 + ["a large blue square on the right"] * 3
    assert [ln["seed"] for ln in lines[:3]] == [ln["seed"] for ln in lines[3:]]
    from genloop.generation.image import read_provenance

    chunks = read_provenance(rows)
    assert chunks["generations"] == [ln["id"] for ln in lines]
    assert chunks["request"]["prompt"] == [PROMPT, "a large blue square on the right"]
    bad = run_cli(["generate", "tiny-t2i", "--prompt", "", "-n", "1"], home)
    assert bad.returncode == 2 and "prompt: empty" in bad.stderr
    cls = run_cli(["generate", "tiny-digits", "--prompt", PROMPT, "-n", "1"], home)
    assert cls.returncode == 2 and "draws classes, not sentences" in cls.stderr


def test_cli_captions_an_image_file(home, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(shape_png(1))
    r = run_cli(["generate", "tiny-cap", "--image", str(photo), "--seed", "1"], home)
    assert r.returncode == 0, r.stderr
    caption = r.stdout.strip()
    assert caption
    beams = run_cli(["generate", "tiny-cap", "--image", str(photo), "--num-beams", "3", "--json"],
                    home)
    assert beams.returncode == 0, beams.stderr
    assert '"text"' in beams.stdout
    again = run_cli(["generate", "tiny-cap", "--image", str(photo), "--seed", "1"], home)
    assert again.stdout.strip() == caption  # greedy: the same caption
    text_model = run_cli(["generate", "tiny-text", "--image", str(photo)], home)
    assert text_model.returncode == 2 and "does not read images" in text_model.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    r = run_cli(["generate", "tiny-cap", "--image", str(bad)], home)
    assert r.returncode == 2 and "not a PNG, JPEG" in r.stderr
