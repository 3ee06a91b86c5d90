"""gan — a DCGAN-style generative adversarial network with five objectives and class conditioning.

A generator G maps a latent z ~ N(0, I) (and a class label) to an image in [-1, 1]; a
discriminator (critic) D scores images as real or generated. The two play a game, so a GAN has
no single loss to minimise: ``train_step`` alternates D and G updates with one optimizer.

References:
- Goodfellow et al. 2014, "Generative Adversarial Nets": the minimax game and the
  non-saturating generator loss (section 3).
- Radford et al. 2016, "Unsupervised Representation Learning with Deep Convolutional GANs"
  (DCGAN): strided (transposed) convolutions, BatchNorm, ReLU in G / LeakyReLU(0.2) in D,
  tanh output, N(0, 0.02) initialisation.
- Mao et al. 2017, "Least Squares Generative Adversarial Networks" (LSGAN), eq. 2 with a=0, b=c=1.
- Gulrajani et al. 2017, "Improved Training of Wasserstein GANs" (WGAN-GP), eq. 3: the gradient
  penalty; no BatchNorm in the critic since the penalty is per sample.
- Lim & Ye 2017, "Geometric GAN", and Miyato et al. 2018, "Spectral Normalization for GANs":
  the hinge loss and spectral normalisation of the discriminator's weights.
- Miyato & Koyama 2018, "cGANs with Projection Discriminator": D(x, y) = ψ(φ(x)) + <embed(y), φ(x)>;
  class-conditional BatchNorm in G (de Vries et al. 2017; Dumoulin et al. 2017).
- Karras et al. 2018 (Progressive GAN) and Yazıcı et al. 2019, "The Unusual Effectiveness of
  Averaging in GAN Training": sample from an exponential moving average of G. The training loop
  keeps an EMA copy of the whole model, which is that average; nothing here implements it.

Notable choices: image sizes are a 4×4 or 7×7 base doubled 1–4 times (8, 16, 32, 64 and 14, 28,
56, 112); widths halve in G as the resolution doubles and double in D as it halves (capped at 8×).
A conditional generator gets the class twice: as a small embedding beside z (fast to take hold;
with conditional BatchNorm alone the class barely mattered after 400 MNIST steps) and through
conditional BatchNorm. The discriminator flattens its last feature map (as DCGAN's final 4×4
convolution does) and gets BatchNorm only when it has neither spectral norm nor a gradient
penalty. Real and generated images go through D in one concatenated batch; losses and the
gradient penalty run in fp32 under bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

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

GANLoss = Literal["minimax", "non_saturating", "least_squares", "wgan_gp", "hinge"]


class GANConfig(ImageModelConfig):
    loss: GANLoss = Field("hinge", description="adversarial objective")
    latent_dim: int = Field(64, ge=1, le=1024, description="size of the latent z ~ N(0, I)")
    g_width: int = Field(32, ge=4, le=1024, description="generator channels at full resolution")
    d_width: int = Field(32, ge=4, le=1024, description="discriminator channels at full resolution")
    spectral_norm: bool = Field(True, description="spectral normalisation of D's weights")
    gp_weight: float = Field(10.0, ge=0.0, le=1000.0, description="gradient penalty weight (wgan_gp)")
    n_critic: int = Field(1, ge=1, le=10, description="discriminator updates per generator update")
    class_dim: int = Field(16, ge=1, le=1024, description="class embedding beside z (conditional G)")


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(latent_dim=16, g_width=8, d_width=8),  # trains in seconds (tests)
    # 28×28 MNIST on a 2-core CPU in minutes: hinge loss, spectral norm and (when the recipe asks
    # for it) a projection discriminator with class-conditional BatchNorm in G
    "small": dict(latent_dim=64, g_width=32, d_width=32, loss="hinge", spectral_norm=True),
}

BASES = (4, 7)  # side of the first feature map
MAX_DOUBLINGS = 4
SUPPORTED_SIZES = sorted(b * 2**n for b in BASES for n in range(1, MAX_DOUBLINGS + 1))


def layout(image_size: int) -> tuple[int, int]:
    """(base, doublings) with base · 2**doublings == image_size; RecipeError for other sizes."""
    for base in BASES:
        for n in range(1, MAX_DOUBLINGS + 1):
            if base * 2**n == image_size:
                return base, n
    sizes = ", ".join(map(str, SUPPORTED_SIZES))
    raise RecipeError(f"gan cannot make {image_size}×{image_size} images; image_size must be one of {sizes}")


def stage_widths(width: int, n: int) -> list[int]:
    """Channels from the base resolution (index 0) to full resolution (index n), capped at 8×width."""
    return [width * min(2 ** (n - i), 8) for i in range(n + 1)]


# ----------------------------------------------------------------------------- building blocks


def _dcgan_init(module: nn.Module) -> None:
    """Radford et al. 2016: every weight from N(0, 0.02); BatchNorm gains from N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose gain and bias are looked up per class; plain BatchNorm when num_classes == 0."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(channels, affine=num_classes == 0)
        if num_classes:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = self.bn(x)  # (B, C, H, W)
        if not self.num_classes:
            return h
        assert labels is not None, "a conditional generator needs labels"
        return h * self.gain(labels)[:, :, None, None] + self.bias(labels)[:, :, None, None]


class Generator(nn.Module):
    """[z, embed(y)] (B, Z + E) -> Linear -> (B, c0, b, b) -> [ConvT 4×4 stride 2 -> cBN -> ReLU] × n
    -> Conv 3×3 -> tanh -> (B, C, H, W)."""

    def __init__(self, config: GANConfig, num_classes: int):
        super().__init__()
        base, n = layout(config.image_size)
        self.base = base
        widths = stage_widths(config.g_width, n)
        # the class enters twice: an embedding beside z (strong from the first step, since
        # conditional BN gains start at 1 and move only at the learning rate) and conditional BN
        self.embed = nn.Embedding(num_classes, config.class_dim) if num_classes else None
        z_in = config.latent_dim + (config.class_dim if num_classes else 0)
        self.fc = nn.Linear(z_in, widths[0] * base * base, bias=False)
        self.norms = nn.ModuleList([ConditionalBatchNorm2d(widths[0], num_classes)])
        self.ups = nn.ModuleList()
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            self.ups.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False))
            self.norms.append(ConditionalBatchNorm2d(c_out, num_classes))
        self.to_image = nn.Conv2d(widths[-1], config.channels, 3, padding=1)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            assert labels is not None, "a conditional generator needs labels"
            z = torch.cat([z, self.embed(labels)], dim=1)  # (B, Z + E)
        h = self.fc(z).view(z.size(0), -1, self.base, self.base)  # (B, c0, b, b)
        h = F.relu(self.norms[0](h, labels))
        for up, norm in zip(self.ups, self.norms[1:], strict=True):
            h = F.relu(norm(up(h), labels))  # (B, c_i, b·2^i, b·2^i)
        return torch.tanh(self.to_image(h))  # (B, C, H, W) in [-1, 1]


class Discriminator(nn.Module):
    """x (B, C, H, W) -> Conv 3×3 -> [Conv 4×4 stride 2 (-> BN) -> LeakyReLU] × n -> φ(x) (B, F);
    D(x, y) = ψ(φ(x)) + <embed(y), φ(x)> (Miyato & Koyama 2018, eq. 3) -> (B,) logits."""

    def __init__(self, config: GANConfig, num_classes: int):
        super().__init__()
        base, n = layout(config.image_size)
        widths = stage_widths(config.d_width, n)[::-1]  # full resolution first
        # BatchNorm couples the samples of a batch: not with a per-sample gradient penalty, and
        # not needed with spectral norm (Miyato et al. 2018 use none)
        batch_norm = not config.spectral_norm and config.loss != "wgan_gp"
        layers: list[nn.Module] = [nn.Conv2d(config.channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
        self.features = nn.Sequential(*layers)
        features = widths[-1] * base * base
        self.head = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None
        self.apply(_dcgan_init)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if config.spectral_norm:  # on the initialised weights; every weight of D (Miyato et al. 2018)
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x).flatten(1)  # (B, F)
        out = self.head(h).squeeze(1)  # (B,)
        if self.embed is not None:
            assert labels is not None, "a conditional discriminator needs labels"
            out = out + (self.embed(labels) * h).sum(dim=1)  # projection term
        return out


class GAN(nn.Module):
    """The two players; ``forward`` is the generator: (z (B, Z), labels (B,) | None) -> (B, C, H, W)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        if config.conditional and config.num_classes == 0:
            raise RecipeError("gan: conditional needs class labels (num_classes > 0); "
                              "use a labelled dataset or set conditional: false")
        self.config = config
        self.num_classes = config.num_classes if config.conditional else 0
        self.generator = Generator(config, self.num_classes)
        self.discriminator = Discriminator(config, self.num_classes)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels)


def build(config: GANConfig) -> GAN:
    layout(config.image_size)  # fail early, naming the supported sizes
    return GAN(config)


# ----------------------------------------------------------------------------- objectives
# Pure functions of D's logits (any shape); each returns a scalar. "d" is minimised by D, "g" by G.


def bce_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Goodfellow et al. 2014: -E[log σ(D(x))] - E[log(1 - σ(D(G(z))))]."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def minimax_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """Goodfellow et al. 2014, the game as written: G minimises E[log(1 - σ(D(G(z))))] (saturates)."""
    return -F.softplus(fake).mean()


def non_saturating_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """Goodfellow et al. 2014, section 3: G maximises E[log σ(D(G(z)))] instead."""
    return F.softplus(-fake).mean()


def least_squares_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Mao et al. 2017, eq. 2 (a=0, b=1): ½E[(D(x) - 1)²] + ½E[D(G(z))²]."""
    return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()


def least_squares_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """Mao et al. 2017, eq. 2 (c=1): ½E[(D(G(z)) - 1)²]."""
    return 0.5 * ((fake - 1) ** 2).mean()


def wasserstein_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Gulrajani et al. 2017, eq. 3 without the penalty: E[D(G(z))] - E[D(x)]."""
    return fake.mean() - real.mean()


def wasserstein_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """-E[D(G(z))]; also the hinge generator loss (Lim & Ye 2017; Miyato et al. 2018)."""
    return -fake.mean()


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Lim & Ye 2017; Miyato et al. 2018, eq. 16: E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


LOSSES: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        Callable[[torch.Tensor], torch.Tensor]]] = {
    "minimax": (bce_d_loss, minimax_g_loss),
    "non_saturating": (bce_d_loss, non_saturating_g_loss),
    "least_squares": (least_squares_d_loss, least_squares_g_loss),
    "wgan_gp": (wasserstein_d_loss, wasserstein_g_loss),
    "hinge": (hinge_d_loss, wasserstein_g_loss),
}


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Gulrajani et al. 2017, eq. 3: E[(‖∇ D(x̂)‖₂ - 1)²] at x̂ = εx + (1 - ε)x̃, ε ~ U[0, 1] per sample.

    Differentiable in the critic's weights (create_graph). Always fp32: under bf16 autocast the
    gradient norm of a near-1-Lipschitz critic would be off by the format's 3 significant digits.
    """
    shape = (real.size(0),) + (1,) * (real.ndim - 1)
    eps = torch.rand(shape, generator=generator, device=generator.device).to(real.device)
    with torch.autocast(real.device.type, enabled=False):
        x_hat = (eps * real.float() + (1 - eps) * fake.detach().float()).requires_grad_(True)
        scores = critic(x_hat).float()
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
        return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def draw_latents(n: int, latent_dim: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """z ~ N(0, I), (n, latent_dim), drawn on the generator's device then moved to the model's."""
    return torch.randn(n, latent_dim, generator=generator, device=generator.device).to(device)


def _labels(model: GAN, batch: ImageBatch) -> torch.Tensor | None:
    return batch.labels.to(batch.images.device) if model.conditional else None


def loss(model: GAN, batch: ImageBatch) -> dict[str, torch.Tensor]:
    """Both players' adversarial losses on one batch, no update (validation and logging).

    Generated images use the batch's labels. The gradient penalty is left out: it needs
    gradients, and validation runs under no_grad.
    """
    d_fn, g_fn = LOSSES[model.config.loss]
    real, labels = batch.images, _labels(model, batch)
    z = draw_latents(real.size(0), model.config.latent_dim, batch.generator, real.device)
    fake = model.generator(z, labels)
    both = torch.cat([labels, labels]) if labels is not None else None
    real_logits, fake_logits = model.discriminator(torch.cat([real, fake]), both).float().chunk(2)
    d_loss, g_loss = d_fn(real_logits, fake_logits), g_fn(fake_logits)
    return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss}


def _clip(module: nn.Module, grad_clip: float) -> None:
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)


def train_step(model: GAN, batch: ImageBatch, optimizer: torch.optim.Optimizer,
               grad_clip: float) -> dict[str, float]:
    """One GAN update: ``n_critic`` discriminator steps on chunks of the batch, then one generator step.

    One optimizer holds both players' parameters; torch optimizers skip parameters whose grad is
    None, so each phase steps only the player whose gradients it leaves set.
    """
    cfg = model.config
    G, D = model.generator, model.discriminator
    d_fn, g_fn = LOSSES[cfg.loss]
    real, labels = batch.images, _labels(model, batch)
    B = real.size(0)

    # 1. discriminator: fakes without a graph into G, so backward leaves G's grads None
    reals = real.chunk(cfg.n_critic)
    label_chunks = labels.chunk(cfg.n_critic) if labels is not None else [None] * len(reals)
    d_losses, gaps, gps = [], [], []
    for real_c, labels_c in zip(reals, label_chunks, strict=True):
        z = draw_latents(real_c.size(0), cfg.latent_dim, batch.generator, real.device)
        with torch.no_grad():
            fake = G(z, labels_c)
        optimizer.zero_grad(set_to_none=True)
        both = torch.cat([labels_c, labels_c]) if labels_c is not None else None
        real_logits, fake_logits = D(torch.cat([real_c, fake]), both).float().chunk(2)
        d_loss = d_fn(real_logits, fake_logits)
        total = d_loss
        if cfg.loss == "wgan_gp":
            def critic(x: torch.Tensor, y: torch.Tensor | None = labels_c) -> torch.Tensor:
                return D(x, y)  # the default binds this chunk's labels (mypy cannot type a lambda's)

            gp = gradient_penalty(critic, real_c, fake, batch.generator)
            total = d_loss + cfg.gp_weight * gp
            gps.append(gp.detach())
        total.backward()
        _clip(D, grad_clip)
        optimizer.step()
        d_losses.append(d_loss.detach())
        gaps.append((real_logits.mean() - fake_logits.mean()).detach())

    # 2. generator: the loss flows through D, whose grads are dropped before the step
    z = draw_latents(B, cfg.latent_dim, batch.generator, real.device)
    optimizer.zero_grad(set_to_none=True)
    g_loss = g_fn(D(G(z, labels), labels).float())
    g_loss.backward()
    for p in D.parameters():
        p.grad = None
    _clip(G, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    d_mean, g_mean = float(torch.stack(d_losses).mean()), float(g_loss.detach())
    out = {"loss": d_mean + g_mean, "d_loss": d_mean, "g_loss": g_mean,
           # E[D(x)] - E[D(G(z))]: the critic's Wasserstein estimate under wgan_gp, a logit gap otherwise
           "wasserstein": float(torch.stack(gaps).mean())}
    if gps:
        out["gp"] = float(torch.stack(gps).mean())
    return out


# ----------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample(model: GAN, request: ImageRequest, generator: Generators) -> torch.Tensor:
    """(B, C, H, W) images in [-1, 1] from ``request.latents`` or fresh z, in eval mode.

    A conditional model takes ``request.labels`` (B,), or draws them uniformly when None; an
    unconditional one ignores labels. ``generator``: one for the batch, or one per image (z,
    then the label, from each image's own).
    """
    cfg = model.config
    device = next(model.parameters()).device
    B = request.num_samples
    if request.latents is not None:
        if tuple(request.latents.shape) != (B, cfg.latent_dim):
            raise InvalidInput(f"latents must have shape ({B}, {cfg.latent_dim}), "
                               f"got {tuple(request.latents.shape)}")
        z = request.latents.to(device=device, dtype=torch.float32)
    else:
        z = draw_normal(generator, B, (cfg.latent_dim,)).to(device)
    labels = None
    if model.conditional:
        if request.labels is None:
            labels = draw_labels(generator, B, model.num_classes).to(device)
        else:
            labels = request.labels.to(device=device, dtype=torch.long)
            if labels.shape != (B,) or (labels < 0).any() or (labels >= model.num_classes).any():
                raise InvalidInput(f"labels must be {B} class ids in [0, {model.num_classes})")
    was_training = model.training
    model.eval()
    try:
        return model.generator(z, labels).float()
    finally:
        model.train(was_training)


FAMILY = Family(
    name="gan",
    kinds=("images",),
    conditioning="class",
    config=GANConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    sample=sample,
    train_step=train_step,
    selects_best=False,
    latent_shape=lambda c: (c.latent_dim,),
    description="DCGAN-style GAN (minimax, non-saturating, least-squares, WGAN-GP, hinge; "
                "spectral norm, projection discriminator)",
    exempt={"loss_falls": "adversarial: neither player's loss need fall; it trains through train_step"},
)
