"""OpenAI's image content parts in a chat message: ``{"type": "image_url", "image_url": {"url":
"data:image/png;base64,..."}}``, read into the image's bytes.

Only ``data:`` URLs are read: the server never fetches a URL (a remote ``http(s)`` one is refused
with a message that says how to send the image instead), so a request cannot make it reach another
machine, and what is captioned is exactly what was sent. The bytes are checked as an image (format,
truncation, pixel limit) where they are decoded (``generation/image.py`` ``decode_image``); here
only the part's shape and the URL are: its media type must be an image's, its payload base64.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

IMAGE_PART = "image_url"
DETAILS = ("auto", "low", "high")  # OpenAI's; accepted, and meaningless for a small captioner
# data:[<media type>][;param=value]*[;base64],<data>  (RFC 2397)
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.S)
HOW = "send the image itself as a data: URL (data:image/png;base64,...)"


def data_url_bytes(url: str) -> bytes:
    """The bytes of an image ``data:`` URL; ValueError naming the problem for anything else (a
    remote URL above all: it is never fetched)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        raise ValueError(f"this server does not support remote image URLs (it never fetches "
                         f"one): {HOW}")
    if scheme != "data":
        raise ValueError(f"not a data: URL ({url[:40]!r}): {HOW}")
    m = _DATA_URL.match(url)
    if m is None:
        raise ValueError("a data: URL is data:<media type>;base64,<data>")
    mime = m["mime"].strip().lower() or "text/plain"  # RFC 2397's default
    if not mime.startswith("image/"):
        raise ValueError(f"the data: URL holds {mime}, not an image")
    if "base64" not in [p.strip().lower() for p in m["params"].split(";")]:
        raise ValueError("the data: URL's image must be base64 (data:image/png;base64,...)")
    try:
        data = base64.b64decode(re.sub(r"\s+", "", m["data"]), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the data: URL's base64 does not decode") from None
    if not data:
        raise ValueError("the data: URL's image is empty")
    return data


def image_part_bytes(part: dict[str, Any]) -> bytes:
    """The image of one ``image_url`` part (its ``detail`` accepted and ignored)."""
    if set(part) - {"type", IMAGE_PART}:
        raise ValueError('an image part is {"type": "image_url", "image_url": {"url": "data:..."}}')
    spec = part.get(IMAGE_PART)
    if isinstance(spec, str):  # some clients send the URL itself
        spec = {"url": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("url"), str) or set(spec) - {"url", "detail"}:
        raise ValueError('an image part is {"type": "image_url", "image_url": {"url": "data:..."}}')
    if spec.get("detail", "auto") not in DETAILS:
        raise ValueError(f"image_url.detail: one of {', '.join(DETAILS)}")
    return data_url_bytes(spec["url"])


def split_image_parts(content: Any) -> tuple[Any, list[bytes]]:
    """A message's content without its image parts, and their images in order (a string, or a
    list without image parts, comes back as it is with none). ValueError names the part."""
    if not isinstance(content, list):
        return content, []
    rest, images = [], []
    for i, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") == IMAGE_PART:
            try:
                images.append(image_part_bytes(part))
            except ValueError as e:
                raise ValueError(f"content part {i} (image_url): {e}") from None
        else:
            rest.append(part)
    return rest, images
