"""Image generation: a typed request in, images out — seeded, class-conditional, guided, and
written as PNGs that carry their own provenance.

Every PNG genloop hands out holds text chunks (``genloop:model``, ``genloop:seed``,
``genloop:request``, ``genloop:content_hash``, and for one generation ``genloop:generation``) so a
file found on its own still says which model version, seed and parameters made it;
``read_provenance`` reads them back. The content hash is the sha256 of the raw pixels (H, W, C
uint8), so it does not depend on PNG compression. The workspace stores each distinct image once
(``save_pixels``: content-addressed, no text chunks); a generation's PNG is those pixels with that
generation's own chunks, made when it is asked for.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genloop.atomic import atomic_write_bytes
from genloop.data.image_files import PIL_FORMATS, resize_square, to_l_or_rgb
from genloop.errors import InvalidInput
from genloop.generation.text import check_choice_seeds, choice_seed, resolve_seed
from genloop.models.family import (
    Family,
    Generators,
    ImageModelConfig,
    ImageRequest,
    Sampler,
    fast_bf16,
)
from genloop.models.text_encoder import tokenize_prompts
from genloop.tokenizers import Tokenizer, unknown_words

MAX_IMAGES = 256


class ImageGenRequest(BaseModel):
    """What a face asks of an image model (names shared with every family: ``seed``, ``steps``...)."""

    model_config = ConfigDict(extra="forbid")

    num_samples: int = Field(16, ge=1, le=MAX_IMAGES, description="images to draw")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="None = a fresh random seed")
    class_label: int | str | None = Field(
        None, description="class index or name for a conditional model; None = classes in turn"
    )
    prompt: str | None = Field(None, max_length=1000,
                               description="the sentence a text-conditioned model draws")
    guidance_scale: float = Field(2.0, ge=0.0, le=20.0,
                                  description="classifier-free guidance (conditional diffusion); 1 = none")
    steps: int | None = Field(None, ge=1, le=1000,
                              description="diffusion steps; None = 50 (DDIM), T (DDPM), 20 (DPM-Solver++)")
    sampler: Sampler = Field("ddim", description="ddim, ddpm, or dpmpp_2m (DPM-Solver++(2M): 10-20 steps)")
    interpolate: bool = Field(False, description="GAN/VAE: walk the latent space between two random points")

    @model_validator(mode="after")
    def _choice_seeds_fit(self) -> ImageGenRequest:
        check_choice_seeds(self.seed, self.num_samples)  # image i is seeded seed + i
        return self


@dataclass
class ImageOutput:
    images: np.ndarray  # (B, H, W, C) uint8
    labels: list[int | None]
    seed: int  # the request's seed
    timings: dict[str, float] = field(default_factory=dict)
    # image i's own seed: choice_seed(seed, i); an interpolation is one draw, all the request's
    seeds: list[int] = field(default_factory=list)
    # the prompt's words the model's tokenizer does not know (read as <unk>), each once
    unknown_words: list[str] = field(default_factory=list)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [−1, 1] → (B, H, W, C) uint8."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def class_index(label: int | str | None, class_names: list[str]) -> int | None:
    """A class given by index or by name (case-insensitive) → its index; unknown ones are errors."""
    if label is None:
        return None
    if isinstance(label, int) or (isinstance(label, str) and label.strip().isdigit()
                                  and label.strip() not in class_names):
        i = int(label)
        if not 0 <= i < len(class_names):
            raise InvalidInput(
                f"class_label {i} is out of range: this model has classes 0..{len(class_names) - 1}"
            )
        return i
    lowered = [c.lower() for c in class_names]
    if label.lower() in lowered:
        return lowered.index(label.lower())
    shown = ", ".join(class_names[:12]) + (", ..." if len(class_names) > 12 else "")
    raise InvalidInput(f"class_label {label!r} is not a class of this model ({shown})")


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents a, b (D,) at fractions t (N,) → (N, D) (White 2016)."""
    omega = torch.acos(torch.clamp(torch.dot(a / a.norm(), b / b.norm()), -1, 1))
    so = torch.sin(omega)
    if so.abs() < 1e-6:
        return (1 - t)[:, None] * a + t[:, None] * b
    return (torch.sin((1 - t) * omega) / so)[:, None] * a + (torch.sin(t * omega) / so)[:, None] * b


def text_condition(family: Family, config: ImageModelConfig, request: ImageGenRequest,
                   tokenizer: Tokenizer | None) -> tuple[torch.Tensor | None, torch.Tensor | None, list[str]]:
    """The request's prompt as every image's token ids and mask (text-conditioned families),
    with its unknown words; (None, None, []) for the others, which refuse a prompt."""
    n = request.num_samples
    if family.reads != "prompt":
        if request.prompt is not None:
            what = ("is class-conditional: name a class (class_label)" if family.reads == "class_label"
                    else "does not read text")
            raise InvalidInput(f"prompt: a {family.name} model {what}")
        return None, None, []
    if request.class_label is not None:
        raise InvalidInput(f"class_label: a {family.name} model draws from a sentence (prompt), "
                           "not a class")
    if request.prompt is None:
        raise InvalidInput(f"prompt: a {family.name} model draws from a sentence: give one")
    if tokenizer is None:
        raise InvalidInput(f"prompt: this {family.name} model has no tokenizer to read it")
    max_tokens = config.text_encoder.max_tokens  # type: ignore[attr-defined]
    ids, mask = tokenize_prompts(tokenizer, [request.prompt], max_tokens)
    return ids.expand(n, -1), mask.expand(n, -1), unknown_words(tokenizer, request.prompt)


@dataclass
class ImageDraw:
    """One request made ready to sample: every image's generator, class or prompt, and the
    family's ``ImageRequest`` for them. Draws of one model whose ``batch_key`` is equal may be
    sampled together (``sample_draws``): each image still draws only from its own generator."""

    request: ImageGenRequest  # its seed resolved
    sample: ImageRequest
    generators: Generators
    labels: torch.Tensor | None
    seeds: list[int]
    unknown_words: list[str]

    @property
    def batch_key(self) -> tuple | None:
        """What draws sampled in one run must share (steps, sampler, guidance; a prompt's token
        width, so the text encoder reads the same tensors as alone); None: this draw runs alone
        (an interpolation is one draw from one generator)."""
        if self.request.interpolate or not isinstance(self.generators, list):
            return None
        width = None if self.sample.prompt_ids is None else self.sample.prompt_ids.shape[1]
        return (self.sample.steps, self.sample.sampler, self.sample.guidance_scale,
                self.labels is None, width)


def prepare_images(
    family: Family, config: ImageModelConfig, class_names: list[str], request: ImageGenRequest,
    tokenizer: Tokenizer | None = None,
) -> ImageDraw:
    """Everything ``generate_images`` decides before the network runs (see there)."""
    seed = resolve_seed(request.seed, request.num_samples)
    request = request.model_copy(update={"seed": seed})
    n = request.num_samples
    prompt_ids, prompt_mask, unknown = text_condition(family, config, request, tokenizer)
    wanted = class_index(request.class_label, class_names) if prompt_ids is None else None
    labels: torch.Tensor | None = None
    if config.conditional:
        labels = (torch.full((n,), wanted) if wanted is not None
                  else torch.arange(n) % max(config.num_classes, 1))
    elif wanted is not None:
        raise InvalidInput("class_label: this model is not class-conditional")
    latents = None
    generators: Generators
    if request.interpolate:
        if family.latent_shape is None:
            raise InvalidInput(f"interpolate: a {family.name} model has no latent space to walk")
        g = torch.Generator().manual_seed(seed)
        shape = family.latent_shape(config)
        a, b = torch.randn(math.prod(shape), generator=g), torch.randn(math.prod(shape), generator=g)
        latents = slerp(a, b, torch.linspace(0, 1, n)).reshape(n, *shape)
        if labels is not None and wanted is None:
            labels = torch.full((n,), int(torch.randint(0, config.num_classes, (1,), generator=g)))
        generators, seeds = g, [seed] * n
    else:
        seeds = [choice_seed(seed, i) for i in range(n)]
        generators = [torch.Generator().manual_seed(s) for s in seeds]
    sample = ImageRequest(num_samples=n, labels=labels, steps=request.steps, sampler=request.sampler,
                          guidance_scale=request.guidance_scale, latents=latents,
                          prompt_ids=prompt_ids, prompt_mask=prompt_mask)
    return ImageDraw(request, sample, generators, labels, seeds, unknown)


def _cat(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if parts[0] is None else torch.cat([p for p in parts if p is not None])


def sample_draws(family: Family, network: torch.nn.Module, draws: list[ImageDraw]) -> list[torch.Tensor]:
    """Sample several draws of one model in one run of ``family.sample`` (their images stacked,
    so the network runs once per step on all of them), each draw's images back, (B, C, H, W)
    in [−1, 1]. The draws must share a ``batch_key`` (one draw may have none)."""
    assert len(draws) == 1 or len({d.batch_key for d in draws} - {None}) == 1 and all(
        d.batch_key is not None for d in draws), "draws sampled together share a batch key"
    if len(draws) == 1:
        req, generators = draws[0].sample, draws[0].generators
    else:
        first = draws[0].sample
        req = ImageRequest(num_samples=sum(d.sample.num_samples for d in draws),
                           labels=_cat([d.sample.labels for d in draws]), steps=first.steps,
                           sampler=first.sampler, guidance_scale=first.guidance_scale,
                           prompt_ids=_cat([d.sample.prompt_ids for d in draws]),
                           prompt_mask=_cat([d.sample.prompt_mask for d in draws]))
        generators = [g for d in draws for g in d.generators]  # type: ignore[union-attr]
    network.eval()
    # bf16 where the CPU has it natively (about 2× faster convolutions); the noise stays fp32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast_bf16("cpu")):
        x = family.sample(network, req, generators).float()
    return list(x.split([d.sample.num_samples for d in draws]))


def finish_images(draw: ImageDraw, x: torch.Tensor, timings: dict[str, float]) -> ImageOutput:
    """A draw's sampled images as its ``ImageOutput``."""
    n = draw.sample.num_samples
    labels: list[int | None] = draw.labels.tolist() if draw.labels is not None else [None] * n
    assert draw.request.seed is not None
    return ImageOutput(to_uint8(x), labels, draw.request.seed, timings, draw.seeds, draw.unknown_words)


def generate_images(
    family: Family, config: ImageModelConfig, network: torch.nn.Module, class_names: list[str],
    request: ImageGenRequest, tokenizer: Tokenizer | None = None,
) -> ImageOutput:
    """Draw ``request.num_samples`` images; all randomness comes from the request's seed.

    Image i is drawn with its own generator seeded ``choice_seed(seed, i)``, the rule of text's
    choices, and class ``class_label`` (or, on a conditional model without one, class i mod the
    number of classes): so it is the image a request of one with that seed and class draws,
    while the network still runs on the whole batch (and, through ``generation/image_batching``,
    on other requests' images too). An interpolation is one draw for the whole walk (two end
    points and, without a class, one class), seeded by the request's seed. A text-conditioned
    family draws every image from ``prompt``, read by ``tokenizer`` (the model's own); words it
    does not know are read as ``<unk>`` and listed in ``unknown_words``.
    """
    return run_draw(family, network, prepare_images(family, config, class_names, request, tokenizer))


def run_draw(family: Family, network: torch.nn.Module, draw: ImageDraw) -> ImageOutput:
    """One prepared draw sampled alone."""
    t0 = time.perf_counter()
    x = sample_draws(family, network, [draw])[0]
    total = time.perf_counter() - t0
    n = draw.sample.num_samples
    return finish_images(draw, x, {"total_s": total, "images_per_s": n / max(total, 1e-9)})


# --- images sent to a model (a captioner reads them) -------------------------------------------

MAX_INPUT_PIXELS = 16_777_216  # 4096²: an input image's pixels, read from its header


def decode_image(data: bytes, *, max_pixels: int = MAX_INPUT_PIXELS) -> np.ndarray:
    """Untrusted image bytes (PNG, JPEG, BMP, GIF, WebP) → (H, W, 1 or 3) uint8, or an InvalidInput
    naming the problem: not an image, truncated, or over ``max_pixels`` — the size is read from the
    header before anything is decoded, so a small file claiming 30,000×30,000 pixels is refused
    without allocating them. Modes as ``data/image_files.py``: grey stays grey, alpha is
    composited over black, the rest becomes RGB; a GIF's first frame."""
    import warnings
    from collections import Counter

    from PIL import ImageFile, UnidentifiedImageError

    if not data:
        raise InvalidInput("image: empty (no bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit is stricter
            img = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except UnidentifiedImageError:
        raise InvalidInput("image: not a PNG, JPEG, BMP, GIF or WebP image") from None
    except Image.DecompressionBombError as e:  # PIL's own, far larger limit: its message has the count
        claimed = re.search(r"\((\d+) pixels\)", str(e))
        count = f"{int(claimed.group(1)):,} pixels" if claimed else "too many pixels"
        raise InvalidInput(f"image: {count}, over the limit of {max_pixels:,}") from None
    except Exception as e:  # noqa: BLE001 - a broken header may make a decoder raise anything
        if "truncat" in str(e).lower():
            raise InvalidInput("image: truncated (the file ends before its pixels do)") from None
        raise InvalidInput(f"image: unreadable header ({type(e).__name__})") from None
    w, h = img.size  # from the header: nothing decoded yet
    if w * h > max_pixels:
        raise InvalidInput(f"image: {w}x{h} pixels, over the limit of {max_pixels:,}")
    if w < 1 or h < 1:
        raise InvalidInput(f"image: {w}x{h} pixels, nothing to read")
    assert not ImageFile.LOAD_TRUNCATED_IMAGES, "a truncated image must be refused, not padded"
    try:
        img.load()
        img = to_l_or_rgb(img, Counter())
        pixels = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if "truncat" in str(e).lower() or isinstance(e, EOFError):
            raise InvalidInput("image: truncated (the file ends before its pixels do)") from None
        raise InvalidInput(f"image: cannot decode it ({str(e).split(' <_io.', 1)[0]})") from None
    return pixels[..., None] if pixels.ndim == 2 else pixels


def image_tensor(pixels: np.ndarray, config: ImageModelConfig) -> torch.Tensor:
    """(H, W, 1 or 3) uint8 pixels → (C, S, S) float in [-1, 1] for a model of ``config``:
    grey or colour to its channels (grey repeated; colour to luma, ITU-R 601), scaled so the
    shorter side is its ``image_size`` and centre-cropped (bicubic; ``data/image_files.py``)."""
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3) or pixels.dtype != np.uint8:
        raise InvalidInput(f"image: pixels of shape {pixels.shape} and dtype {pixels.dtype}; "
                           "expected (H, W, 1 or 3) uint8")
    img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    want = "L" if config.channels == 1 else "RGB"
    if config.channels not in (1, 3):
        raise InvalidInput(f"image: this model reads {config.channels}-channel images")
    img = resize_square(img.convert(want), config.image_size)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).float() / 127.5 - 1.0
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1).contiguous()


# --- PNG files --------------------------------------------------------------------------------


def content_hash(pixels: np.ndarray) -> str:
    """sha256 of the raw pixels, with the shape, so the hash names the image not its encoding."""
    h = hashlib.sha256(str(pixels.shape).encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


def grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """(B, H, W, C) uint8 → one (H', W', C) mosaic, ``columns`` wide (default: near-square)."""
    B, H, W, C = images.shape
    cols = columns or math.ceil(math.sqrt(B))
    rows = math.ceil(B / cols)
    out = np.zeros((rows * (H + pad) + pad, cols * (W + pad) + pad, C), dtype=np.uint8)
    for i in range(B):
        r, c = divmod(i, cols)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        out[top : top + H, left : left + W] = images[i]
    return out


def png_bytes(pixels: np.ndarray, provenance: dict[str, Any] | None = None, scale: int = 1) -> bytes:
    """Encode (H, W, C) uint8 as PNG with ``genloop:*`` text chunks (values JSON-encoded)."""
    img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    info = PngImagePlugin.PngInfo()
    for key, value in (provenance or {}).items():
        info.add_text(f"genloop:{key}", value if isinstance(value, str) else json.dumps(value))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(path: Path, pixels: np.ndarray, provenance: dict[str, Any] | None = None,
             scale: int = 1, sign: Callable[[bytes], bytes] | None = None) -> Path:
    """Write a PNG atomically (temp + rename): a reader never sees half a file. ``sign``: what
    turns the PNG into a signed one (``generation/provenance.py``), after the text chunks."""
    png = png_bytes(pixels, provenance, scale)
    atomic_write_bytes(Path(path), sign(png) if sign else png)
    return Path(path)


def save_grid(images: torch.Tensor | np.ndarray, path: Path, provenance: dict[str, Any] | None = None,
              columns: int | None = None, sign: Callable[[bytes], bytes] | None = None) -> Path:
    """A sample grid as PNG; small images (digits) are scaled up so people can see them."""
    pixels = to_uint8(images) if isinstance(images, torch.Tensor) else images
    mosaic = grid(pixels, columns)
    scale = max(1, 256 // max(mosaic.shape[:2]) + (1 if max(mosaic.shape[:2]) < 128 else 0))
    return save_png(path, mosaic, provenance, scale=min(scale, 8), sign=sign)


def save_pixels(folder: Path, pixels: np.ndarray) -> tuple[Path, str]:
    """Store (H, W, C) uint8 pixels once, content-addressed: ``folder/ab/<hash>.png``, a PNG
    without text chunks (provenance belongs to a generation, and many may share these pixels);
    returns the path and the content hash. Written atomically; an existing file is kept."""
    digest = content_hash(pixels)
    path = Path(folder) / digest[:2] / f"{digest}.png"
    if not path.is_file():
        save_png(path, pixels)
    return path, digest


def read_pixels(path: Path | io.BytesIO) -> np.ndarray:
    """A PNG's pixels as (H, W, C) uint8 (C = 1 for a grey image), as ``content_hash`` takes them."""
    with Image.open(path) as img:
        pixels = np.asarray(img)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def read_provenance(path: Path | io.BytesIO) -> dict[str, Any]:
    """The ``genloop:*`` text chunks of a PNG (a file, or bytes in a BytesIO), decoded."""
    with Image.open(path) as img:
        text = dict(getattr(img, "text", {}))
    out: dict[str, Any] = {}
    for key, value in text.items():
        if key.startswith("genloop:"):
            try:
                out[key[8:]] = json.loads(value)
            except ValueError:
                out[key[8:]] = value
    return out
