"""Safe reading of untrusted image files: limits checked before decoding, one mode out.

- Formats: untrusted files are opened with PNG, JPEG, BMP, GIF and WebP decoders only (no
  EPS/PSD/... plugins).
- Limits: the file size is checked before reading (``MAX_FILE_BYTES``) and the pixel count from
  the header before decoding (``MAX_PIXELS``), so a tiny PNG claiming 30,000x30,000 pixels is
  refused without allocating it. Truncated or unreadable files are errors naming the file, never
  partial images.
- Modes: 1/L/I;16/I/F become grey (16-bit scaled to 8); LA, RGBA and transparent palette
  images are composited over black (colour x alpha); P, CMYK, YCbCr, ... become RGB through PIL.
  The EXIF orientation of photos is applied. GIFs use their first frame.
- Sizes: ``resize_square`` scales an image (bicubic, antialiased) so its shorter side is the
  target, then centre-crops a square.
- Folders: ``folder_files`` lists the images under a folder; hidden files and folders
  (``.DS_Store``, ``.git``) and ``Thumbs.db``/``desktop.ini`` are skipped, any other non-image
  file is an error naming it.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from genloop.errors import GenloopError, InvalidInput

MAX_PIXELS = 4096 * 4096  # per image, read from the header before decoding
MAX_FILE_BYTES = 64 * 2**20  # per image file, checked before reading it
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
PIL_FORMATS = ["PNG", "JPEG", "BMP", "GIF", "WEBP"]  # the only decoders untrusted files reach
_IGNORED_NAMES = {"thumbs.db", "desktop.ini"}


def resize_square(im, size: int):
    """Scale so the shorter side is ``size`` (bicubic, antialiased), then centre-crop a square."""
    from PIL import Image

    w, h = im.size
    if (w, h) == (size, size):
        return im
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def to_l_or_rgb(im, conversions: Counter[str]):
    """``im`` as mode L or RGB (see the module docstring for the rules)."""
    from PIL import Image

    mode = im.mode
    if mode == "L":
        return im
    if mode == "RGB":
        return im
    if mode == "1":
        conversions["1 -> L"] += 1
        return im.convert("L")
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        # 16-bit data keeps its high byte; 32-bit int and float are taken as already 0..255 unless
        # they exceed it, in which case they are read as 16-bit too.
        if mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257
        conversions[f"{mode} -> L"] += 1
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if mode == "P":
        has_alpha = "transparency" in im.info
        mode, im = ("RGBA", im.convert("RGBA")) if has_alpha else ("RGB", im.convert("RGB"))
        conversions[f"P -> {mode}"] += 1
        if not has_alpha:
            return im
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        if mode in ("La", "RGBa"):  # premultiplied already
            return im.convert("L" if mode == "La" else "RGB")
        if mode == "PA":
            im = im.convert("RGBA")
        a = np.asarray(im).astype(np.uint16)
        colour, alpha = a[..., :-1], a[..., -1:]
        out = ((colour * alpha + 127) // 255).astype(np.uint8)  # over black
        conversions[f"{mode} -> {'L' if mode == 'LA' else 'RGB'}, alpha over black"] += 1
        return Image.fromarray(out[..., 0] if mode == "LA" else out, "L" if mode == "LA" else "RGB")
    conversions[f"{mode} -> RGB"] += 1  # CMYK, YCbCr, LAB, HSV, RGBX
    return im.convert("RGB")


def read_image(path: Path, image_size: int | None, conversions: Counter[str]) -> np.ndarray:
    """One untrusted image file as (H, W, 1 or 3) uint8, or an InvalidInput naming the file."""
    from PIL import Image, ImageOps

    try:
        nbytes = path.stat().st_size
    except OSError as e:
        raise InvalidInput(f"cannot read image {path}: {e.strerror or e}") from e
    if nbytes > MAX_FILE_BYTES:
        raise InvalidInput(
            f"image {path} is {nbytes / 2**20:.1f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit; "
            "shrink or remove it"
        )
    try:
        data = path.read_bytes()
        with warnings.catch_warnings():
            # Our own pixel limit (below) is stricter than PIL's warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im: Image.Image = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
        w, h = im.size  # from the header: nothing is decoded yet
        if w * h > MAX_PIXELS:
            raise InvalidInput(
                f"image {path} is {w}x{h} pixels, over the limit of {MAX_PIXELS:,}; downscale or remove it"
            )
        if getattr(im, "n_frames", 1) > 1:
            conversions["animated: first frame used"] += 1
        im.load()  # decodes; a truncated file raises here (LOAD_TRUNCATED_IMAGES stays off)
        if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation
            im = ImageOps.exif_transpose(im)
            conversions["EXIF orientation applied"] += 1
        im = to_l_or_rgb(im, conversions)
        if image_size is not None and im.size != (image_size, image_size):
            im = resize_square(im, image_size)
            conversions[f"resized to {image_size}x{image_size} (shorter side, centre crop)"] += 1
        arr = np.asarray(im, dtype=np.uint8)
    except GenloopError:
        raise
    except Image.DecompressionBombError as e:
        raise InvalidInput(f"image {path} claims too many pixels ({e}); downscale or remove it") from e
    except Exception as e:  # noqa: BLE001 - an untrusted file may make any decoder raise anything
        reason = str(e).split(" <_io.", 1)[0] or type(e).__name__  # not the in-memory buffer's repr
        raise InvalidInput(
            f"{path} is not a readable PNG/JPEG/BMP/GIF/WebP image ({reason}); re-save it or remove it"
        ) from e
    return arr[..., None] if arr.ndim == 2 else arr


def folder_files(root: Path, skipped: list[str]) -> list[Path]:
    """Files under ``root`` (sorted by relative path); hidden files and folders and OS junk are
    left out and listed in ``skipped``."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for d in [d for d in dirnames if d.startswith(".")]:
            skipped.append((here / d).relative_to(root).as_posix() + "/")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = here / name
            if name.startswith(".") or name.lower() in _IGNORED_NAMES:
                skipped.append(p.relative_to(root).as_posix())
            elif p.suffix.lower() not in IMAGE_SUFFIXES:
                raise InvalidInput(
                    f"{p} is not an image (supported: {', '.join(IMAGE_SUFFIXES)}); move it out of {root}"
                )
            else:
                files.append(p)
    return sorted(files, key=lambda q: q.relative_to(root).as_posix())


__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "folder_files",
    "read_image",
    "resize_square",
    "to_l_or_rgb",
]
