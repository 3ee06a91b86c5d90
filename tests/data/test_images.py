"""Image datasets: folder and npz sources, built-ins, safe decoding of bad files, splits, hashes,
atomic storage, and mnist / fashion-mnist from the shared mirror."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

import genloop.data.image_files as image_files_mod
import genloop.data.images as images_mod
from genloop.data.image_files import read_image
from genloop.data.images import ImageDataConfig, load_image_dataset, prepare_images
from genloop.data.mnist import IDX_NAMES, IdxSet
from genloop.data.scenes import heldout, parse
from genloop.errors import CorruptArtifact, DownloadError, InvalidInput, NotFound

# the datasets mirror: GENLOOP_DATA_MIRROR (CI sets it), else ../shared/data beside the repository
MIRROR = Path(os.environ.get("GENLOOP_DATA_MIRROR")
              or Path(__file__).resolve().parents[3] / "shared" / "data")


@pytest.fixture
def home(workspace, monkeypatch):
    monkeypatch.delenv("GENLOOP_DATA_MIRROR", raising=False)
    return workspace


@pytest.fixture
def mirror(home, monkeypatch):
    if not (MIRROR / "mnist" / "train.npz").is_file():
        pytest.skip(f"shared data mirror {MIRROR} is not on this machine")
    monkeypatch.setenv("GENLOOP_DATA_MIRROR", str(MIRROR))


def _save(path: Path, arr: np.ndarray, mode: str | None = None, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path, fmt)
    return path


def _rgb(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _grey(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def _png_with_header(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR claiming ``width`` x ``height``, with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def _leftovers(home: Path) -> list[Path]:
    root = home / "datasets"
    return [p for p in root.rglob("*") if ".tmp" in p.name] if root.exists() else []


def _class_folder(root: Path) -> Path:
    """Three classes of five 8x8 images: two grey classes and one RGB class."""
    for i in range(5):
        _save(root / "cat" / f"{i}.png", _grey(i))
        _save(root / "dog" / f"{i}.jpg", _grey(100 + i), fmt="JPEG")
        _save(root / "fox" / f"sub/{i}.bmp", _rgb(200 + i))
    (root / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: main")
    return root


# --- folder sources -----------------------------------------------------------------------------


def test_folder_with_class_subfolders_round_trips(tmp_path, home):
    root = _class_folder(tmp_path / "pets")
    messages: list[str] = []
    ds = ImageDataConfig(source=str(root)).prepare(messages.append)

    assert ds.name == "pets" and ds.kind == "images"
    assert ds.class_names == ["cat", "dog", "fox"] and ds.num_classes == 3
    assert ds.channels == 3 and ds.image_size == 8  # one RGB class makes every image RGB
    # 5 per class, round(0.5) -> at least one test image per class
    assert ds.train.shape == (12, 3, 8, 8) and ds.test.shape == (3, 3, 8, 8)
    assert ds.train.dtype == np.uint8 and ds.train_labels.dtype == np.int64
    assert sorted(ds.test_labels.tolist()) == [0, 1, 2]
    assert np.bincount(ds.train_labels).tolist() == [4, 4, 4]
    assert isinstance(ds.train, np.memmap) and not ds.train.flags.writeable
    assert ds.meta["counts"]["per_class"]["test"] == {"cat": 1, "dog": 1, "fox": 1}
    assert sorted(ds.meta["skipped"]) == [".DS_Store", ".git/"]
    assert ds.meta["conversions"] == {}
    assert any(re.fullmatch(r"reading 15 images from .*pets", m) for m in messages)
    # Pixels survive exactly (PNG and BMP are lossless): find the fox images by content.
    everything = np.concatenate([ds.train, ds.test])
    labels = np.concatenate([ds.train_labels, ds.test_labels])
    for i in range(5):
        want = _rgb(200 + i).transpose(2, 0, 1)
        hits = [j for j in range(len(everything)) if np.array_equal(everything[j], want)]
        assert len(hits) == 1 and labels[hits[0]] == 2
    grey_cat = np.repeat(_grey(0)[None], 3, axis=0)
    assert any(np.array_equal(x, grey_cat) for x in everything)
    # The stored copy opens identically.
    again = load_image_dataset(ds.path)
    assert again.hash == ds.hash and np.array_equal(again.train, ds.train)


def test_grey_folder_gives_one_channel_and_channels_can_be_forced(tmp_path, home):
    root = tmp_path / "g"
    for i in range(4):
        _save(root / "a" / f"{i}.png", _grey(i))
        _save(root / "b" / f"{i}.png", _grey(10 + i))
    ds = prepare_images(ImageDataConfig(source=str(root)))
    assert ds.channels == 1 and ds.train.shape[1:] == (1, 8, 8)
    rgb = prepare_images(ImageDataConfig(source=str(root), channels=3))
    assert rgb.channels == 3 and rgb.hash != ds.hash
    assert np.array_equal(rgb.train[:, 0], rgb.train[:, 2])


def test_images_directly_in_the_folder_are_one_unlabelled_class(tmp_path, home):
    for i in range(10):
        _save(tmp_path / "flat" / f"{i:02d}.png", _rgb(i))
    ds = prepare_images(ImageDataConfig(source=str(tmp_path / "flat"), name="flat-set"))
    assert ds.name == "flat-set" and ds.class_names == ["flat"] and ds.meta["labelled"] is False
    assert len(ds.train) == 9 and len(ds.test) == 1
    assert set(ds.train_labels.tolist()) == {0}


def test_split_is_deterministic_and_independent_of_file_names(tmp_path, home):
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(20):
        _save(a / "x" / f"{i:02d}.png", _grey(i))
        _save(b / "x" / f"renamed-{19 - i:02d}.png", _grey(i))  # same images, other names and order
    da, db = prepare_images(ImageDataConfig(source=str(a))), prepare_images(ImageDataConfig(source=str(b)))
    assert np.array_equal(da.test, db.test) and np.array_equal(da.train, db.train)
    assert da.hash == db.hash and len(da.test) == 2


def test_one_image_class_goes_to_train_only_with_a_note(tmp_path, home):
    root = tmp_path / "r"
    for i in range(4):
        _save(root / "many" / f"{i}.png", _grey(i))
    _save(root / "lonely" / "0.png", _grey(99))
    (root / "empty").mkdir()
    ds = prepare_images(ImageDataConfig(source=str(root)))
    assert ds.class_names == ["lonely", "many"]
    assert ds.test_labels.tolist() == [1] and sorted(ds.train_labels.tolist()) == [0, 1, 1, 1]
    assert any("'lonely' has one image" in n and "training split only" in n for n in ds.meta["notes"])
    assert any("'empty'" in n for n in ds.meta["notes"])


def test_max_images_keeps_first_training_images_and_the_test_split(tmp_path, home):
    root = tmp_path / "m"
    for c in "abc":
        for i in range(10):
            _save(root / c / f"{i}.png", _grey(ord(c) * 100 + i))
    full = prepare_images(ImageDataConfig(source=str(root)))
    few = prepare_images(ImageDataConfig(source=str(root), max_images=6))
    assert len(few.train) == 6 and np.array_equal(few.train, full.train[:6])
    assert np.array_equal(few.test, full.test)
    assert len(set(few.train_labels.tolist())) > 1  # the hash order mixes classes
    assert few.hash != full.hash and any("max_images=6" in n for n in few.meta["notes"])


# --- modes and sizes ----------------------------------------------------------------------------


def test_mixed_modes_convert_as_documented(tmp_path, home):
    root = tmp_path / "modes" / "all"
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[...] = (200, 100, 50, 128)
    _save(root / "rgba.png", rgba, "RGBA")
    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[...] = (255, 51)
    _save(root / "la.png", la, "LA")
    _save(root / "i16.png", np.full((8, 8), 65535, dtype=np.uint16))
    Image.fromarray(_rgb(1)).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(_rgb(2)).convert("P").save(root / "p.gif")
    Image.fromarray(_grey(3)).convert("1").save(root / "bw.bmp")
    Image.fromarray(_rgb(4)).save(root / "rgb.webp", lossless=True)
    Image.fromarray(_grey(5)).save(root / "l.png")

    counter: Counter[str] = Counter()
    assert read_image(root / "rgba.png", None, counter)[0, 0].tolist() == [100, 50, 25]  # over black
    assert read_image(root / "la.png", None, counter)[0, 0].tolist() == [51]
    assert read_image(root / "i16.png", None, counter)[0, 0].tolist() == [255]
    assert read_image(root / "cmyk.jpg", None, counter).shape == (8, 8, 3)
    assert np.array_equal(read_image(root / "rgb.webp", None, counter), _rgb(4))
    conversions = dict(counter)
    assert "RGBA -> RGB, alpha over black" in conversions and "LA -> L, alpha over black" in conversions
    assert "CMYK -> RGB" in conversions and "I;16 -> L" in conversions

    ds = prepare_images(ImageDataConfig(source=str(root.parent), test_fraction=0.2))
    assert ds.channels == 3 and len(ds.train) + len(ds.test) == 8
    assert {"P -> RGB", "1 -> L"} <= set(ds.meta["conversions"])


def test_mixed_sizes_are_an_error_naming_both_sizes(tmp_path, home):
    root = tmp_path / "sizes"
    _save(root / "a" / "small.png", _grey(0, 8))
    _save(root / "a" / "big.png", _grey(1, 16))
    sizes = r"differ in size: .* is (8x8|16x16), .* is (8x8|16x16); set data\.image_size"
    with pytest.raises(InvalidInput, match=sizes) as e:
        prepare_images(ImageDataConfig(source=str(root)))
    assert "big.png" in str(e.value) and "small.png" in str(e.value)
    assert "\n" not in str(e.value)


def test_image_size_resizes_shorter_side_then_centre_crops(tmp_path, home):
    root = tmp_path / "sizes" / "a"
    wide = np.zeros((8, 24, 3), dtype=np.uint8)
    wide[:, 8:16] = 255  # white centre third, black sides
    _save(root / "wide.png", wide)
    _save(root / "square.png", _rgb(0, 16))
    _save(root / "tiny.png", _rgb(1, 4))
    ds = prepare_images(ImageDataConfig(source=str(root.parent), image_size=8, test_fraction=0.3))
    assert ds.train.shape[1:] == (3, 8, 8) and ds.image_size == 8
    everything = np.concatenate([ds.train, ds.test])
    assert any(np.all(x == 255) for x in everything)  # the crop kept the white centre of `wide`
    assert ds.meta["conversions"]["resized to 8x8 (shorter side, centre crop)"] == 3


def test_non_square_images_need_image_size(tmp_path, home):
    root = tmp_path / "ns" / "a"
    for i in range(3):
        _save(root / f"{i}.png", np.zeros((6, 10), dtype=np.uint8))
    with pytest.raises(InvalidInput, match=r"10x6.*not square.*image_size"):
        prepare_images(ImageDataConfig(source=str(root.parent)))
    assert prepare_images(ImageDataConfig(source=str(root.parent), image_size=6)).image_size == 6


# --- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [30_000, 5_000])
def test_huge_header_is_refused_before_decoding(tmp_path, home, side):
    root = tmp_path / "bomb" / "a"
    _save(root / "ok.png", _grey(0))
    bomb = _png_with_header(root / "bomb.png", side, side)
    assert bomb.stat().st_size < 200
    start = time.perf_counter()
    with pytest.raises(InvalidInput, match=r"bomb\.png.*(pixels|too many)") as e:
        prepare_images(ImageDataConfig(source=str(root.parent)))
    assert time.perf_counter() - start < 2.0  # 900M pixels were never allocated
    assert "\n" not in str(e.value)
    assert not (home / "datasets").exists() or not any((home / "datasets").iterdir())


def test_file_size_limit(tmp_path, home, monkeypatch):
    root = tmp_path / "big" / "a"
    _save(root / "0.png", _rgb(0, 64))
    monkeypatch.setattr(image_files_mod, "MAX_FILE_BYTES", 1024)
    with pytest.raises(InvalidInput, match=r"0\.png is .* MiB, over the 0 MiB limit"):
        prepare_images(ImageDataConfig(source=str(root.parent)))


@pytest.mark.parametrize("fmt,name", [("PNG", "cut.png"), ("JPEG", "cut.jpg")])
def test_truncated_file_is_an_error_naming_it(tmp_path, home, fmt, name):
    root = tmp_path / "t" / "a"
    _save(root / "ok.png", _rgb(0, 32))
    full = _save(root / name, _rgb(1, 64), fmt=fmt)
    full.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InvalidInput, match=rf"{re.escape(name)} is not a readable .*re-save it or remove it"):
        prepare_images(ImageDataConfig(source=str(root.parent)))
    assert _leftovers(home) == []


def test_non_image_files_are_errors_naming_them(tmp_path, home):
    root = tmp_path / "n"
    _save(root / "a" / "0.png", _grey(0))
    (root / "a" / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInput, match=r"notes\.txt is not an image .*move it out"):
        prepare_images(ImageDataConfig(source=str(root)))
    (root / "a" / "notes.txt").unlink()
    (root / "a" / "fake.png").write_text("not a png at all")
    with pytest.raises(InvalidInput, match=r"fake\.png is not a readable PNG/JPEG/BMP/GIF/WebP image"):
        prepare_images(ImageDataConfig(source=str(root)))
    (root / "a" / "fake.png").unlink()
    # A format Pillow can read but genloop does not open from user folders.
    Image.fromarray(_grey(1)).save(root / "a" / "x.png", "TIFF")
    with pytest.raises(InvalidInput, match=r"x\.png is not a readable"):
        prepare_images(ImageDataConfig(source=str(root)))


def test_empty_or_hidden_only_folder_is_an_error(tmp_path, home):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="holds no images"):
        prepare_images(ImageDataConfig(source=str(empty)))
    (empty / ".DS_Store").write_bytes(b"x")
    (empty / "cls").mkdir()
    with pytest.raises(InvalidInput, match="holds no images"):
        prepare_images(ImageDataConfig(source=str(empty)))


def test_loose_images_beside_class_folders_and_missing_source(tmp_path, home):
    root = tmp_path / "mix"
    _save(root / "a" / "0.png", _grey(0))
    _save(root / "loose.png", _grey(1))
    with pytest.raises(InvalidInput, match=r"loose\.png sits beside class folders"):
        prepare_images(ImageDataConfig(source=str(root)))
    with pytest.raises(InvalidInput, match=r"does not exist \(built-ins: digits, fashion-mnist"):
        prepare_images(ImageDataConfig(source=str(tmp_path / "nowhere")))
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(InvalidInput, match="not an image source"):
        prepare_images(ImageDataConfig(source=str(tmp_path / "x.csv")))


def test_every_class_with_one_image_is_too_small(tmp_path, home):
    for c in "ab":
        _save(tmp_path / "s" / c / "0.png", _grey(ord(c)))
    with pytest.raises(InvalidInput, match="no test images.*at least 2 per class"):
        prepare_images(ImageDataConfig(source=str(tmp_path / "s")))


def test_config_is_strict():
    assert ImageDataConfig(source="digits").kind == "images"
    with pytest.raises(ValidationError):
        ImageDataConfig(source="digits", imagesize=8)
    with pytest.raises(ValidationError):
        ImageDataConfig(source="digits", channels=2)
    with pytest.raises(ValidationError):
        ImageDataConfig(source="digits", test_fraction=0)


# --- npz ------------------------------------------------------------------------------------------


def test_npz_source_with_labels_and_class_names(tmp_path, home):
    imgs = np.random.default_rng(0).integers(0, 256, (40, 6, 6), dtype=np.uint8)
    labels = np.arange(40) % 4
    np.savez(tmp_path / "toy.npz", images=imgs, labels=labels, class_names=np.array(["a", "b", "c", "d"]))
    ds = prepare_images(ImageDataConfig(source=str(tmp_path / "toy.npz")))
    assert ds.name == "toy" and ds.class_names == ["a", "b", "c", "d"] and ds.channels == 1
    assert ds.train.shape == (36, 1, 6, 6) and ds.test.shape == (4, 1, 6, 6)
    assert sorted(ds.test_labels.tolist()) == [0, 1, 2, 3]
    for x, y in zip(ds.test, ds.test_labels, strict=True):  # images keep their own labels
        j = next(j for j in range(40) if np.array_equal(imgs[j], x[0]))
        assert labels[j] == y

    rgba = np.zeros((10, 4, 4, 4), dtype=np.uint8)
    rgba[...] = (255, 0, 100, 51)
    np.savez(tmp_path / "rgba.npz", images=rgba)
    ds = prepare_images(ImageDataConfig(source=str(tmp_path / "rgba.npz")))
    assert ds.class_names == ["rgba"] and ds.train[0, :, 0, 0].tolist() == [51, 0, 20]


@pytest.mark.parametrize("arrays,match", [
    ({"pixels": np.zeros((2, 4, 4), np.uint8)}, "no `images` array"),
    ({"images": np.zeros((2, 4, 4), np.float32)}, "give uint8"),
    ({"images": np.zeros((2, 4, 4, 2), np.uint8)}, "give uint8"),
    ({"images": np.zeros((3, 4, 4), np.uint8), "labels": np.array([0, -1, 2])}, "non-negative integers"),
    ({"images": np.zeros((3, 4, 4), np.uint8), "labels": np.array([0, 1])}, "non-negative integers"),
    ({"images": np.array([{"a": 1}, None], dtype=object)}, "not a readable .npz"),
])
def test_bad_npz_is_refused(tmp_path, home, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InvalidInput, match=match):
        prepare_images(ImageDataConfig(source=str(tmp_path / "bad.npz")))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(InvalidInput, match=r"junk\.npz is not a readable \.npz"):
        prepare_images(ImageDataConfig(source=str(tmp_path / "junk.npz")))


# --- built-ins ------------------------------------------------------------------------------------


def test_digits_builtin(home):
    ds = prepare_images(ImageDataConfig(source="digits"))
    assert ds.name == "digits" and ds.channels == 1 and ds.image_size == 8
    assert len(ds.train) + len(ds.test) == 1797 and 170 <= len(ds.test) <= 190
    assert set(ds.test_labels.tolist()) == set(range(10))  # stratified: every class tested
    assert ds.train.max() == 255 and ds.train.min() == 0


def test_shapes_builtin_is_deterministic_with_captions(home, tmp_path, monkeypatch):
    ds = prepare_images(ImageDataConfig(source="shapes"))
    # 10,000 draws less the held-out compositions (data/scenes.py) train; 1,000 test.
    assert ds.train.shape == (7_975, 3, 32, 32) and ds.test.shape == (1_000, 3, 32, 32)
    assert ds.class_names == ["circle", "square", "triangle", "diamond", "cross"]
    assert ds.captions is not None
    assert len(ds.captions["train"]) == 7_975 and len(ds.captions["test"]) == 1_000
    pattern = re.compile(r"a (small|medium|large) \w+ (\w+) (in the centre|on the (left|right)|"
                         r"at the (top|bottom)( left| right)?)")
    for caption, label in zip(ds.captions["train"][:200], ds.train_labels[:200], strict=True):
        m = pattern.fullmatch(caption)
        assert m and m.group(2) == ds.class_names[label]
    assert np.bincount(ds.train_labels).min() > 1_400  # all five shapes, roughly balanced
    assert not any(heldout(parse(c)) for c in ds.captions["train"])
    # Same content in a fresh workspace: same hash (drawn from a fixed seed).
    monkeypatch.setenv("GENLOOP_HOME", str(tmp_path / "other"))
    again = prepare_images(ImageDataConfig(source="shapes"))
    assert again.hash == ds.hash and again.path != ds.path


def test_mnist_from_the_mirror(mirror):
    ds = prepare_images(ImageDataConfig(source="mnist"))
    assert ds.train.shape == (60_000, 1, 28, 28) and ds.test.shape == (10_000, 1, 28, 28)
    assert ds.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert ds.meta["counts"]["per_class"]["test"]["1"] == 1135 and ds.meta["split"] == "official"
    small = prepare_images(ImageDataConfig(source="fashion-mnist", image_size=16, channels=3, max_images=100))
    assert small.class_names[0] == "T-shirt/top" and small.class_names[9] == "Ankle boot"
    assert small.train.shape == (100, 3, 16, 16) and small.test.shape == (10_000, 3, 16, 16)


def test_corrupt_mirror_is_refused(home, tmp_path, monkeypatch):
    fake = tmp_path / "mirror" / "mnist"
    fake.mkdir(parents=True)
    for split in ("train", "test"):
        np.savez(fake / f"{split}.npz", images=np.zeros((5, 28, 28), np.uint8), labels=np.zeros(5, np.uint8))
    monkeypatch.setenv("GENLOOP_DATA_MIRROR", str(tmp_path / "mirror"))
    wrong = r"mirror file .*train\.npz \(images\) has content sha256 .* replace"
    with pytest.raises(DownloadError, match=wrong):
        prepare_images(ImageDataConfig(source="mnist"))
    (fake / "train.npz").write_bytes(b"garbage")
    with pytest.raises(DownloadError, match=r"train\.npz is unreadable"):
        prepare_images(ImageDataConfig(source="mnist"))
    assert not (home / "datasets").exists()


def test_idx_files_are_read_and_checked(home, tmp_path, monkeypatch):
    """The download path: gzip IDX files found through fetch (here in a mirror), parsed, checked."""
    rng = np.random.default_rng(0)
    arrays = {"train/images": rng.integers(0, 256, (20, 5, 5), dtype=np.uint8),
              "train/labels": (np.arange(20) % 2).astype(np.uint8),
              "test/images": rng.integers(0, 256, (4, 5, 5), dtype=np.uint8),
              "test/labels": np.array([0, 1, 0, 1], np.uint8)}
    folder = tmp_path / "mirror" / "toy_idx"
    folder.mkdir(parents=True)
    files = {}
    for key, arr in arrays.items():
        magic = (0x800 + arr.ndim).to_bytes(4, "big")
        raw = magic + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
        name = IDX_NAMES[key]
        (folder / name).write_bytes(gzip.compress(raw))
        files[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    spec = IdxSet(
        mirror="toy_idx", url="https://example.invalid/", files=files,
        arrays={k: hashlib.sha256(a.tobytes()).hexdigest() for k, a in arrays.items()},
        class_names=("even", "odd"),
    )
    monkeypatch.setenv("GENLOOP_DATA_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setitem(images_mod.BUILTINS, "toy-idx", images_mod._idx_source(spec))
    messages: list[str] = []
    ds = prepare_images(ImageDataConfig(source="toy-idx"), messages.append)
    assert ds.train.shape == (20, 1, 5, 5) and np.array_equal(ds.test[:, 0], arrays["test/images"])
    assert ds.class_names == ["even", "odd"] and any(m.startswith("fetching") for m in messages)
    # Right file hash but wrong contents (a pinned hash that does not match the arrays): refused.
    bad = IdxSet(spec.mirror, spec.url, spec.files, {**spec.arrays, "test/labels": "0" * 64},
                 spec.class_names)
    monkeypatch.setitem(images_mod.BUILTINS, "toy-idx", images_mod._idx_source(bad))
    with pytest.raises(DownloadError, match=r"t10k-labels-idx1-ubyte\.gz has content sha256"):
        prepare_images(ImageDataConfig(source="toy-idx"))


# --- storage --------------------------------------------------------------------------------------


def test_re_prepare_reuses_the_stored_dataset(tmp_path, home):
    root = _class_folder(tmp_path / "pets")
    first = prepare_images(ImageDataConfig(source=str(root)))
    stamp = (first.path / "train_images.npy").stat().st_mtime_ns
    messages: list[str] = []
    second = prepare_images(ImageDataConfig(source=str(root)), messages.append)
    assert second.path == first.path and second.hash == first.hash
    assert (first.path / "train_images.npy").stat().st_mtime_ns == stamp
    assert any(m.startswith("reusing") for m in messages)
    assert [p.name for p in (home / "datasets" / "pets").iterdir()] == [first.path.name]


def test_failure_while_writing_leaves_no_dataset_and_no_temp_dir(tmp_path, home, monkeypatch):
    root = _class_folder(tmp_path / "pets")
    calls = []
    import genloop.data.folder as folder_mod

    real = folder_mod._save_npy

    def failing(path, arr):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(path, arr)

    monkeypatch.setattr(folder_mod, "_save_npy", failing)
    with pytest.raises(OSError, match="No space"):
        prepare_images(ImageDataConfig(source=str(root)))
    assert _leftovers(home) == []
    assert list((home / "datasets" / "pets").iterdir()) == []
    monkeypatch.setattr(folder_mod, "_save_npy", real)
    ds = prepare_images(ImageDataConfig(source=str(root)))  # and it recovers
    assert len(ds.train) == 12


def test_load_refuses_missing_and_corrupt_datasets(tmp_path, home):
    with pytest.raises(NotFound):
        load_image_dataset(tmp_path / "nothing")
    root = _class_folder(tmp_path / "pets")
    ds = prepare_images(ImageDataConfig(source=str(root)))
    np.save(ds.path / "test_labels.npy", np.zeros(7, np.int64))
    with pytest.raises(CorruptArtifact, match=r"test_labels\.npy is int64 \(7,\), expected int64 \(3,\)"):
        load_image_dataset(ds.path)
    (ds.path / "train_images.npy").unlink()
    with pytest.raises(CorruptArtifact, match="missing train_images.npy"):
        load_image_dataset(ds.path)
