"""Captioning through the one generation path: an image in (bytes, pixels or a file), safely
decoded, captions out — seeded per choice, moderated as text outputs, recorded with the stored
input image, and replayed from the record alone. Bad images are refused and nothing is recorded.

The model is a tiny captioner trained here in seconds on four 8×8 colour images, one lit quadrant
each, captioned by where the light is ("top left", ...): so a caption is right or wrong."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genloop.config import settings
from genloop.errors import InvalidInput
from genloop.generation import service
from genloop.generation.caption import CaptionGenRequest
from genloop.generation.image import content_hash, decode_image, image_tensor
from genloop.generation.kinds import CAPTIONS, generates
from genloop.generation.text import content_hash as text_hash
from genloop.models.family import ImageTextBatch
from genloop.models.modeldir import ModelDir
from genloop.models.registry import FAMILIES
from genloop.store import Store
from genloop.tokenizers import CharTokenizer

WHERE = ["top left", "top right", "bottom left", "bottom right"]
NOISE = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # compresses badly


def quadrant(i: int, side: int = 8) -> np.ndarray:
    """(side, side, 3) uint8: black with quadrant i lit orange."""
    pixels = np.zeros((side, side, 3), dtype=np.uint8)
    r, c, h = *divmod(i, 2), side // 2
    pixels[r * h:(r + 1) * h, c * h:(c + 1) * h] = (250, 140, 20)
    return pixels


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width × height RGB pixels, then a tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def trained() -> tuple[object, object, CharTokenizer]:
    family = FAMILIES["captioner"]
    tokenizer = CharTokenizer.train(WHERE)
    config = family.make_config("tiny", image_size=8, channels=3, vocab_size=tokenizer.vocab_size,
                                block_size=16)
    torch.manual_seed(0)
    model = family.build(config)
    images = torch.stack([image_tensor(quadrant(i), config) for i in range(4)])
    ids = [tokenizer.encode(w) for w in WHERE]
    width = max(map(len, ids))
    captions = torch.tensor([row + [tokenizer.eos_id] * (width - len(row)) for row in ids])
    mask = torch.tensor([[j < len(row) for j in range(width)] for row in ids])
    batch = ImageTextBatch(images, torch.zeros(4, dtype=torch.long), torch.Generator(),
                           captions=captions, caption_mask=mask)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss = family.loss(model, batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(before)
    return config, model.eval(), tokenizer


@pytest.fixture
def captioner(workspace: Path, one_thread, trained) -> str:  # noqa: ARG001
    config, model, tokenizer = trained
    family = FAMILIES["captioner"]
    staged = ModelDir(settings().models_dir / ".staging-cap")
    staged.path.mkdir(parents=True)
    staged.write_network(family, config, model)
    staged.write_tokenizer(tokenizer)
    service._CACHE.clear()
    yield Store().register_model("quadrants", staged.path, family="captioner").ref
    service._CACHE.clear()


def test_a_captioner_generates_captions(captioner):
    model = service.load(captioner)
    assert isinstance(model, service.CaptionModel)
    assert generates(model.family) is CAPTIONS and CAPTIONS.output == "text"


def test_each_image_gets_its_caption_recorded_with_its_input(captioner):
    model = service.load(captioner)
    for i, where in enumerate(WHERE):
        out = model.generate(png(quadrant(i)), seed=3)
        assert [o.text for o in out] == [where]
        assert out[0].finish_reason == "stop" and out[0].seed == 3
    # pixels, a file and a larger picture of the same scene (resized to the model's 8×8) agree
    path = Path(settings().home) / "photo.png"
    path.write_bytes(png(quadrant(1, side=32)))
    assert model.generate(path)[0].text == model.generate(quadrant(1))[0].text == WHERE[1]
    records = Store().list_generations(limit=100)
    assert len(records) == 6
    record = [r for r in records if r.output == WHERE[0]][0]
    assert record.kind == "text" and record.file is None and record.seed == 3
    digest = record.request["image"]["content_hash"]
    assert digest == content_hash(quadrant(0))
    assert record.request["temperature"] == 0.0 and record.content_hash == text_hash(WHERE[0])
    again = service.replay(record.id)
    assert again.matches and again.output == WHERE[0]


def test_sampled_captions_are_seeded_per_choice_and_replay(captioner):
    model = service.load(captioner)
    many = model.generate(png(quadrant(2)), num_samples=4, seed=10, temperature=2.0)
    assert [o.seed for o in many] == [10, 11, 12, 13]
    alone = model.generate(png(quadrant(2)), num_samples=1, seed=12, temperature=2.0)
    assert alone[0].text == many[2].text
    for record in Store().list_generations(limit=10):
        assert service.replay(record.id).matches
    beam = model.generate(png(quadrant(3)), num_beams=3)
    assert beam[0].text == WHERE[3]
    with pytest.raises(InvalidInput, match="num_beams"):
        model.generate(png(quadrant(3)), num_beams=3, num_samples=2)


@pytest.mark.parametrize("data,problem", [
    (b"", "empty"),
    (b"GIF? no, plain text", "not a PNG, JPEG, BMP, GIF or WebP image"),
    (png(NOISE)[:len(png(NOISE)) // 2], "truncated"),
    (png_header(30_000, 30_000), "900,000,000 pixels, over the limit of 16,777,216"),
    (png_header(5_000, 5_000), "5000x5000 pixels, over the limit"),
])
def test_bad_images_are_refused_and_nothing_is_recorded(captioner, data, problem):
    model = service.load(captioner)
    with pytest.raises(InvalidInput, match=problem) as e:
        model.generate(data)
    assert "\n" not in str(e.value)
    assert Store().count_generations(captioner) == 0


def test_decode_image_reads_modes_and_checks_the_header_first():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    assert decode_image(buf.getvalue()).shape == (8, 8, 1)
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 128  # half transparent: composited over black
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    assert decode_image(buf.getvalue())[0, 0].tolist() == [100, 100, 100]
    assert decode_image(png(quadrant(0)), max_pixels=64).shape == (8, 8, 3)
    with pytest.raises(InvalidInput, match="8x8 pixels, over the limit of 63"):
        decode_image(png(quadrant(0)), max_pixels=63)


def test_image_tensor_fits_the_model(trained):
    config = trained[0]
    x = image_tensor(quadrant(0, side=32), config)
    assert x.shape == (3, 8, 8) and x.min() >= -1 and x.max() <= 1
    grey = image_tensor(quadrant(0)[..., :1], config)  # grey repeated into colour
    assert grey.shape == (3, 8, 8) and torch.equal(grey[0], grey[2])
    one = FAMILIES["captioner"].make_config("tiny", image_size=8, channels=1, vocab_size=8)
    assert image_tensor(quadrant(0), one).shape == (1, 8, 8)


def test_captions_are_moderated_as_text_outputs(captioner, workspace):
    workspace.joinpath("moderation.yaml").write_text(
        "blocklists:\n  - {category: where, terms: [left], action: redact}\n"
        "  - {category: banned, terms: [bottom right]}\n")
    model = service.load(captioner)
    out = model.generate(png(quadrant(0)), seed=1)[0]
    assert "left" not in out.text and out.text.startswith("top")
    withheld = model.generate(png(quadrant(3)), seed=1)[0]
    assert withheld.text == "" and withheld.finish_reason == "content_filter"
    last = Store().list_generations(limit=1)[0]
    assert last.output == "" and last.safety["withheld"] is True
    assert service.replay(last.id).matches  # replays as withheld


def test_a_caption_request_is_typed():
    with pytest.raises(ValueError, match="num_beams"):
        CaptionGenRequest(num_beams=2, num_samples=2)
    assert CaptionGenRequest().temperature == 0.0  # greedy by default
