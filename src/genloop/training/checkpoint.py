"""Training checkpoints: everything needed to continue a run bit-for-bit, safetensors only.

A checkpoint is a directory ``step-NNNNNNNN`` written atomically (temp dir → rename); the names
``last`` and ``best`` are symlinks swapped atomically onto one of them, and step directories no
link points at are removed. A kill at any moment leaves ``last`` pointing at a complete checkpoint.
Each step directory holds:
    weights.safetensors     the network
    ema.safetensors         the moving average of the weights (when the recipe keeps one)
    optimizer.safetensors   every optimizer state tensor, keyed ``<param index>.<name>``
    rng.safetensors         torch's global RNG (dropout; the data order is a pure function of the step)
    config.json             family + model config (so a checkpoint loads like a model)
    state.json              step, best validation loss, optimizer hyper-parameters, tokens seen
No pickle anywhere: the optimizer's state is rebuilt from tensors and JSON.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from genloop.atomic import atomic_dir, atomic_write_text, fsync_dir
from genloop.errors import CorruptArtifact
from genloop.models.family import Family, ModelConfig
from genloop.models.io import read_safetensors
from genloop.models.modeldir import ModelDir


@dataclass
class TrainState:
    step: int = 0
    best_val_loss: float = float("inf")
    best_step: int = -1
    tokens_seen: int = 0
    elapsed_s: float = 0.0  # wall time of the run so far, evaluations and checkpoints included
    step_time_s: float = 0.0  # time inside training steps after the first 20 (compile, warm-up)
    timed_tokens: int = 0  # tokens of those steps: train_tokens_per_s = timed_tokens / step_time_s


def save_checkpoint(
    root: Path,
    name: str,
    *,
    family: Family,
    config: ModelConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: TrainState,
    ema: torch.nn.Module | None = None,
) -> None:
    """Write the checkpoint of ``state.step`` under ``root`` and point ``root/name`` at it."""
    directory = root / f"step-{state.step:08d}"
    if not directory.is_dir():
        _write(directory, family, config, model, optimizer, state, ema)
    link = root / name
    tmp_link = root / f".{name}.{os.getpid()}.tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(directory.name)
    os.replace(tmp_link, link)
    fsync_dir(root)
    keep = {os.readlink(root / n) for n in ("last", "best") if (root / n).is_symlink()}
    for old in root.glob("step-*"):
        if old.name not in keep:
            # hide it first (one rename): a kill during rmtree must not leave a visible,
            # half-deleted step directory that looks like a checkpoint
            trash = root / f".{old.name}.{os.getpid()}.deleted"
            os.replace(old, trash)
            shutil.rmtree(trash, ignore_errors=True)
    for leftover in root.glob(".step-*.deleted"):  # from a run killed while pruning
        shutil.rmtree(leftover, ignore_errors=True)


def _write(directory, family, config, model, optimizer, state, ema) -> None:
    with atomic_dir(directory) as tmp:
        ModelDir(tmp).write_network(family, config, model, ema)  # a checkpoint is a model dir too
        meta: dict[str, Any] = {"train_state": asdict(state)}
        if optimizer is not None:
            tensors, groups = optimizer_tensors(optimizer)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            meta["param_groups"] = groups
        rng = {"torch": torch.get_rng_state()}
        save_file(rng, str(tmp / "rng.safetensors"))
        atomic_write_text(tmp / "state.json", json.dumps(meta, indent=2))
        for f in tmp.iterdir():  # safetensors files reach the disk before the rename
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def load_checkpoint(
    directory: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    ema: torch.nn.Module | None = None,
) -> TrainState:
    """Restore model, optimizer, EMA and RNG states; returns where training stopped."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "state.json").read_text())
        state = TrainState(**meta["train_state"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptArtifact(f"{directory}: unreadable checkpoint state ({e})") from None
    ModelDir(directory).load_weights_into(model)
    if ema is not None:
        ModelDir(directory).load_weights_into(ema, ema=True)
    if optimizer is not None:
        tensors = read_safetensors(directory / "optimizer.safetensors")
        load_optimizer_tensors(optimizer, tensors, meta.get("param_groups", []))
    rng = read_safetensors(directory / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    return state


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {
        f"{idx}.{name}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous()
        for idx, st in sd["state"].items()
        for name, v in st.items()
    }
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, json.loads(json.dumps(groups, default=list))


def load_optimizer_tensors(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    current = opt.state_dict()["param_groups"]
    if len(groups) != len(current) or any(
        len(a["params"]) != len(b["params"]) for a, b in zip(groups, current, strict=True)
    ):
        raise CorruptArtifact("optimizer state does not match the model's parameters")
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
