"""Weights load only from well-formed safetensors; anything else is a CorruptArtifact."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors import safe_open

from genloop.errors import CorruptArtifact
from genloop.models.io import load_weights, save_weights
from genloop.models.registry import get_family

GPT = get_family("gpt")


def _gpt(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return GPT.build(GPT.make_config("tiny", vocab_size=16, **overrides)).eval()


@pytest.fixture
def saved(tmp_path):
    model = _gpt()
    path = tmp_path / "weights.safetensors"
    save_weights(model, path)
    return model, path


def test_torch_save_pickle_is_refused_by_name(tmp_path):
    path = tmp_path / "weights.safetensors"
    torch.save(_gpt().state_dict(), path)  # zip-based pickle, the modern torch.save default
    with pytest.raises(CorruptArtifact, match="pickle") as e:
        load_weights(_gpt(), path)
    assert str(path) in str(e.value)


def test_legacy_torch_save_pickle_is_refused_by_name(tmp_path):
    path = tmp_path / "weights.safetensors"
    torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CorruptArtifact, match="pickle"):
        load_weights(_gpt(), path)


def test_truncated_safetensors_is_refused(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CorruptArtifact, match=f"cut{cut}"):
            load_weights(_gpt(), bad)


@pytest.mark.parametrize("seed", range(3))
def test_random_bytes_are_refused(tmp_path, seed):
    path = tmp_path / "weights.safetensors"
    g = torch.Generator().manual_seed(seed)
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=g, dtype=torch.uint8).tolist()))
    with pytest.raises(CorruptArtifact):
        load_weights(_gpt(), path)


def test_empty_and_missing_files_are_refused(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CorruptArtifact):
        load_weights(_gpt(), empty)
    with pytest.raises(CorruptArtifact, match="no such file"):
        load_weights(_gpt(), tmp_path / "absent.safetensors")


def test_mismatched_shape_names_the_tensor(saved):
    _, path = saved
    other = _gpt(block_size=32)  # only the position embedding differs
    with pytest.raises(CorruptArtifact, match=r"'wpe\.weight'.*\(64, 64\).*\(32, 64\)"):
        load_weights(other, path)


def test_other_architecture_names_the_missing_tensor(saved):
    _, path = saved
    with pytest.raises(CorruptArtifact, match=r"missing 'blocks\.2\."):
        load_weights(_gpt(n_layer=3), path)
    with pytest.raises(CorruptArtifact, match=r"unexpected 'blocks\.1\."):
        load_weights(_gpt(n_layer=1), path)


def test_tied_weights_save_once_and_load_back_tied(saved):
    model, path = saved
    assert model.head.weight is model.wte.weight
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert ("head.weight" in keys) != ("wte.weight" in keys), keys  # stored exactly once
    other = _gpt(seed=1)
    load_weights(other, path)
    assert other.head.weight is other.wte.weight
    assert other.head.weight.data_ptr() == other.wte.weight.data_ptr()
    assert torch.equal(other.wte.weight, model.wte.weight)
    with torch.no_grad():
        other.wte.weight.add_(1.0)  # still one tensor: a change shows through both names
    assert torch.equal(other.head.weight, other.wte.weight)


def test_untied_weights_roundtrip(tmp_path):
    model = _gpt(tie_weights=False)
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    with safe_open(str(path), framework="pt") as f:
        assert {"head.weight", "wte.weight"} <= set(f.keys())
    other = _gpt(seed=1, tie_weights=False)
    load_weights(other, path)
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_save_never_writes_pickle(saved):
    _, path = saved
    head = path.read_bytes()[:8]
    assert not head.startswith((b"\x80", b"PK"))
    assert int.from_bytes(head, "little") < os.path.getsize(path)  # safetensors header length
