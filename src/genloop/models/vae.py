"""vae — a convolutional variational autoencoder trained on the β-ELBO.

The encoder maps an image to a diagonal Gaussian q(z|x) = N(mu, exp(logvar)); a sample
z = mu + exp(logvar/2)·eps (the reparameterisation trick) goes through the decoder to a likelihood
p(x|z); the prior is p(z) = N(0, I). Training minimises, per image,

    recon + beta·KL(q(z|x) || p(z)),   recon = -log p(x|z)            (Higgins et al. 2017)

which for beta = 1 is the negative evidence lower bound (Kingma & Welling 2014, eq. 10, with the
KL in closed form, their appendix B). With ``conditional`` the class label enters both encoder and
decoder (a CVAE, Sohn et al. 2015): q(z|x, y), p(x|z, y), and the prior stays N(0, I).

Test log-likelihood is the importance-weighted bound (Burda et al. 2016, eq. 8):

    log p(x) ≥ log (1/k) Σ_i p(x, z_i) / q(z_i|x),   z_i ~ q(z|x)

which equals the ELBO for k = 1 and tightens as k grows; ``importance_nll`` returns its negative,
in nats per image.

Decoders:
- ``bernoulli``: logits per pixel. Images in [-1, 1] are mapped to p = (x+1)/2 and dynamically
  binarised, x ~ Bernoulli(p), afresh on every call (the standard protocol for MNIST likelihoods,
  e.g. Burda et al. 2016, sec. 5). Samples are the decoder mean sigmoid(logits), mapped to [-1, 1].
- ``gaussian``: a mean per pixel and one learned log-scale per channel; the NLL is in nats of the
  continuous density of the [-1, 1]-scaled image. The log-scale has a floor (``min_log_scale``):
  on near-binary data a free scale shrinks without bound and the density diverges.

Notable choices: no normalisation layers, so an image's likelihood never depends on its batch;
stride-2 4×4 convolutions down to a quarter of the side (28 → 7, 32 → 8) and transposed ones back
up, with a dense layer between; every random number (binarisation, eps, latents, labels) comes
from the generator passed in; likelihoods and KL are summed in fp32 even under bf16 autocast.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from genloop.errors import InvalidInput, RecipeError
from genloop.models.family import (
    Family,
    Generators,
    ImageBatch,
    ImageModelConfig,
    ImageRequest,
    draw_labels,
    draw_normal,
)

SUPPORTED_SIZES = (8, 16, 28, 32)


class VAEConfig(ImageModelConfig):
    latent_dim: int = Field(32, ge=1, le=1024, description="dimensions of z")
    width: int = Field(32, ge=4, le=512, description="channels of the first conv; the second has 2×")
    hidden: int = Field(256, ge=8, le=8192, description="width of the dense layer on each side of z")
    decoder: Literal["bernoulli", "gaussian"] = "bernoulli"
    beta: float = Field(1.0, ge=0.0, le=100.0, description="KL weight (1: the ELBO; >1: β-VAE)")
    label_dim: int = Field(16, ge=1, le=1024, description="class embedding size (conditional only)")
    min_log_scale: float = Field(-5.0, ge=-20.0, le=5.0, description="floor of the gaussian log σ")


PRESETS = {
    "tiny": dict(latent_dim=8, width=16, hidden=64),
    "small": dict(latent_dim=32, width=32, hidden=256),  # 28×28 MNIST on a CPU in minutes
}


# --- pure math ---------------------------------------------------------------------------------


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, (B, D) -> (B,). Kingma & Welling 2014, app. B."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over the last dimension, (..., D) -> (...)."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).square() * (-logvar).exp()).sum(dim=-1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | logits) for binary x, summed per image, (B, C, H, W) -> (B,), in fp32."""
    nll = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    return nll.flatten(1).sum(dim=1)


def gaussian_nll(mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, σ²) summed per image, (B, C, H, W) -> (B,); ``log_scale`` (C,) is log σ."""
    ls = log_scale.float().view(1, -1, 1, 1)
    nll = 0.5 * math.log(2 * math.pi) + ls + 0.5 * ((x.float() - mean.float()) * (-ls).exp()).square()
    return nll.flatten(1).sum(dim=1)


def binarize(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dynamic binarisation: images in [-1, 1] -> {0, 1} with P(1) = (x+1)/2, drawn from ``generator``."""
    p = ((images.float() + 1) / 2).clamp(0, 1)
    return torch.bernoulli(p.to(generator.device), generator=generator).to(images.device)


def _randn(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise from ``generator`` (on its device), moved to ``like``'s device."""
    return torch.randn(shape, generator=generator, device=generator.device).to(like.device)


# --- the network -------------------------------------------------------------------------------


class Encoder(nn.Module):
    """(B, C, H, W) [+ labels] -> mu, logvar, each (B, latent_dim)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        w, s = config.width, config.image_size // 4
        self.conv = nn.Sequential(
            nn.Conv2d(config.channels, w, 4, stride=2, padding=1), nn.SiLU(),  # (B, w, H/2, W/2)
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.SiLU(),  # (B, 2w, H/4, W/4)
        )
        self.label = nn.Embedding(config.num_classes, config.label_dim) if config.conditional else None
        extra = config.label_dim if config.conditional else 0
        self.fc = nn.Sequential(nn.Linear(2 * w * s * s + extra, config.hidden), nn.SiLU())
        self.out = nn.Linear(config.hidden, 2 * config.latent_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x).flatten(1)
        if self.label is not None:
            h = torch.cat([h, self.label(labels).to(h.dtype)], dim=1)
        mu, logvar = self.out(self.fc(h)).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """z (B, latent_dim) [+ labels] -> logits or means (B, C, H, W)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        w, self.s = config.width, config.image_size // 4
        self.label = nn.Embedding(config.num_classes, config.label_dim) if config.conditional else None
        extra = config.label_dim if config.conditional else 0
        self.fc = nn.Sequential(
            nn.Linear(config.latent_dim + extra, config.hidden), nn.SiLU(),
            nn.Linear(config.hidden, 2 * w * self.s * self.s), nn.SiLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.SiLU(),  # (B, w, H/2, W/2)
            nn.ConvTranspose2d(w, config.channels, 4, stride=2, padding=1),  # (B, C, H, W)
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.label is not None:
            z = torch.cat([z, self.label(labels).to(z.dtype)], dim=1)
        h = self.fc(z)
        return self.deconv(h.view(h.size(0), -1, self.s, self.s))


class VAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        if config.image_size not in SUPPORTED_SIZES:
            sizes = ", ".join(map(str, SUPPORTED_SIZES))
            raise RecipeError(
                f"vae supports image_size {sizes}; got {config.image_size} (resize the dataset)"
            )
        if config.conditional and config.num_classes < 1:
            raise RecipeError("vae: conditional=true needs num_classes ≥ 1 (a labelled dataset)")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        if config.decoder == "gaussian":  # log σ per channel (absent otherwise: DDP wants no idle weights)
            self.log_scale = nn.Parameter(torch.zeros(config.channels))

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder: (mu, logvar) of q(z|x), each (B, latent_dim)."""
        return self.encoder(x, labels)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder: logits (bernoulli) or means (gaussian) of p(x|z), (B, C, H, W)."""
        return self.decoder(z, labels)

    def recon_nll(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """-log p(target | decoder output) per image, (B,) nats in fp32."""
        if self.config.decoder == "bernoulli":
            return bernoulli_nll(out, target)
        return gaussian_nll(out, self.log_scale.clamp(min=self.config.min_log_scale), target)

    def target(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """What the likelihood scores: binarised images (bernoulli) or the images themselves."""
        return binarize(images, generator) if self.config.decoder == "bernoulli" else images.float()


def build(config: VAEConfig) -> VAE:
    return VAE(config)


def _labels(model: VAE, batch: ImageBatch) -> torch.Tensor | None:
    return batch.labels if model.config.conditional else None


# --- objective and bound -----------------------------------------------------------------------


def loss(model: VAE, batch: ImageBatch) -> dict[str, torch.Tensor]:
    """β-ELBO, averaged over images: loss = recon + beta·kl; elbo = -(recon + kl) (nats per image).

    Draws from ``batch.generator`` in this order: the binarisation (bernoulli), then eps (B, D).
    """
    labels = _labels(model, batch)
    x = model.target(batch.images, batch.generator)  # (B, C, H, W)
    mu, logvar = model(x, labels)
    mu, logvar = mu.float(), logvar.float()
    eps = _randn(tuple(mu.shape), batch.generator, mu)
    z = mu + (0.5 * logvar).exp() * eps  # reparameterisation, Kingma & Welling 2014 eq. 4
    recon = model.recon_nll(model.decode(z, labels), x).mean()
    kl = gaussian_kl(mu, logvar).mean()
    return {
        "loss": recon + model.config.beta * kl,
        "recon": recon,
        "kl": kl,
        "elbo": -(recon + kl).detach(),
    }


@torch.no_grad()
def importance_nll(model: VAE, batch: ImageBatch, k: int, chunk_images: int = 2048) -> torch.Tensor:
    """-log p(x) estimated from k importance samples of q(z|x), (B,) nats (Burda et al. 2016).

    1. x = the likelihood's target (one binarisation per image, shared by all k samples)
    2. q(z|x) = N(mu, σ²) from one encoder pass
    3. for chunks of samples: z_i = mu + σ·eps_i, log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)
    4. -log p(x) ≈ -(logsumexp_i log w_i - log k)

    The decoder sees at most ``chunk_images`` images at once (k=1000 on 100 images runs in 50
    passes). Draws from ``batch.generator`` in the order of ``loss``; with k=1 the estimate is
    the single-sample negative ELBO for the same draws.
    """
    if k < 1:
        raise InvalidInput(f"importance samples k must be ≥ 1, got {k}")
    labels = _labels(model, batch)
    x = model.target(batch.images, batch.generator)  # (B, C, H, W)
    mu, logvar = model(x, labels)
    mu, logvar = mu.float(), logvar.float()
    B, D = mu.shape
    per_chunk = max(1, chunk_images // B)
    log_w = []
    for start in range(0, k, per_chunk):
        n = min(per_chunk, k - start)
        eps = _randn((n, B, D), batch.generator, mu)
        z = mu + (0.5 * logvar).exp() * eps  # (n, B, D)
        flat_labels = labels.repeat(n) if labels is not None else None
        out = model.decode(z.reshape(n * B, D), flat_labels)  # (n·B, C, H, W)
        log_px = -model.recon_nll(out, x.repeat(n, 1, 1, 1)).view(n, B)
        log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
        log_qz = log_normal(z, mu, logvar)
        log_w.append(log_px + log_pz - log_qz)  # (n, B)
    return -(torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k))


# --- sampling ----------------------------------------------------------------------------------


@torch.no_grad()
def sample(model: VAE, request: ImageRequest, generator: Generators) -> torch.Tensor:
    """Decoder means for z ~ N(0, I) (or ``request.latents``), (B, C, H, W) in [-1, 1].

    Conditional models take ``request.labels``; without them, labels are drawn uniformly from
    ``generator`` (after z). ``generator``: one for the batch, or one per image.
    """
    config: VAEConfig = model.config
    param = next(model.parameters())
    B, D = request.num_samples, config.latent_dim
    if request.latents is not None:
        if tuple(request.latents.shape) != (B, D):
            raise InvalidInput(f"latents must have shape ({B}, {D}), got {tuple(request.latents.shape)}")
        z = request.latents.to(param.device, torch.float32)
    else:
        z = draw_normal(generator, B, (D,)).to(param.device)
    labels = None
    if config.conditional:
        if request.labels is None:
            labels = draw_labels(generator, B, config.num_classes)
        else:
            labels = request.labels
            if labels.shape != (B,) or labels.min() < 0 or labels.max() >= config.num_classes:
                raise InvalidInput(f"labels must be {B} class ids in [0, {config.num_classes})")
        labels = labels.to(param.device, torch.long)
    out = model.decode(z.to(param.dtype), labels).float()
    if config.decoder == "bernoulli":
        return torch.sigmoid(out) * 2 - 1
    return out.clamp(-1, 1)


FAMILY = Family(
    name="vae",
    kinds=("images",),
    conditioning="class",
    config=VAEConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    sample=sample,
    latent_shape=lambda c: (c.latent_dim,),
    importance_nll=importance_nll,
    description="convolutional VAE (β-ELBO, bernoulli or gaussian decoder, class-conditional CVAE)",
)
