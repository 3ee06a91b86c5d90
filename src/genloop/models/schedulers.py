"""Noise schedulers for diffusion families: the schedule of ᾱ_t, noising for training, the sampler's update.

Shaped like diffusers' schedulers, so any ε-predicting network can share them: a scheduler knows
nothing of the network; ``add_noise`` makes x_t for the training objective, and a sampling loop
calls ``set_timesteps`` once, then ``step`` on each timestep of ``timesteps``.

References:
- Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (DDPM): the forward process
  q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I) (eq. 4) and the linear β schedule.
- Nichol & Dhariwal 2021, "Improved DDPM": the cosine schedule (eq. 17).
- Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models" (DDIM): the update of eq. 12 with
  σ_t(η) (eq. 16) on a sub-sequence of timesteps; η = 0 is deterministic DDIM, η = 1 on every step
  is DDPM's ancestral sampler, so one ``step`` serves both.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from genloop.errors import InvalidInput, RecipeError
from genloop.models.family import Generators, draw_normal

Schedule = Literal["linear", "cosine"]


def linear_betas(timesteps: int) -> torch.Tensor:
    """Ho et al. 2020: β from 1e-4 to 0.02 over 1000 steps, scaled to ``timesteps``."""
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. 17: ᾱ_t = f(t) / f(0), f(t) = cos²((t/T + s) / (1 + s) · π/2)."""
    s = 0.008
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


BETA_SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


def betas_for(schedule: str, timesteps: int) -> torch.Tensor:
    """β_1..β_T in float64 for one of ``BETA_SCHEDULES``."""
    if schedule not in BETA_SCHEDULES:
        raise RecipeError(f"unknown noise schedule {schedule!r} (known: {', '.join(BETA_SCHEDULES)})")
    return BETA_SCHEDULES[schedule](timesteps)


class NoiseScheduler:
    """ᾱ_t of a schedule; ``add_noise`` for training, ``set_timesteps`` + ``step`` for sampling.

    ``eta`` = 1 gives DDPM's ancestral sampler (stochastic), 0 gives DDIM (deterministic given x_T).
    """

    def __init__(self, schedule: str, timesteps: int, eta: float = 0.0):
        self.alphas_cumprod = torch.cumprod(1 - betas_for(schedule, timesteps), dim=0)
        self.train_timesteps = timesteps
        self.eta = eta
        self.timesteps = torch.arange(timesteps - 1, -1, -1)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε  (Ho et al. 2020, eq. 4)."""
        ab = self.alphas_cumprod.to(x0.device)[t].float().view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def set_timesteps(self, steps: int) -> None:
        """Visit ``steps`` evenly spaced timesteps, from T−1 down to 0 (DDIM's τ sub-sequence)."""
        if not 1 <= steps <= self.train_timesteps:
            raise InvalidInput(f"steps must be between 1 and {self.train_timesteps}, got {steps}")
        ts = torch.linspace(self.train_timesteps - 1, 0, steps).round().long()
        self.timesteps = ts.unique_consecutive()

    def previous(self, t: int) -> int:
        """The timestep after ``t`` in the current sequence, or −1 at the end."""
        i = int((self.timesteps == t).nonzero()[0])
        return int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1

    def step(self, eps: torch.Tensor, t: int, x: torch.Tensor,
             generator: Generators | None) -> torch.Tensor:
        """x_t → x_{prev}: Song et al. 2021, eq. 12 with σ from eq. 16 (x̂_0 clipped to [−1, 1]);
        the noise (σ > 0) comes from one generator, or row i's from generator i."""
        prev = self.previous(t)
        ab_t = float(self.alphas_cumprod[t])
        ab_prev = float(self.alphas_cumprod[prev]) if prev >= 0 else 1.0
        x0 = ((x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)).clamp(-1, 1)
        eps = (x - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)  # consistent with the clipped x̂_0
        sigma = self.eta * math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
        x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            noise = (torch.randn(x.shape, dtype=x.dtype) if generator is None
                     else draw_normal(generator, x.shape[0], tuple(x.shape[1:]), x.dtype))
            x_prev = x_prev + sigma * noise
        return x_prev


def scheduler_for(schedule: str, timesteps: int, sampler: Literal["ddpm", "ddim"] = "ddim") -> NoiseScheduler:
    """A fresh sampling scheduler: DDPM's ancestral sampler (η = 1) or DDIM (η = 0)."""
    return NoiseScheduler(schedule, timesteps, eta=1.0 if sampler == "ddpm" else 0.0)


_TRAINING: dict[tuple[str, int], NoiseScheduler] = {}


def training_scheduler(schedule: str, timesteps: int) -> NoiseScheduler:
    """The shared scheduler a training objective noises with (ᾱ is computed once per schedule);
    only its ``add_noise`` is used: sampling makes its own with ``scheduler_for``."""
    key = (schedule, timesteps)
    if key not in _TRAINING:
        _TRAINING[key] = NoiseScheduler(*key)
    return _TRAINING[key]


__all__ = [
    "BETA_SCHEDULES",
    "NoiseScheduler",
    "Schedule",
    "betas_for",
    "cosine_betas",
    "linear_betas",
    "scheduler_for",
    "training_scheduler",
]
