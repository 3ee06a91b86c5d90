"""Image datasets: read images, check them, convert them to one shape, split them, store them immutably.

A prepared dataset is the folder every kind shares (``data/folder.py``): arrays ``train_images``
and ``test_images`` (uint8, ``(N, C, H, W)``, memory-mapped by training), ``train_labels`` and
``test_labels`` (int64) and the metadata (class names, captions, counts, conversions, notes).
The hash is sha256 over the conversion settings, the arrays, the labels, the class names
and the captions; the source path and the dataset name are left out, so moving a folder does not
change a dataset's identity (the same rule as ``data/text.py``).

This module is the pipeline: read a source, split, convert, hash, write. Its pieces sit beside it:
``data/image_files.py`` reads untrusted image files safely (limits, formats, modes),
``data/mnist.py`` reads the MNIST-format built-ins and ``data/shapes.py`` draws ``shapes``.

Sources
- ``digits``: scikit-learn's UCI optical digits (1,797 images of 8x8, ships with scikit-learn, so
  it needs no network); grey levels 0..16 are scaled to 0..255.
- ``shapes``: coloured shapes on a black 32x32 RGB canvas drawn from a fixed seed, each with a
  caption such as "a small red circle at the top left" (``data/shapes.py``); ``shapes-pairs``:
  two shapes and a relation, "a red circle left of a blue square". Both hold some compositions
  out of training (half of their test split: ``data/scenes.py``).
- ``mnist`` / ``fashion-mnist``: from the mirror's npz files or the original gzip IDX files,
  contents checked against pinned sha256s (``data/mnist.py``).
- a folder of PNG/JPEG/BMP/GIF/WebP files: each sub-folder is a class (its name is the class
  name; images may sit at any depth below it); images directly in the folder, with no class
  folders, make one unlabelled class. Hidden files and OS junk are skipped; any other file is an
  error naming it.
- a folder with a ``captions.jsonl``, or a COCO-style captions ``.json``: captioned images, one
  unlabelled class (``data/captioned.py``).
- an ``.npz`` with ``images`` (``(N,H,W)`` or ``(N,H,W,C)`` uint8, C in 1/3/4) and optional
  ``labels`` (non-negative integers) and ``class_names`` (strings); read with
  ``allow_pickle=False``.

Notable choices
- Every file is decoded through ``data/image_files.py`` (formats, size and pixel limits, modes,
  EXIF orientation; never a partial image). ``channels: null`` gives 1 channel when every image
  is grey by mode, else 3 (grey is then repeated; RGB to grey uses PIL's ITU-R 601-2 luma).
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

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genloop.data.captioned import is_captioned, read_captioned
from genloop.data.folder import Folder, read_folder, stored, write_folder
from genloop.data.image_files import IMAGE_SUFFIXES, folder_files, read_image, resize_square
from genloop.data.mnist import FASHION_MNIST, MNIST, IdxSet, idx_arrays
from genloop.data.shapes import PAIR_CLASS_NAMES, SHAPE_NAMES, pairs_split, shapes_split
from genloop.errors import CorruptArtifact, GenloopError, InvalidInput

FORMAT_VERSION = 1


class ImageDataConfig(BaseModel):
    """Where images come from and the one shape they are converted to."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["images"] = "images"
    source: str = Field(
        description="built-in (digits, shapes, shapes-pairs, mnist, fashion-mnist), a folder of "
        "PNG/JPEG/BMP/GIF/WebP images (class sub-folders become labels; a captions.jsonl gives "
        "captions), a COCO captions .json, or an .npz with `images` and optional `labels`"
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

    def prepare(self, progress: Callable[[str], None] | None = None,
                tokenizer: Any = None) -> ImageDataset:
        """Store the images (``tokenizer`` is for kinds that hold text: images hold none)."""
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
    # every caption of each image (the first is ``captions``'), for sources with several
    all_captions: dict[str, list[list[str]]] | None = None

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
    references: list[list[str]] | None = None  # all captions of each image (captioned files)
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


def _shapes(config: ImageDataConfig, say: Callable[[str], None]) -> _Source:
    say("drawing the shape images")
    train, train_labels, train_captions = shapes_split("train")
    test, test_labels, test_captions = shapes_split("test")
    return _Source(train, train_labels, list(SHAPE_NAMES), test=test, test_labels=test_labels,
                   captions=train_captions, test_captions=test_captions)


def _shapes_pairs(config: ImageDataConfig, say: Callable[[str], None]) -> _Source:
    say("drawing the shape-pair images")
    train, train_labels, train_captions = pairs_split("train")
    test, test_labels, test_captions = pairs_split("test")
    return _Source(train, train_labels, list(PAIR_CLASS_NAMES), test=test, test_labels=test_labels,
                   captions=train_captions, test_captions=test_captions)


def _idx_source(spec: IdxSet) -> Callable[[ImageDataConfig, Callable[[str], None]], _Source]:
    def read(config: ImageDataConfig, say: Callable[[str], None]) -> _Source:
        a = idx_arrays(spec, say)
        return _Source(
            np.asarray(a["train/images"])[..., None], a["train/labels"].astype(np.int64),
            list(spec.class_names), test=np.asarray(a["test/images"])[..., None],
            test_labels=a["test/labels"].astype(np.int64), grey=True,
        )

    return read


BUILTINS: dict[str, Callable[[ImageDataConfig, Callable[[str], None]], _Source]] = {
    "digits": _digits,
    "shapes": _shapes,
    "shapes-pairs": _shapes_pairs,
    "mnist": _idx_source(MNIST),
    "fashion-mnist": _idx_source(FASHION_MNIST),
}



# --- user sources: folders and npz files -------------------------------------------------------


def _read_folder(root: Path, config: ImageDataConfig, say: Callable[[str], None]) -> _Source:
    skipped: list[str] = []
    notes: list[str] = []
    files = folder_files(root, skipped)
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


def _read_captioned(path: Path, config: ImageDataConfig, say: Callable[[str], None]) -> _Source:
    c = read_captioned(path, config.image_size, say)
    return _Source(c.images, np.zeros(len(c.images), dtype=np.int64), [_default_name(str(path))],
                   keys=c.keys, captions=[caps[0] for caps in c.captions], references=c.captions,
                   grey=c.grey, conversions=c.conversions, skipped=c.skipped, labelled=False)


def _read_source(config: ImageDataConfig, say: Callable[[str], None]) -> _Source:
    if config.source in BUILTINS:
        return BUILTINS[config.source](config, say)
    path = Path(config.source).expanduser()
    if is_captioned(path):
        return _read_captioned(path, config, say)
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
            a = np.asarray(resize_square(im, size))
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
    stem = path.stem if path.suffix.lower() in (".npz", ".json") else path.name
    return re.sub(r"[^\w.-]", "-", stem).lstrip(".-") or "images"


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
    references = None
    if src.references is not None:  # captioned files: no official split
        references = {"train": [src.references[i] for i in train_idx],
                      "test": [src.references[i] for i in test_idx]}
    notes = list(src.notes)
    if config.max_images is not None and config.max_images < len(train):
        notes.append(f"max_images={config.max_images}: kept the first {config.max_images} of "
                     f"{len(train)} training images")
        train, train_labels = train[: config.max_images], train_labels[: config.max_images]
        if captions is not None:
            captions["train"] = captions["train"][: config.max_images]
        if references is not None:
            references["train"] = references["train"][: config.max_images]
    # 3. Convert to one (C, H, W).
    say(f"converting {len(train) + len(test)} images")
    conversions = Counter(src.conversions)
    train = _convert(train, size, channels, conversions)
    test = _convert(test, size, channels, conversions)
    train_labels, test_labels = train_labels.astype(np.int64), test_labels.astype(np.int64)
    # 4. Hash and reuse.
    hashed: dict[str, Any] = {
        "format": FORMAT_VERSION, "image_size": int(train.shape[2]), "channels": channels,
        "test_fraction": config.test_fraction if split != "official" else None,
        "max_images": config.max_images, "split": split}
    if references is not None:
        hashed["references"] = references
    digest = _content_hash(hashed, [train, train_labels, test, test_labels], src.class_names, captions)
    name = config.name or _default_name(config.source)
    if (done := stored(name, digest)) is not None:
        say(f"reusing {done.path}")
        return _image_dataset(done)
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
        **({"all_captions": references} if references is not None else {}),
        "counts": {
            "train": len(train), "test": len(test),
            "per_class": {"train": _per_class(train_labels, src.class_names),
                          "test": _per_class(test_labels, src.class_names)},
        },
        "conversions": dict(sorted(conversions.items())),
        "notes": notes,
        "skipped": src.skipped,
    }
    # 5. Write atomically (the one dataset folder of every kind).
    say(f"writing {name}/{digest[:16]}")
    arrays = {"train_images": train, "train_labels": train_labels,
              "test_images": test, "test_labels": test_labels}
    return _image_dataset(write_folder(meta, arrays))


def load_image_dataset(path: str | os.PathLike[str]) -> ImageDataset:
    """Open a prepared image dataset folder; image arrays are read-only memory maps."""
    return _image_dataset(read_folder(path, "images"))


def _image_dataset(folder: Folder) -> ImageDataset:
    a, meta = folder.arrays, folder.meta
    try:
        class_names = list(meta["class_names"])
    except KeyError as e:
        raise CorruptArtifact(f"dataset metadata of {folder.path} lacks {e}") from e
    return ImageDataset(
        name=folder.name, hash=folder.hash, path=folder.path,
        train=a["train_images"], train_labels=a["train_labels"],
        test=a["test_images"], test_labels=a["test_labels"],
        class_names=class_names, captions=meta.get("captions"),
        # captions can be large: kept apart
        meta={k: v for k, v in meta.items() if k not in ("captions", "all_captions")},
        all_captions=meta.get("all_captions"),
    )


__all__ = [
    "BUILTINS",
    "ImageDataConfig",
    "ImageDataset",
    "load_image_dataset",
    "prepare_images",
]
