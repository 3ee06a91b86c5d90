"""MNIST and Fashion-MNIST: read the MNIST-format datasets and check their contents.

LeCun et al. 1998 (MNIST); Xiao et al. 2017, arXiv:1708.07747 (Fashion-MNIST). Both are 60,000
train + 10,000 test grey 28x28 images with labels 0..9 and an official test split.

Where the arrays come from, in order:
- ``<GENLOOP_DATA_MIRROR>/mnist/{train,test}.npz`` (``fashion_mnist/`` for Fashion-MNIST) when
  the mirror holds both files (``images`` and ``labels``, read with ``allow_pickle=False``);
- else the original gzip IDX files through ``data.download.fetch`` (mirror, cache, then
  network), each file pinned by sha256.
Either way the array contents are checked against pinned sha256s, so a corrupt mirror is
refused instead of trained on.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genloop.config import settings
from genloop.data.download import fetch
from genloop.data.sources import idx_set
from genloop.errors import DownloadError


@dataclass(frozen=True)
class IdxSet:
    """One of the MNIST-format datasets: where to find it and what its contents hash to."""

    mirror: str  # folder under GENLOOP_DATA_MIRROR holding train.npz / test.npz
    url: str  # base URL of the gzip IDX files
    files: dict[str, str]  # gzip file -> sha256 of the file (of its IDX payload when gzip)
    arrays: dict[str, str]  # "train/images" ... -> sha256 of the array bytes (C order)
    class_names: tuple[str, ...]
    gzip: bool = False


IDX_NAMES = {"train/images": "train-images-idx3-ubyte.gz", "train/labels": "train-labels-idx1-ubyte.gz",
              "test/images": "t10k-images-idx3-ubyte.gz", "test/labels": "t10k-labels-idx1-ubyte.gz"}

# URLs and IDX payload sha256s from data/sources.py; array sha256s from
# /work/shared/data/*/SOURCE.md (the IDX payloads minus their headers).
MNIST = IdxSet(
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
FASHION_MNIST = IdxSet(
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


def read_idx(path: Path, magic: int) -> np.ndarray:
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


def idx_arrays(spec: IdxSet, say: Callable[[str], None]) -> dict[str, np.ndarray]:
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
    for key, file in IDX_NAMES.items():
        say(f"fetching {spec.url}{file}")
        path = fetch(spec.url + file, spec.files[file], mirror_paths=[f"{spec.mirror}/{file}"],
                     cache_name=f"{spec.mirror}/{file}", gzip=spec.gzip)
        arrays[key] = read_idx(path, 0x803 if key.endswith("images") else 0x801)
        _check_array(arrays[key], spec.arrays[key], str(path), "delete it and fetch again")
    return arrays


__all__ = ["FASHION_MNIST", "IDX_NAMES", "MNIST", "IdxSet", "idx_arrays", "read_idx"]
