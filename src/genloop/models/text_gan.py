"""text-gan — gan.py's generator and discriminator conditioned on a sentence instead of a class.

The caption goes through the family's text encoder (``models/text_encoder.py``: from scratch,
genloop's masked-LM pretrained one, or MiniLM), whose token states are averaged over the real
tokens (``masked_mean``) into one sentence vector s. Where the class-conditional GAN looks up a
class embedding, this one projects s (a linear layer and LeakyReLU, ``class_dim`` wide) and uses
it in the same two places and one more:

- the generator gets the projected text beside z (Reed et al. 2016, "Generative Adversarial Text
  to Image Synthesis": the sentence vector concatenated to the noise) and through conditional
  BatchNorm whose gain and bias are linear in it (de Vries et al. 2017, as gan.py's per-class
  gains; started at 1 and 0, so it begins as plain BatchNorm);
- the discriminator is a projection discriminator (Miyato & Koyama 2018) on the text:
  D(x, s) = ψ(φ(x)) + <W·proj(s), φ(x)>;
- matching-aware (Reed et al. 2016, GAN-CLS; ``mismatch``): D also sees real images with
  another image's caption, as fakes, so it must read the caption, not only judge realism.
  Its fake term is the mean over generated and mismatched pairs (each half, as in GAN-CLS).

The text encoder is trained by the discriminator's loss (the player that must tell a matching
caption from another); in the generator's turn the sentence vectors are computed without a
graph, so only G moves. A frozen encoder (``text_encoder.freeze``) is read under ``no_grad``.
Everything else — losses, spectral norm, gradient penalty, sizes — is gan.py's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from pydantic import Field

from genloop.errors import InvalidInput, RecipeError
from genloop.models.family import Family, Generators, ImageRequest, ImageTextBatch, draw_normal
from genloop.models.fusion import masked_mean
from genloop.models.gan import (
    LOSSES,
    ConditionalBatchNorm2d,
    Discriminator,
    GANConfig,
    Generator,
    _dcgan_init,
    draw_latents,
    gradient_penalty,
    layout,
)
from genloop.models.text_encoder import TextEncoderSpec, build_text_encoder, encode, encoder_width


class TextGANConfig(GANConfig):
    """gan.py's config (``class_dim``: the width of the projected sentence vector, in the class
    embedding's place; ``num_classes``/``conditional`` are not read) with a text encoder."""

    vocab_size: int = Field(0, ge=0, le=1_000_000, description="set from the tokenizer")
    text_encoder: TextEncoderSpec = Field(default_factory=TextEncoderSpec)
    mismatch: bool = Field(True, description="D also scores real images with another image's "
                           "caption as fake (matching-aware, GAN-CLS)")


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(latent_dim=16, g_width=8, d_width=8, class_dim=16,
                 text_encoder={"hidden": 16, "layers": 1, "heads": 2, "max_tokens": 16}),
    # 32×32 shapes on a 2-core CPU: half gan.py's small widths (a step of 64 images, with D
    # reading 192, costs a third of theirs: about 4 s on 2 busy cores, 11 s at width 32)
    "small": dict(latent_dim=64, g_width=16, d_width=16, class_dim=64, loss="hinge",
                  spectral_norm=True, text_encoder={"hidden": 64, "layers": 2, "heads": 4,
                                                    "max_tokens": 32}),
}


class TextBatchNorm2d(nn.Module):
    """BatchNorm whose per-channel gain and bias move with the projected text t (B, E)."""

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.gain = nn.Linear(text_dim, channels)
        self.bias = nn.Linear(text_dim, channels)
        _dcgan_init(self.bn)
        for m in (self.gain, self.bias):  # starts as plain BatchNorm
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        assert t is not None, "a text-conditioned generator needs the text"
        h = self.bn(x)  # (B, C, H, W)
        return h * (1 + self.gain(t))[:, :, None, None] + self.bias(t)[:, :, None, None]


class TextGenerator(nn.Module):
    """[z, proj(s)] -> gan.py's generator with text-conditional BatchNorm -> (B, C, H, W)."""

    def __init__(self, config: TextGANConfig, text_width: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(text_width, config.class_dim), nn.LeakyReLU(0.2))
        wide = GANConfig.model_validate({**config.model_dump(include=set(GANConfig.model_fields)),
                                         "latent_dim": config.latent_dim + config.class_dim})
        self.net = Generator(wide, num_classes=0)
        self.net.norms = nn.ModuleList(TextBatchNorm2d(n.bn.num_features, config.class_dim)
                                       for n in self.net.norms if isinstance(n, ConditionalBatchNorm2d))
        _dcgan_init(self.project[0])

    def forward(self, z: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        t = self.project(sentence)  # (B, E)
        return self.net(torch.cat([z, t], dim=1), t)  # the norms read t as gan.py's read labels


class TextDiscriminator(nn.Module):
    """φ(x) from gan.py's discriminator; D(x, s) = ψ(φ(x)) + <W·proj(s), φ(x)> -> (B,) logits."""

    def __init__(self, config: TextGANConfig, text_width: int):
        super().__init__()
        self.net = Discriminator(config, num_classes=0)
        features = self.net.head.in_features  # what φ(x) flattens to
        self.project = nn.Sequential(nn.Linear(text_width, config.class_dim), nn.LeakyReLU(0.2))
        self.embed = nn.Linear(config.class_dim, features, bias=False)
        _dcgan_init(self.project[0])
        _dcgan_init(self.embed)
        if config.spectral_norm:
            for m in (self.project[0], self.embed):
                nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        h = self.net.features(x).flatten(1)  # (B, F)
        return self.net.head(h).squeeze(1) + (self.embed(self.project(sentence)) * h).sum(dim=1)


class TextGAN(nn.Module):
    """The text encoder and the two players; ``forward`` is the generator:
    (z (B, Z), ids (B, T), mask (B, T)) -> (B, C, H, W)."""

    def __init__(self, config: TextGANConfig):
        super().__init__()
        spec = config.text_encoder
        if spec.config is None and config.vocab_size == 0:
            raise RecipeError("text-gan: vocab_size is 0; train it on image_text data (the "
                              "captions' tokenizer sets it) or set text_encoder.ref")
        self.config = config
        self.text_encoder = build_text_encoder(spec, config.vocab_size)
        width = encoder_width(spec, config.vocab_size)
        self.generator = TextGenerator(config, width)
        self.discriminator = TextDiscriminator(config, width)

    @property
    def frozen_text(self) -> bool:
        return not any(p.requires_grad for p in self.text_encoder.parameters())

    def sentence(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One vector (B, H) per caption: the encoder's token states averaged over its tokens."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_text):
            return masked_mean(encode(self.text_encoder, ids, mask), mask)

    def forward(self, z: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.generator(z, self.sentence(ids, mask))


def build(config: TextGANConfig) -> TextGAN:
    layout(config.image_size)  # fail early, naming the supported sizes
    return TextGAN(config)


def _captions(batch: ImageTextBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if batch.captions is None or batch.caption_mask is None:
        raise InvalidInput("text-gan trains on captioned images (an image_text batch)")
    return batch.captions.to(device), batch.caption_mask.to(device)


def _d_logits(model: TextGAN, real: torch.Tensor, fake: torch.Tensor,
              s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D's logits on (real, its caption) and on the fakes: (generated, its caption), then, when
    matching-aware, (real, another image's caption)."""
    mismatch = model.config.mismatch and real.size(0) > 1
    images = [real, fake] + ([real] if mismatch else [])
    texts = [s, s] + ([s.roll(1, dims=0)] if mismatch else [])
    logits = model.discriminator(torch.cat(images), torch.cat(texts)).float()
    return logits[: real.size(0)], logits[real.size(0):]


def loss(model: TextGAN, batch: ImageTextBatch) -> dict[str, torch.Tensor]:
    """Both players' losses on one batch, no update (validation, logging); no gradient penalty."""
    d_fn, g_fn = LOSSES[model.config.loss]
    real = batch.images
    s = model.sentence(*_captions(batch, real.device))
    z = draw_latents(real.size(0), model.config.latent_dim, batch.generator, real.device)
    fake = model.generator(z, s)
    real_logits, fake_logits = _d_logits(model, real, fake, s)
    d_loss, g_loss = d_fn(real_logits, fake_logits), g_fn(fake_logits[: real.size(0)])
    return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss}


def _clip(params: list[nn.Parameter], grad_clip: float) -> None:
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)


def train_step(model: TextGAN, batch: ImageTextBatch, optimizer: torch.optim.Optimizer,
               grad_clip: float) -> dict[str, float]:
    """``n_critic`` discriminator steps (the text encoder learns with D), then one generator
    step; one optimizer, each phase leaving only its player's gradients set (as gan.py's)."""
    cfg = model.config
    G, D = model.generator, model.discriminator
    d_fn, g_fn = LOSSES[cfg.loss]
    real = batch.images
    ids, mask = _captions(batch, real.device)
    d_params = list(D.parameters()) + [p for p in model.text_encoder.parameters() if p.requires_grad]

    # 1. discriminator (and text encoder): fakes without a graph into G
    d_losses, gaps, gps = [], [], []
    for real_c, ids_c, mask_c in zip(real.chunk(cfg.n_critic), ids.chunk(cfg.n_critic),
                                     mask.chunk(cfg.n_critic), strict=True):
        optimizer.zero_grad(set_to_none=True)
        s = model.sentence(ids_c, mask_c)
        z = draw_latents(real_c.size(0), cfg.latent_dim, batch.generator, real.device)
        with torch.no_grad():
            fake = G(z, s.detach())
        real_logits, fake_logits = _d_logits(model, real_c, fake, s)
        d_loss = d_fn(real_logits, fake_logits)
        total = d_loss
        if cfg.loss == "wgan_gp":
            fixed = s.detach()

            def critic(x: torch.Tensor, t: torch.Tensor = fixed) -> torch.Tensor:
                return D(x, t)

            gp = gradient_penalty(critic, real_c, fake, batch.generator)
            total = d_loss + cfg.gp_weight * gp
            gps.append(gp.detach())
        total.backward()
        _clip(d_params, grad_clip)
        optimizer.step()
        d_losses.append(d_loss.detach())
        gaps.append((real_logits.mean() - fake_logits[: real_c.size(0)].mean()).detach())

    # 2. generator: the sentence vectors without a graph, D's grads dropped before the step
    with torch.no_grad():
        s = model.sentence(ids, mask)
    z = draw_latents(real.size(0), cfg.latent_dim, batch.generator, real.device)
    optimizer.zero_grad(set_to_none=True)
    g_loss = g_fn(D(G(z, s), s).float())
    g_loss.backward()
    for p in D.parameters():
        p.grad = None
    _clip(list(G.parameters()), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    d_mean, g_mean = float(torch.stack(d_losses).mean()), float(g_loss.detach())
    out = {"loss": d_mean + g_mean, "d_loss": d_mean, "g_loss": g_mean,
           "wasserstein": float(torch.stack(gaps).mean())}
    if gps:
        out["gp"] = float(torch.stack(gps).mean())
    return out


@torch.no_grad()
def sample(model: TextGAN, request: ImageRequest, generator: Generators) -> torch.Tensor:
    """(B, C, H, W) images in [-1, 1], image i from ``request.prompt_ids[i]`` (its mask
    ``prompt_mask[i]``; all True when None) and ``request.latents`` or fresh z, in eval mode."""
    cfg = model.config
    device = next(model.parameters()).device
    B = request.num_samples
    if request.prompt_ids is None:
        raise InvalidInput("text-gan draws what a prompt says: give each image's prompt "
                           "(prompt_ids), not a class label")
    ids = request.prompt_ids.to(device=device, dtype=torch.long)
    mask = (torch.ones_like(ids, dtype=torch.bool) if request.prompt_mask is None
            else request.prompt_mask.to(device=device, dtype=torch.bool))
    vocab = model.text_encoder.config.vocab_size
    if ids.ndim != 2 or ids.size(0) != B or mask.shape != ids.shape:
        raise InvalidInput(f"prompt_ids and prompt_mask must be ({B}, T), got "
                           f"{tuple(ids.shape)} and {tuple(mask.shape)}")
    if ((ids < 0) | (ids >= vocab)).any():
        raise InvalidInput(f"prompt token ids must be in [0, {vocab})")
    if request.latents is not None:
        if tuple(request.latents.shape) != (B, cfg.latent_dim):
            raise InvalidInput(f"latents must have shape ({B}, {cfg.latent_dim}), "
                               f"got {tuple(request.latents.shape)}")
        z = request.latents.to(device=device, dtype=torch.float32)
    else:
        z = draw_normal(generator, B, (cfg.latent_dim,)).to(device)
    was_training = model.training
    model.eval()
    try:
        return model(z, ids, mask).float()
    finally:
        model.train(was_training)


FAMILY = Family(
    name="text-gan",
    kinds=("image_text",),
    conditioning="text",
    config=TextGANConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    sample=sample,
    train_step=train_step,
    selects_best=False,
    latent_shape=lambda c: (c.latent_dim,),
    description="gan.py's GAN conditioned on a sentence (pooled text embedding beside z and in "
                "conditional BatchNorm; matching-aware projection discriminator)",
    exempt={"loss_falls": "adversarial: neither player's loss need fall; it trains through train_step"},
)
