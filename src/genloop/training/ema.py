"""An exponential moving average of a network's weights (Polyak averaging).

Diffusion models and GAN generators sample far better from averaged weights than from the last
step's (Ho et al. 2020 use 0.9999; Karras et al. 2018 and Yazıcı et al. 2019 for GANs). The
average is a full copy of the network, checkpointed beside it, so a resumed run continues it.
"""

from __future__ import annotations

import copy

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """θ_ema ← decay·θ_ema + (1 − decay)·θ; buffers (norm statistics) are copied."""
        ema_params: list[torch.Tensor] = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
