"""Image → text: a typed caption request in, captions out — seeded per choice, like text.

A captioner (a family with ``conditioning="image"``) reads one image and writes its caption:
greedy by default (temperature 0), sampled (temperature, top-k, top-p) or by beam search
(``num_beams``). Choice i of a request seeded ``seed`` is drawn with its own generator seeded
``choice_seed(seed, i)``, the rule every face shares, so a recorded caption replays alone from
its seed and the stored input image (``generation/service.py``, ``CaptionModel``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genloop.config import settings
from genloop.data.image_files import MAX_FILE_BYTES
from genloop.errors import CorruptArtifact, InvalidInput, NotFound
from genloop.generation.image import content_hash as pixels_hash
from genloop.generation.image import decode_image, read_pixels
from genloop.generation.text import (
    TextOutput,
    check_choice_seeds,
    choice_seed,
    content_hash,
    resolve_seed,
)
from genloop.models.family import CaptionRequest, Family
from genloop.tokenizers import Tokenizer, end_ids

MAX_CAPTIONS = 64


class CaptionGenRequest(BaseModel):
    """What a face asks of a captioner (names shared with text: ``seed``, ``temperature``...)."""

    model_config = ConfigDict(extra="forbid")

    num_samples: int = Field(1, ge=1, le=MAX_CAPTIONS, description="captions of the image")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="None = a fresh random seed")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 = greedy")
    top_k: int | None = Field(None, ge=1, le=1_000_000)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_new_tokens: int = Field(32, ge=1, le=1024, description="tokens per caption at most")
    num_beams: int = Field(1, ge=1, le=16,
                           description="beam search over this many hypotheses (deterministic: "
                                       "temperature and top-k/p are not used); 1 = sampling")

    @model_validator(mode="after")
    def _fits(self) -> CaptionGenRequest:
        if self.num_beams > 1 and self.num_samples > 1:
            raise ValueError("num_beams: beam search returns one caption (its best hypothesis): "
                             "use num_samples=1")
        check_choice_seeds(self.seed, self.num_samples)
        return self


def caption_request(request: CaptionGenRequest, images: torch.Tensor) -> CaptionRequest:
    """The family's request for ``images`` (B, C, H, W) under ``request``'s settings."""
    return CaptionRequest(images=images, max_new_tokens=request.max_new_tokens,
                          temperature=request.temperature, top_k=request.top_k, top_p=request.top_p,
                          num_beams=request.num_beams)


def generate_captions(family: Family, network: torch.nn.Module, tokenizer: Tokenizer,
                      image: torch.Tensor, request: CaptionGenRequest) -> list[TextOutput]:
    """``request.num_samples`` captions of one ``image`` (C, H, W) in [-1, 1] (``image_tensor``
    gives it at the model's size), choice i seeded ``choice_seed(seed, i)``; every choice runs in
    one batch, each drawing from its own generator only. ``family`` reads images (the kinds
    registry, ``generation/kinds.py``, sends only those here)."""
    if image.ndim != 3:
        raise InvalidInput(f"image: one image (C, H, W) at a time, got shape {tuple(image.shape)}")
    seed = resolve_seed(request.seed, request.num_samples)
    n = request.num_samples
    seeds = [choice_seed(seed, i) for i in range(n)]
    device = next(network.parameters()).device
    images = image.to(device)[None].expand(n, -1, -1, -1)
    network.eval()
    t0 = time.perf_counter()
    ids = family.sample(network, caption_request(request, images),
                        [torch.Generator().manual_seed(s) for s in seeds])
    elapsed = time.perf_counter() - t0
    limit = min(request.max_new_tokens, getattr(network.config, "block_size", request.max_new_tokens))
    ends = end_ids(tokenizer)
    outputs = []
    for tokens, s in zip(ids, seeds, strict=True):
        cut = next((i for i, t in enumerate(tokens) if t in ends), None)  # another end id ends it too
        kept = tokens if cut is None else tokens[:cut]
        text = tokenizer.decode(kept)
        finish = "stop" if cut is not None or len(tokens) < limit else "length"
        outputs.append(TextOutput(prompt="", text=text, tokens=len(kept), finish_reason=finish,
                                  seed=s, content_hash=content_hash(text),
                                  timings={"total_s": elapsed}))
    return outputs


def input_pixels(image: bytes | np.ndarray | str | Path) -> np.ndarray:
    """An image to caption as (H, W, 1 or 3) uint8: decoded safely (``decode_image``) when it is
    bytes or a file, checked when it is pixels."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] not in (1, 3) or image.dtype != np.uint8:
            raise InvalidInput(f"image: pixels of shape {image.shape} and dtype {image.dtype}; "
                               "expected (H, W, 1 or 3) uint8")
        return image
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise InvalidInput(f"image: no such file {path}")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InvalidInput(f"image: {path} is over the {MAX_FILE_BYTES // 2**20} MiB limit")
        image = path.read_bytes()
    return decode_image(bytes(image))


def stored_input(digest: str) -> np.ndarray:
    """The input image a caption's record names by its content hash, read back and checked."""
    path = settings().generations_dir / digest[:2] / f"{digest}.png"
    if not path.is_file():
        raise NotFound(f"the input image {digest[:16]}… of this caption is gone from the workspace")
    pixels = read_pixels(path)
    if pixels_hash(pixels) != digest:
        raise CorruptArtifact(f"{path}: its pixels do not match their content hash")
    return pixels


__all__ = ["CaptionGenRequest", "caption_request", "generate_captions", "input_pixels", "stored_input"]
