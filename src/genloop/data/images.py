"""Image datasets: read images, check them, convert them to one shape, split them, store them immutably.

A prepared dataset is a folder ``datasets/<name>/<hash[:16]>/`` holding ``train_images.npy`` and
``test_images.npy`` (uint8, ``(N, C, H, W)``, memory-mapped by training), ``train_labels.npy`` and
``test_labels.npy`` (int64) and ``dataset.json`` (class names, captions, counts, conversions,
notes). The hash is sha256 over the conversion settings, the arrays, the labels, the class names
and the captions; the source path and the dataset name are left out, so moving a folder does not
change a dataset's identity (the same rule as ``data/text.py``).

Sources
- ``digits``: scikit-learn's UCI optical digits (1,797 images of 8x8, ships with scikit-learn, so
  it needs no network); grey levels 0..16 are scaled to 0..255.
- ``shapes``: coloured circles, squares, triangles, diamonds and crosses on a black 32x32 RGB
  canvas, drawn with PIL from a fixed seed (10,000 train + 1,000 test, about a second), each with
  a caption such as "a small red circle at the top left" (the words are read off the geometry).
- ``mnist`` / ``fashion-mnist``: LeCun et al. 1998; Xiao et al. 2017 (arXiv:1708.07747). Read
  from ``<mirror>/mnist/{train,test}.npz`` (``fashion_mnist/`` for Fashion-MNIST) when
  ``GENLOOP_DATA_MIRROR`` holds them, else the original gzip IDX files are fetched (mirror, cache,
  then network; each pinned by sha256). Either way the array contents are checked against pinned
  sha256s, so a corrupt mirror is refused instead of training on it.
- a folder of PNG/JPEG/BMP/GIF/WebP files: each sub-folder is a class (its name is the class
  name; images may sit at any depth below it); images directly in the folder, with no class
  folders, make one unlabelled class. Hidden files and folders (``.DS_Store``, ``.git``) and
  ``Thumbs.db``/``desktop.ini`` are skipped; any other file is an error naming it.
- an ``.npz`` with ``images`` (``(N,H,W)`` or ``(N,H,W,C)`` uint8, C in 1/3/4) and optional
  ``labels`` (non-negative integers) and ``class_names`` (strings); read with
  ``allow_pickle=False``.

Notable choices
- Untrusted files are opened with the five formats above only (no EPS/PSD/... plugins), the file
  size is checked before reading (``MAX_FILE_BYTES``) and the pixel count from the header before
  decoding (``MAX_PIXELS``), so a tiny PNG claiming 30,000x30,000 pixels is refused without
  allocating it. Truncated or unreadable files are errors naming the file, never partial images.
- Modes: 1/L/I;16/I/F become grey (16-bit scaled to 8); LA, RGBA and transparent palette
  images are composited over black (colour x alpha); P, CMYK, YCbCr, ... become RGB through PIL.
  The EXIF orientation of photos is applied. GIFs use their first frame. ``channels: null`` gives
  1 channel when every image is grey by mode, else 3 (grey is then repeated; RGB to grey uses
  PIL's ITU-R 601-2 luma).
- Sizes: with ``image_size`` unset every image must have one square size. With it set, an image
  of another size is scaled (bicubic, antialiased) so its shorter side is ``image_size``, then
  centre-cropped to a square.
- Splits: mnist and fashion-mnist keep their official test sets. Other sources are split per
  class by a sha256 of each image's source bytes: in each class of n >= 2 images,
  ``max(1, round(n * test_fraction))`` images (at most n - 1) with the smallest hashes are test.
  A class with one image goes to train only (noted in ``meta["notes"]``). The stored order of
  such splits is sorted by that hash, a deterministic shuffle, so ``max_images`` (which keeps the
  first N training images) keeps a mix of classes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genloop.atomic import atomic_dir
from genloop.config import settings
from genloop.data.download import fetch
from genloop.data.sources import idx_set
from genloop.errors import CorruptArtifact, DownloadError, GenloopError, InvalidInput, NotFound

FORMAT_VERSION = 1
MAX_PIXELS = 4096 * 4096  # per image, read from the header before decoding
MAX_FILE_BYTES = 64 * 2**20  # per image file, checked before reading it
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_PIL_FORMATS = ["PNG", "JPEG", "BMP", "GIF", "WEBP"]  # the only decoders untrusted files reach
_IGNORED_NAMES = {"thumbs.db", "desktop.ini"}


class ImageDataConfig(BaseModel):
    """Where images come from and the one shape they are converted to."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["images"] = "images"
    source: str = Field(
        description="built-in (digits, shapes, mnist, fashion-mnist), a folder of PNG/JPEG/BMP/GIF/"
        "WebP images (class sub-folders become labels) or an .npz with `images` and optional `labels`"
    )
    name: str | None = Field(
        None,
        pattern=r"^\w[\w.-]{0,99}$",
        description="dataset name; defaults to the built-in's name or the folder/file stem",
    )
    image_size: int | None = Field(
        None, ge=4, le=1024,
        description="resize every image to this square side (shorter side, then centre crop); "
        "null keeps the source's size",
    )
    channels: Literal[1, 3] | None = Field(
        None, description="1 (grey) or 3 (RGB); null: 1 if every image is grey, else 3"
    )
    test_fraction: float = Field(
        0.1, gt=0, le=0.5, description="test share per class, for sources without an official split"
    )
    max_images: int | None = Field(
        None, ge=1, description="keep only the first N training images (quick runs); test untouched"
    )

    def prepare(self, progress: Callable[[str], None] | None = None) -> ImageDataset:
        return prepare_images(self, progress)


@dataclass
class ImageDataset:
    """A prepared image dataset: image arrays are read-only memory maps of the files under ``path``."""

    name: str
    hash: str
    path: Path
    train: np.ndarray  # uint8 (N, C, H, W)
    train_labels: np.ndarray  # int64 (N,)
    test: np.ndarray  # uint8 (M, C, H, W)
    test_labels: np.ndarray  # int64 (M,)
    class_names: list[str]
    captions: dict[str, list[str]] | None  # {"train": [...], "test": [...]}
    meta: dict  # dataset.json without the captions: source, counts, conversions, notes, skipped

    @property
    def kind(self) -> str:
        return "images"

    @property
    def channels(self) -> int:
        return int(self.train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --- what a source yields ----------------------------------------------------------------------


@dataclass
class _Source:
    """Images as read, before the common conversions. ``images`` are (N, H, W, C) uint8 with C in
    1/3 when they all share one size, else a list of such arrays (folders, before resizing).
    ``test`` is None when the source has no official split; ``keys`` (uint64, one per image) then
    order the stratified split."""

    images: np.ndarray
    labels: np.ndarray  # int64 (N,)
    class_names: list[str]
    test: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    keys: np.ndarray | None = None
    captions: list[str] | None = None
    test_captions: list[str] | None = None
    grey: bool = False  # every image is grey by mode
    conversions: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    labelled: bool = True


def _row_keys(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A sha256-derived uint64 per image (its bytes and label): the order of the hash split."""
    keys = np.empty(len(images), dtype=np.uint64)
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        h = hashlib.sha256(np.ascontiguousarray(img).tobytes() + int(lab).to_bytes(8, "little"))
        keys[i] = int.from_bytes(h.digest()[:8], "big")
    return keys


# --- built-ins ---------------------------------------------------------------------------------


def _digits(config: ImageDataConfig, say: Callable[[str], None]) -> _Source:
    from sklearn.datasets import load_digits  # heavy import, only when asked for

    d = load_digits()
    images = np.rint(d.images * (255 / 16)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    labels = d.target.astype(np.int64)
    src = _Source(images, labels, [str(i) for i in range(10)], keys=_row_keys(images, labels), grey=True)
    src.conversions["grey levels 0..16 scaled to 0..255"] = len(images)
    return src


_SHAPES = ("circle", "square", "triangle", "diamond", "cross")
_COLOURS = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40),
    "magenta": (220, 50, 220), "cyan": (40, 220, 230), "orange": (250, 140, 20), "white": (245, 245, 245),
}
_SIZES = {"small": (3.0, 4.5), "medium": (5.0, 7.0), "large": (8.0, 10.0)}  # radius in 32-px units
_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "centre", "right")
SHAPES_TRAIN, SHAPES_TEST, SHAPES_SEED = 10_000, 1_000, 20_240_917


def _draw_shape(draw, shape: str, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        s = r * 0.85  # a square's corners reach further than a circle of the same radius
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=colour)
    elif shape == "triangle":
        corners = [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
        draw.polygon(corners, fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    else:  # cross
        w = r * 0.35
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)


def _where(cx: float, cy: float, side: float) -> str:
    row, col = _ROWS[min(int(cy * 3 / side), 2)], _COLS[min(int(cx * 3 / side), 2)]
    if row == "middle":
        return "in the centre" if col == "centre" else f"on the {col}"
    return f"at the {row}" if col == "centre" else f"at the {row} {col}"


def draw_shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` shape images (n, 32, 32, 3) uint8, their labels (index into the shape names) and
    captions, a pure function of ``seed``. Drawn at 2x and box-downsampled for smooth edges."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    side, scale = 32, 2
    images = np.empty((n, side, side, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    captions = []
    colour_names, size_names = list(_COLOURS), list(_SIZES)
    for i in range(n):
        label = rng.randrange(len(_SHAPES))
        colour, size = rng.choice(colour_names), rng.choice(size_names)
        r = rng.uniform(*_SIZES[size])
        cx, cy = rng.uniform(r, side - r), rng.uniform(r, side - r)
        canvas = Image.new("RGB", (side * scale, side * scale))
        _draw_shape(ImageDraw.Draw(canvas), _SHAPES[label], cx * scale, cy * scale, r * scale,
                    _COLOURS[colour])
        images[i] = np.asarray(canvas.resize((side, side), Image.Resampling.BOX))
        labels[i] = label
        captions.append(f"a {size} {colour} {_SHAPES[label]} {_where(cx, cy, side)}")
    return images, labels, captions


def _shapes(config: ImageDataConfig, say: Callable[[str], None]) -> _Source:
    say(f"drawing {SHAPES_TRAIN} + {SHAPES_TEST} shape images")
    train, train_labels, train_captions = draw_shapes(SHAPES_TRAIN, SHAPES_SEED)
    test, test_labels, test_captions = draw_shapes(SHAPES_TEST, SHAPES_SEED + 1)
    return _Source(train, train_labels, list(_SHAPES), test=test, test_labels=test_labels,
                   captions=train_captions, test_captions=test_captions)


@dataclass(frozen=True)
class _IdxSet:
    """One of the MNIST-format datasets: where to find it and what its contents hash to."""

    mirror: str  # folder under GENLOOP_DATA_MIRROR holding train.npz / test.npz
    url: str  # base URL of the gzip IDX files
    files: dict[str, str]  # gzip file -> sha256 of the file (of its IDX payload when gzip)
    arrays: dict[str, str]  # "train/images" ... -> sha256 of the array bytes (C order)
    class_names: tuple[str, ...]
    gzip: bool = False


_IDX_NAMES = {"train/images": "train-images-idx3-ubyte.gz", "train/labels": "train-labels-idx1-ubyte.gz",
              "test/images": "t10k-images-idx3-ubyte.gz", "test/labels": "t10k-labels-idx1-ubyte.gz"}

# URLs and IDX payload sha256s from data/sources.py; array sha256s from
# /work/shared/data/*/SOURCE.md (the IDX payloads minus their headers).
_MNIST = _IdxSet(
    mirror="mnist",
    **idx_set("mnist"),
    arrays={
        "train/images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "train/labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "test/images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "test/labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    class_names=tuple(str(i) for i in range(10)),
)
_FASHION_MNIST = _IdxSet(
    mirror="fashion_mnist",
    **idx_set("fashion-mnist"),
    arrays={
        "train/images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "train/labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "test/images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "test/labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)


def _check_array(arr: np.ndarray, expected: str, what: str, fix: str) -> None:
    got = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    if got != expected:
        raise DownloadError(f"{what} has content sha256 {got}, expected {expected}; {fix}")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The array in a gzip IDX file (LeCun's format: magic, big-endian dims, then uint8 data)."""
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as e:
        raise DownloadError(f"{path} is not a readable gzip file ({e}); delete it and fetch again") from e
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise DownloadError(f"{path} is not an IDX file with magic {magic:#x}; delete it and fetch again")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=header)
    if body.size != int(np.prod(dims)):
        raise DownloadError(f"{path} holds {body.size} values, its header says {dims}; fetch it again")
    return body.reshape(dims)


def _idx_arrays(spec: _IdxSet, say: Callable[[str], None]) -> dict[str, np.ndarray]:
    """``train/images``, ``train/labels``, ``test/images``, ``test/labels``: from the mirror's npz
    files if present, else from the gzip IDX files; contents checked either way."""
    arrays: dict[str, np.ndarray] = {}
    mirror = settings().data_mirror
    npz = {split: mirror / spec.mirror / f"{split}.npz" for split in ("train", "test")} if mirror else {}
    if npz and all(p.is_file() for p in npz.values()):
        for split, path in npz.items():
            say(f"reading {path}")
            fix = f"replace {path} with the original file (or remove it to download instead)"
            try:
                with np.load(path, allow_pickle=False) as z:
                    arrays[f"{split}/images"], arrays[f"{split}/labels"] = z["images"], z["labels"]
            except (OSError, ValueError, KeyError, EOFError) as e:
                raise DownloadError(
                    f"mirror file {path} is unreadable or lacks images/labels ({e}); {fix}"
                ) from e
            for part in ("images", "labels"):
                key = f"{split}/{part}"
                _check_array(arrays[key], spec.arrays[key], f"mirror file {path} ({part})", fix)
        return arrays
    for key, file in _IDX_NAMES.items():
        say(f"fetching {spec.url}{file}")
        path = fetch(spec.url + file, spec.files[file], mirror_paths=[f"{spec.mirror}/{file}"],
                     cache_name=f"{spec.mirror}/{file}", gzip=spec.gzip)
        arrays[key] = _read_idx(path, 0x803 if key.endswith("images") else 0x801)
        _check_array(arrays[key], spec.arrays[key], str(path), "delete it and fetch again")
    return arrays


def _idx_source(spec: _IdxSet) -> Callable[[ImageDataConfig, Callable[[str], None]], _Source]:
    def read(config: ImageDataConfig, say: Callable[[str], None]) -> _Source:
        a = _idx_arrays(spec, say)
        return _Source(
            np.asarray(a["train/images"])[..., None], a["train/labels"].astype(np.int64),
            list(spec.class_names), test=np.asarray(a["test/images"])[..., None],
            test_labels=a["test/labels"].astype(np.int64), grey=True,
        )

    return read


BUILTINS: dict[str, Callable[[ImageDataConfig, Callable[[str], None]], _Source]] = {
    "digits": _digits,
    "shapes": _shapes,
    "mnist": _idx_source(_MNIST),
    "fashion-mnist": _idx_source(_FASHION_MNIST),
}


# --- user files: safe decoding -----------------------------------------------------------------


def _resize_square(im, size: int):
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


def _to_l_or_rgb(im, conversions: Counter[str]):
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
            im = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
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
        im = _to_l_or_rgb(im, conversions)
        if image_size is not None and im.size != (image_size, image_size):
            im = _resize_square(im, image_size)
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


def _folder_files(root: Path, skipped: list[str]) -> list[Path]:
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


def _read_folder(root: Path, config: ImageDataConfig, say: Callable[[str], None]) -> _Source:
    skipped: list[str] = []
    notes: list[str] = []
    files = _folder_files(root, skipped)
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )
    loose = [f for f in files if f.parent == root]
    if not files:
        raise InvalidInput(
            f"image folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)}); add images or class folders"
        )
    labelled = bool(class_dirs) and len(loose) < len(files)
    if labelled and loose:
        raise InvalidInput(
            f"{loose[0]} sits beside class folders in {root}; move the {len(loose)} loose image(s) "
            "into a class folder"
        )
    class_names: list[str] = []
    by_class: list[list[Path]] = []
    if labelled:
        for d in class_dirs:
            mine = [f for f in files if f.relative_to(root).parts[0] == d.name]
            if not mine:
                notes.append(f"folder {d.name!r} holds no images and is not a class")
                continue
            class_names.append(d.name)
            by_class.append(mine)
    else:
        class_names, by_class = [root.name or "images"], [files]

    say(f"reading {len(files)} images from {root}")
    conversions: Counter[str] = Counter()
    images: list[np.ndarray] = []
    labels: list[int] = []
    keys: list[int] = []
    grey = True
    sizes: dict[tuple[int, int], Path] = {}
    for label, paths in enumerate(by_class):
        if len(paths) == 1:
            notes.append(f"class {class_names[label]!r} has one image: it is in the training split only")
        for path in paths:
            arr = read_image(path, config.image_size, conversions)
            grey &= arr.shape[2] == 1
            size = (arr.shape[1], arr.shape[0])
            sizes.setdefault(size, path)
            if len(sizes) > 1:
                (s1, p1), (s2, p2) = list(sizes.items())[:2]
                raise InvalidInput(
                    f"images differ in size: {p1} is {s1[0]}x{s1[1]}, {p2} is {s2[0]}x{s2[1]}; set "
                    "data.image_size to resize them all (shorter side, then centre crop)"
                )
            images.append(arr)
            labels.append(label)
            keys.append(int.from_bytes(hashlib.sha256(path.read_bytes()).digest()[:8], "big"))
            if len(images) % 1000 == 0:
                say(f"read {len(images)}/{len(files)} images")
    (w, h), first = next(iter(sizes.items()))
    if w != h:
        raise InvalidInput(
            f"images are {w}x{h} (e.g. {first}), not square; set data.image_size to centre-crop them"
        )
    # One channel count for stacking; the final count is chosen later from `grey`.
    stacked = np.stack([np.repeat(a, 3, axis=2) if a.shape[2] == 1 and not grey else a for a in images])
    return _Source(stacked, np.asarray(labels, dtype=np.int64), class_names,
                   keys=np.asarray(keys, dtype=np.uint64), grey=grey, conversions=conversions,
                   notes=notes, skipped=skipped, labelled=labelled)


def _read_npz(path: Path, say: Callable[[str], None]) -> _Source:
    say(f"reading {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "images" not in keys:
                raise InvalidInput(f"{path} has no `images` array (it has: {', '.join(sorted(keys))})")
            images = z["images"]
            labels = z["labels"] if "labels" in keys else None
            class_names = z["class_names"] if "class_names" in keys else None
    except GenloopError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, format and pickle refusals all mean "not our npz"
        raise InvalidInput(f"{path} is not a readable .npz of arrays ({type(e).__name__}: {e})") from e
    if images.dtype != np.uint8 or images.shape[3:] not in ((), (1,), (3,), (4,)) or images.ndim < 3:
        raise InvalidInput(
            f"{path}: `images` is {images.dtype} {images.shape}; "
            "give uint8 (N,H,W) or (N,H,W,C) with C 1, 3 or 4"
        )
    if len(images) == 0:
        raise InvalidInput(f"{path}: `images` holds no images")
    if images.shape[1] != images.shape[2]:
        raise InvalidInput(
            f"{path}: images are {images.shape[2]}x{images.shape[1]}, not square; set data.image_size"
        )
    conversions: Counter[str] = Counter()
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[3] == 4:  # RGBA: composite over black, as for files
        a = images.astype(np.uint16)
        images = ((a[..., :3] * a[..., 3:] + 127) // 255).astype(np.uint8)
        conversions["RGBA -> RGB, alpha over black"] = len(images)
    labelled = labels is not None
    if labels is None:
        labels = np.zeros(len(images), dtype=np.int64)
    elif labels.shape != (len(images),) or labels.dtype.kind not in "iu" or labels.min() < 0:
        raise InvalidInput(
            f"{path}: `labels` is {labels.dtype} {labels.shape}; give {len(images)} non-negative integers"
        )
    labels = labels.astype(np.int64)
    n_classes = int(labels.max()) + 1
    if class_names is None:
        names = [str(i) for i in range(n_classes)] if labelled else [path.stem]
    elif class_names.dtype.kind != "U" or class_names.ndim != 1 or len(class_names) < n_classes:
        raise InvalidInput(
            f"{path}: `class_names` must be a 1-D string array with a name for each of {n_classes} labels"
        )
    else:
        names = [str(c) for c in class_names]
    return _Source(np.ascontiguousarray(images), labels, names, keys=_row_keys(images, labels),
                   grey=images.shape[3] == 1, conversions=conversions, labelled=labelled)


def _read_source(config: ImageDataConfig, say: Callable[[str], None]) -> _Source:
    if config.source in BUILTINS:
        return BUILTINS[config.source](config, say)
    path = Path(config.source).expanduser()
    if path.is_dir():
        return _read_folder(path, config, say)
    if not path.exists():
        raise InvalidInput(
            f"image source {path} does not exist (built-ins: {', '.join(sorted(BUILTINS))})"
        )
    if path.suffix.lower() == ".npz":
        return _read_npz(path, say)
    raise InvalidInput(
        f"{path} is not an image source; give a folder of images, an .npz, or a built-in "
        f"({', '.join(sorted(BUILTINS))})"
    )


# --- conversion, split, hash -------------------------------------------------------------------


def _convert(images: np.ndarray, size: int | None, channels: int, conversions: Counter[str]) -> np.ndarray:
    """(N, H, W, C) -> (N, channels, size, size) uint8 through the same rules as files."""
    from PIL import Image

    n, h, w, c = images.shape
    if size is not None and (h, w) != (size, size):
        out = np.empty((n, size, size, c), dtype=np.uint8)
        for i, img in enumerate(images):
            im = Image.fromarray(img[..., 0] if c == 1 else img, "L" if c == 1 else "RGB")
            a = np.asarray(_resize_square(im, size))
            out[i] = a[..., None] if a.ndim == 2 else a
        images = out
        conversions[f"resized to {size}x{size} (shorter side, centre crop)"] += n
    if c == 1 and channels == 3:
        images = np.repeat(images, 3, axis=3)
        conversions["grey -> RGB (channels=3)"] += n
    elif c == 3 and channels == 1:
        # PIL's "L" conversion (ITU-R 601-2 luma), in integer arithmetic.
        rgb = images.astype(np.uint32)
        images = ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16)
        images = images.astype(np.uint8)[..., None]
        conversions["RGB -> grey (channels=1)"] += n
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # (N, C, H, W)


def _stratified_split(labels: np.ndarray, keys: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and test, each sorted by key (a deterministic shuffle)."""
    order = np.lexsort((np.arange(len(keys)), keys))  # by key, ties by position
    test_mask = np.zeros(len(keys), dtype=bool)
    for label in np.unique(labels):
        members = order[labels[order] == label]
        n = len(members)
        if n >= 2:
            test_mask[members[: min(n - 1, max(1, round(n * fraction)))]] = True
    return order[~test_mask[order]], order[test_mask[order]]


def _content_hash(settings_: dict, arrays: Sequence[np.ndarray], class_names: list[str],
                  captions: dict[str, list[str]] | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({**settings_, "class_names": class_names, "captions": captions},
                        sort_keys=True, ensure_ascii=False).encode())
    for a in arrays:
        h.update(json.dumps([a.dtype.str, list(a.shape)]).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _default_name(source: str) -> str:
    if source in BUILTINS:
        return source
    path = Path(source).expanduser()
    stem = path.stem if path.suffix.lower() == ".npz" else path.name
    return re.sub(r"[^\w.-]", "-", stem).lstrip(".-") or "images"


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _per_class(labels: np.ndarray, class_names: list[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(class_names))
    return {name: int(counts[i]) for i, name in enumerate(class_names)}


def prepare_images(config: ImageDataConfig, progress: Callable[[str], None] | None = None) -> ImageDataset:
    """Read, check, convert and split images; store them (or reuse the stored copy).

    The folder is built in a temp dir beside its final place and renamed in one step, so an
    error or a crash never leaves a half-written dataset behind."""
    say = progress or (lambda _msg: None)
    # 1. Read (every user file is checked here, before anything is written).
    src = _read_source(config, say)
    channels = config.channels or (1 if src.grey else 3)
    size = config.image_size
    # 2. Split: the official one, else stratified by content hash.
    if src.test is None:
        assert src.keys is not None
        train_idx, test_idx = _stratified_split(src.labels, src.keys, config.test_fraction)
        if len(test_idx) == 0:
            raise InvalidInput(
                f"image source {config.source} gives no test images: every class has one image; "
                "add images (at least 2 per class)"
            )
        train, train_labels = src.images[train_idx], src.labels[train_idx]
        test, test_labels = src.images[test_idx], src.labels[test_idx]
        split = "stratified-hash"
    else:
        assert src.test_labels is not None
        train, train_labels, test, test_labels = src.images, src.labels, src.test, src.test_labels
        train_idx, test_idx = np.arange(len(train)), np.arange(len(test))
        split = "official"
    captions = None
    if src.captions is not None:
        test_caps = src.test_captions if src.test is not None else src.captions
        assert test_caps is not None
        captions = {"train": [src.captions[i] for i in train_idx], "test": [test_caps[i] for i in test_idx]}
    notes = list(src.notes)
    if config.max_images is not None and config.max_images < len(train):
        notes.append(f"max_images={config.max_images}: kept the first {config.max_images} of "
                     f"{len(train)} training images")
        train, train_labels = train[: config.max_images], train_labels[: config.max_images]
        if captions is not None:
            captions["train"] = captions["train"][: config.max_images]
    # 3. Convert to one (C, H, W).
    say(f"converting {len(train) + len(test)} images")
    conversions = Counter(src.conversions)
    train = _convert(train, size, channels, conversions)
    test = _convert(test, size, channels, conversions)
    train_labels, test_labels = train_labels.astype(np.int64), test_labels.astype(np.int64)
    # 4. Hash and reuse.
    hashed = {"format": FORMAT_VERSION, "image_size": int(train.shape[2]), "channels": channels,
              "test_fraction": config.test_fraction if split != "official" else None,
              "max_images": config.max_images, "split": split}
    digest = _content_hash(hashed, [train, train_labels, test, test_labels], src.class_names, captions)
    name = config.name or _default_name(config.source)
    final = settings().datasets_dir / name / digest[:16]
    if (final / "dataset.json").is_file():
        say(f"reusing {final}")
        return load_image_dataset(final)
    meta = {
        "format": FORMAT_VERSION,
        "kind": "images",
        "name": name,
        "hash": digest,
        "source": config.source,
        "config": config.model_dump() | {"name": name},
        "split": split,
        "labelled": src.labelled,
        "shape": {"channels": channels, "height": int(train.shape[2]), "width": int(train.shape[3])},
        "class_names": src.class_names,
        "captions": captions,
        "counts": {
            "train": len(train), "test": len(test),
            "per_class": {"train": _per_class(train_labels, src.class_names),
                          "test": _per_class(test_labels, src.class_names)},
        },
        "conversions": dict(sorted(conversions.items())),
        "notes": notes,
        "skipped": src.skipped,
    }
    # 5. Write atomically.
    say(f"writing {final}")
    try:
        with atomic_dir(final) as tmp:
            for split_name, images, labels in (("train", train, train_labels), ("test", test, test_labels)):
                _save_npy(tmp / f"{split_name}_images.npy", images)
                _save_npy(tmp / f"{split_name}_labels.npy", labels)
            with open(tmp / "dataset.json", "w", encoding="utf-8") as f:
                json.dump(meta, f, ensure_ascii=False, indent=2)
                f.flush()
                os.fsync(f.fileno())
    except OSError:
        # Another process finished the same dataset first; theirs is identical.
        if not (final / "dataset.json").is_file():
            raise
    return load_image_dataset(final)


def load_image_dataset(path: str | os.PathLike[str]) -> ImageDataset:
    """Open a prepared image dataset folder; image arrays are read-only memory maps."""
    path = Path(path)
    meta_path = path / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise NotFound(f"no image dataset at {path} (missing dataset.json)") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptArtifact(f"dataset metadata {meta_path} is corrupt: {e}") from e
    arrays: dict[str, np.ndarray] = {}
    try:
        shape = meta["shape"]
        chw = (shape["channels"], shape["height"], shape["width"])
        for split in ("train", "test"):
            n = meta["counts"][split]
            for part, dtype, want in (("images", np.uint8, (n, *chw)), ("labels", np.int64, (n,))):
                file = path / f"{split}_{part}.npy"
                a = np.load(file, mmap_mode="r", allow_pickle=False)
                if a.dtype != dtype or a.shape != want:
                    raise CorruptArtifact(
                        f"{file} is {a.dtype} {a.shape}, expected {np.dtype(dtype).name} {want}; "
                        f"delete {path} and prepare it again"
                    )
                arrays[f"{split}_{part}"] = a
        class_names = list(meta["class_names"])
    except (KeyError, TypeError) as e:
        raise CorruptArtifact(f"dataset metadata {meta_path} lacks {e}") from e
    except FileNotFoundError as e:
        raise CorruptArtifact(f"dataset {path} is missing {Path(e.filename).name}") from e
    except ValueError as e:
        raise CorruptArtifact(f"dataset {path} has an unreadable array ({e}); prepare it again") from e
    return ImageDataset(
        name=meta["name"], hash=meta["hash"], path=path,
        train=arrays["train_images"], train_labels=arrays["train_labels"],
        test=arrays["test_images"], test_labels=arrays["test_labels"],
        class_names=class_names, captions=meta.get("captions"),
        meta={k: v for k, v in meta.items() if k != "captions"},  # captions can be large: kept apart
    )


__all__ = [
    "BUILTINS",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "ImageDataConfig",
    "ImageDataset",
    "draw_shapes",
    "load_image_dataset",
    "prepare_images",
    "read_image",
]
