"""Denoising diffusion: a small U-Net, DDPM training, DDPM/DDIM/DPM-Solver++ sampling, guidance.

References:
- Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (DDPM): the ε-prediction
  objective (eq. 14, Algorithm 1) and ancestral sampling (Algorithm 2).
- Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models" (DDIM): deterministic sampling on
  a sub-sequence of timesteps.
- Lu et al. 2022, "DPM-Solver++": few-step (10-20) multistep sampling of the data prediction.
- Ho & Salimans 2021, "Classifier-Free Diffusion Guidance": one network trained with the label
  dropped to a "null" class with probability ``p_uncond``; at sampling ε = ε_∅ + s·(ε_c − ε_∅).

As in diffusers, the network, the noise schedule and the sampler are separate things: ``UNet``
maps (x_t, t, class) to a noise estimate and knows nothing of schedules; the ``NoiseScheduler`` of
``models/schedulers.py`` (linear or cosine ᾱ_t; ``add_noise``, ``set_timesteps``, ``step``; DDPM
and DDIM) is shared with any other diffusion family; ``loss`` and ``sample`` wire them and read
like the paper's algorithm boxes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from genloop.errors import RecipeError
from genloop.models.family import (
    Family,
    Generators,
    ImageBatch,
    ImageModelConfig,
    ImageRequest,
    draw_labels,
    draw_normal,
)
from genloop.models.schedulers import Schedule, default_steps, scheduler_for, training_scheduler


class DiffusionConfig(ImageModelConfig):
    width: int = Field(32, ge=8, le=1024, description="channels at full resolution")
    channel_mults: tuple[int, ...] = Field((1, 2, 2), min_length=1, max_length=5,
                                           description="channel multiplier per resolution level")
    blocks_per_level: int = Field(1, ge=1, le=4)
    attention: bool = Field(True, description="self-attention at the lowest resolution")
    groups: int = Field(8, ge=1, le=64, description="GroupNorm groups")
    timesteps: int = Field(1000, ge=10, le=10_000, description="length of the training schedule")
    schedule: Schedule = "linear"
    p_uncond: float = Field(0.1, ge=0.0, le=1.0,
                            description="probability of dropping the label in training (guidance)")

    @model_validator(mode="after")
    def _check(self) -> DiffusionConfig:
        levels = len(self.channel_mults) - 1
        if self.image_size % (2**levels):
            raise RecipeError(
                f"diffusion: image_size {self.image_size} is not divisible by 2**{levels} "
                f"(channel_mults has {levels + 1} levels): use fewer levels or another image_size"
            )
        if any(self.width * m % self.groups for m in self.channel_mults):
            raise RecipeError(f"diffusion: width × channel_mults must be multiples of groups ({self.groups})")
        return self


# --- the network ------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim), as in the Transformer."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, with the time (+ class) embedding added between the two convs."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class Attention(nn.Module):
    """Single-head self-attention over the H·W positions of a feature map."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(-1, -2)
        q, k, v = qkv.unbind(1)  # each (B, HW, C)
        h = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """ε_θ(x_t, t, y): a small U-Net (Ronneberger 2015; as in DDPM, with GroupNorm and SiLU).

    Levels halve the resolution (28 → 14 → 7 with three levels); skip connections carry every block's
    output across. Class y ∈ [0, num_classes) or the null class ``num_classes`` (unconditional).
    """

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        c, g = config.width, config.groups
        emb_dim = 4 * c
        self.time_mlp = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(config.num_classes + 1, emb_dim) if config.conditional else None
        self.stem = nn.Conv2d(config.channels, c, 3, padding=1)
        self.down = nn.ModuleList()
        widths, skips = [c], [c]
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.blocks_per_level):
                self.down.append(ResBlock(widths[-1], c * mult, emb_dim, g))
                widths.append(c * mult)
                skips.append(c * mult)
            if level < len(config.channel_mults) - 1:
                self.down.append(nn.Conv2d(widths[-1], widths[-1], 3, stride=2, padding=1))
                skips.append(widths[-1])
        mid = widths[-1]
        self.mid1 = ResBlock(mid, mid, emb_dim, g)
        self.mid_attn = Attention(mid, g) if config.attention else nn.Identity()
        self.mid2 = ResBlock(mid, mid, emb_dim, g)
        self.up = nn.ModuleList()
        width = mid
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            for _ in range(config.blocks_per_level + 1):
                self.up.append(ResBlock(width + skips.pop(), c * mult, emb_dim, g))
                width = c * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(width, width, 3, padding=1)))
        self.out = nn.Sequential(nn.GroupNorm(g, width), nn.SiLU(),
                                 nn.Conv2d(width, config.channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, C, H, W), t (B,) int, labels (B,) int or None -> ε estimate (B, C, H, W)
        emb = self.time_mlp(timestep_embedding(t, self.config.width))
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full_like(t, self.config.num_classes)  # the null class
            emb = emb + self.class_emb(labels)
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, ResBlock) else layer(h)
        return self.out(h)


def build(config: DiffusionConfig) -> UNet:
    if config.conditional and config.num_classes < 1:
        raise RecipeError("diffusion: conditional needs a dataset with class labels (num_classes ≥ 1)")
    return UNet(config)


# --- training objective -----------------------------------------------------------------------


def loss(model: UNet, batch: ImageBatch) -> dict[str, torch.Tensor]:
    """Ho et al. 2020, Algorithm 1: t ~ U{0..T−1}, ε ~ N(0, I), minimise ‖ε − ε_θ(x_t, t, y)‖²."""
    config = model.config
    x0, g = batch.images, batch.generator
    B = x0.size(0)
    t = torch.randint(0, config.timesteps, (B,), generator=g).to(x0.device)
    noise = torch.randn(x0.shape, generator=g).to(x0.device)
    x_t = training_scheduler(config.schedule, config.timesteps).add_noise(x0, noise, t)
    labels = None
    if config.conditional:
        # classifier-free guidance: drop the label to the null class with probability p_uncond
        drop = torch.rand(B, generator=g).to(x0.device) < config.p_uncond
        labels = torch.where(drop, torch.full_like(batch.labels, config.num_classes), batch.labels)
    eps = model(x_t, t, labels)
    return {"loss": F.mse_loss(eps.float(), noise)}


# --- sampling ---------------------------------------------------------------------------------


@torch.no_grad()
def sample(model: UNet, request: ImageRequest, generator: Generators) -> torch.Tensor:
    """DDPM (η = 1), DDIM (η = 0) or DPM-Solver++(2M) from x_T ~ N(0, I) over ``request.steps``
    timesteps, with classifier-free guidance ε = ε_∅ + s·(ε_y − ε_∅) when the model is conditional and s ≠ 1.

    ``generator``: one for the batch, or one per image, which then draws that image's label
    (when none is given), its x_T and each DDPM step's noise; the U-Net runs on the batch."""
    config = model.config
    B = request.num_samples
    device = next(model.parameters()).device
    scheduler = scheduler_for(config.schedule, config.timesteps, request.sampler)
    scheduler.set_timesteps(request.steps or default_steps(request.sampler, config.timesteps))
    labels = request.labels
    if config.conditional and labels is None:
        labels = draw_labels(generator, B, config.num_classes)
    guided = config.conditional and request.guidance_scale != 1.0
    x = draw_normal(generator, B, (config.channels, config.image_size, config.image_size))
    for t in scheduler.timesteps.tolist():
        tt = torch.full((B,), t, dtype=torch.long, device=device)
        if guided:
            assert labels is not None  # guided implies conditional, and labels were drawn above
            null = torch.full_like(labels, config.num_classes)
            eps_c, eps_u = model(torch.cat([x, x]).to(device), torch.cat([tt, tt]),
                                 torch.cat([labels, null]).to(device)).float().cpu().chunk(2)
            eps = eps_u + request.guidance_scale * (eps_c - eps_u)
        else:
            eps = model(x.to(device), tt, None if labels is None else labels.to(device)).float().cpu()
        x = scheduler.step(eps, t, x, generator)
    return x.clamp(-1, 1)


FAMILY = Family(
    name="diffusion",
    kinds=("images",),
    conditioning="class",
    config=DiffusionConfig,
    presets={
        "tiny": {"width": 8, "channel_mults": (1, 2), "attention": False, "groups": 4, "timesteps": 100},
        "small": {"width": 32, "channel_mults": (1, 2, 2), "attention": True},
    },
    build=build,
    loss=loss,
    sample=sample,
    description="small U-Net denoising diffusion (DDPM training; DDPM/DDIM/DPM-Solver++ sampling; "
    "classifier-free guidance)",
)
