"""OpenAI's image content parts: data: URLs read, remote URLs refused (never fetched), the image
kept apart from the text a chat message holds."""

from __future__ import annotations

import base64

import pytest

from genloop.errors import validation_message
from genloop.generation.chat import ChatMessage
from genloop.generation.content_parts import data_url_bytes, image_part_bytes, split_image_parts

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 8  # the bytes only: decoding is generation/image.py's


def url(data: bytes = PNG, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_a_data_url_gives_its_bytes() -> None:
    assert data_url_bytes(url()) == PNG
    assert data_url_bytes(url(mime="image/jpeg").replace("base64,", "charset=x;base64,")) == PNG
    wrapped = url()[:30] + "\n" + url()[30:]  # base64 broken over lines still decodes
    assert data_url_bytes(wrapped) == PNG


@pytest.mark.parametrize("bad,says", [
    ("http://example.com/cat.png", "does not support remote image URLs (it never fetches one)"),
    ("https://example.com/cat.png", "does not support remote image URLs"),
    ("file:///etc/passwd", "not a data: URL"),
    ("ftp://x/y.png", "not a data: URL"),
    ("cat.png", "not a data: URL"),
    ("data:text/plain;base64,aGVsbG8=", "holds text/plain, not an image"),
    ("data:,hello", "holds text/plain, not an image"),
    ("data:image/png,rawbytes", "must be base64"),
    ("data:image/png;base64,@@@@", "base64 does not decode"),
    ("data:image/png;base64,", "is empty"),
    ("data:image/png;base64", "data:<media type>;base64,<data>"),
])
def test_anything_but_an_image_data_url_is_refused_naming_why(bad: str, says: str) -> None:
    with pytest.raises(ValueError) as e:
        data_url_bytes(bad)
    assert says in str(e.value)


def test_an_image_part_accepts_openais_shapes_and_refuses_others() -> None:
    assert image_part_bytes({"type": "image_url", "image_url": {"url": url(), "detail": "low"}}) == PNG
    assert image_part_bytes({"type": "image_url", "image_url": url()}) == PNG  # a bare URL
    for bad in ({"type": "image_url"}, {"type": "image_url", "image_url": {"uri": url()}},
                {"type": "image_url", "image_url": {"url": url()}, "extra": 1},
                {"type": "image_url", "image_url": {"url": url(), "detail": "huge"}}):
        with pytest.raises(ValueError):
            image_part_bytes(bad)


def test_split_keeps_the_text_parts_and_the_images_in_order() -> None:
    parts = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": url(b"one")}},
             {"type": "image_url", "image_url": {"url": url(b"two")}}]
    rest, images = split_image_parts(parts)
    assert rest == parts[:1] and images == [b"one", b"two"]
    assert split_image_parts("plain") == ("plain", [])


def test_a_chat_message_holds_its_text_and_its_images_apart() -> None:
    m = ChatMessage(role="user", content=[{"type": "text", "text": "describe"},
                                          {"type": "image_url", "image_url": {"url": url()}}])
    assert m.content == "describe" and m.images == [PNG]
    # what a record keeps is the text (the image is recorded by its content hash, by the captioner)
    assert m.model_dump(exclude_none=True) == {"role": "user", "content": "describe"}
    assert ChatMessage(role="user", content="hi").images == []


def test_a_bad_image_part_names_the_message_and_the_part() -> None:
    from genloop.serving.schemas import ChatBody

    with pytest.raises(ValueError) as e:
        ChatBody(model="m", messages=[{"role": "user", "content": "hi"}, {"role": "user", "content": [
            {"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])
    message = validation_message(e.value)
    assert message.startswith("messages.1.content: part 1 (image_url): this server does not "
                              "support remote image URLs")
