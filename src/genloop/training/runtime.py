"""Where and how the training loop runs: device, processes (DDP), precision, compilation, RNG.

Composed into the loop, never threaded through the families: the device from the recipe (or
CUDA when present), rank and world size when launched by ``torchrun`` (gloo on CPU, NCCL on GPU),
bf16 autocast where the hardware has fast bf16, ``torch.compile`` where it pays, and torch's
global RNG (initialisation, dropout) seeded from the recipe through a private generator — never
``torch.manual_seed`` — with the caller's RNG left as it was.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from genloop.models.family import Family, fast_bf16
from genloop.training.recipe import TrainConfig


class Distributed:
    """Rank and world size; set up when launched by torchrun (gloo on CPU, NCCL on GPU)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def flag_any(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def pick_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", rank)
    return torch.device("cpu")


def autocast(cfg: TrainConfig, device_type: str = "cpu"):
    """bf16 autocast as the recipe asks: matmuls in bf16, reductions and losses in fp32."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=uses_bf16(cfg, device_type))


def uses_bf16(cfg: TrainConfig, device_type: str = "cpu") -> bool:
    return cfg.precision == "bf16" or (cfg.precision == "auto" and fast_bf16(device_type))


def use_compile(cfg: TrainConfig, family: Family | None = None) -> bool:
    """torch.compile pays for its start-up (~30 s on 2 cores) only on longer runs, and on CPU
    it needs a C++ compiler for the kernels it generates. ``auto`` compiles only families that
    say it pays (``Family.compiles``: image objectives draw from a generator inside the graph,
    which compile splits) and take plain steps (no ``train_step``)."""
    if cfg.compile != "auto":
        return bool(cfg.compile)
    if family is not None and (not family.compiles or family.train_step is not None):
        return False
    return cfg.steps >= 1000 and (torch.cuda.is_available() or shutil.which("c++") is not None)


@contextmanager
def seeded_rng(seed: int | None, device: torch.device | None = None) -> Iterator[None]:
    """Run the block on torch's global RNG seeded from ``seed``, the caller's RNG restored after.

    The global RNG is what initialisation and dropout draw from. Its state comes from a private
    ``torch.Generator().manual_seed(seed)`` (the same numbers ``torch.manual_seed`` would give);
    on a CUDA ``device`` that device's generator is seeded the same way. ``seed=None`` keeps the
    current state (a resumed run has restored its checkpoint's) and only isolates the caller.
    """
    index: int | None = None  # the CUDA device's, None off CUDA
    if device is not None and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
    with torch.random.fork_rng(devices=[index] if index is not None else []):
        if seed is not None:
            torch.set_rng_state(torch.Generator().manual_seed(seed).get_state())
            if index is not None:
                state = torch.Generator(device=device).manual_seed(seed).get_state()
                torch.cuda.set_rng_state(state, index)
        yield
