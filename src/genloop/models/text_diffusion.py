"""Text-to-image diffusion: the U-Net's feature maps read the caption's token states.

The network is diffusion's U-Net (``models/diffusion.py``: its ResBlock, self-attention,
timestep embedding and noise scheduler, imported) with a fusion block (``models/fusion.py``)
after every ResBlock of the levels in ``fusion_levels`` and in the middle: each position of the
feature map reads the token states of the prompt from the text encoder (``models/text_encoder.py``,
a small BERT trained with it, or a pretrained one). That is latent diffusion's conditioning
(Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models": transformer
blocks with cross-attention to the text encoder at the lower resolutions of the U-Net) without
the latent space: the images are 32×32.

Classifier-free guidance on text (Ho & Salimans 2021; GLIDE, Nichol et al. 2022): in training
each caption is dropped to the empty caption (mask all False: the fusion blocks read nothing)
with probability ``p_uncond``; at sampling ε = ε_∅ + s·(ε_c − ε_∅) with s the guidance scale,
both estimates from one batched pass. DDPM, DDIM or DPM-Solver++ through the shared scheduler; with one
generator per image, image i draws its x_T and every DDPM step's noise from generator i alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from genloop.errors import RecipeError
from genloop.models.diffusion import Attention, DiffusionConfig, ResBlock, timestep_embedding
from genloop.models.family import Family, Generators, ImageRequest, ImageTextBatch, draw_normal
from genloop.models.fusion import FusionKind, fuse_map, make_fusion
from genloop.models.schedulers import default_steps, scheduler_for, training_scheduler
from genloop.models.text_encoder import TextEncoderSpec, build_text_encoder, encode, encoder_width


class TextDiffusionConfig(DiffusionConfig):
    vocab_size: int = Field(0, ge=0, le=1_000_000, description="set from the tokenizer")
    text_encoder: TextEncoderSpec = Field(default_factory=TextEncoderSpec)
    fusion: FusionKind = Field("cross_attention", description="how the feature maps read the "
                               "prompt: cross_attention (per token), concat or film (pooled)")
    fusion_levels: tuple[int, ...] | None = Field(
        None, description="resolution levels (0 = full) with a fusion block after each ResBlock; "
        "None: the two lowest. The middle always has one")
    fusion_heads: int = Field(4, ge=1, le=16, description="cross-attention heads")
    p_uncond: float = Field(0.1, ge=0.0, le=1.0,
                            description="probability of dropping the caption in training (guidance)")

    @model_validator(mode="after")
    def _check_fusion(self) -> TextDiffusionConfig:
        levels = len(self.channel_mults)
        bad = [lv for lv in self.fusion_levels or () if not 0 <= lv < levels]
        if bad:
            raise RecipeError(f"text-diffusion: fusion_levels {bad} are not levels of channel_mults "
                              f"(0..{levels - 1})")
        if self.fusion == "cross_attention" and any(self.width * m % self.fusion_heads
                                                    for m in self.channel_mults):
            raise RecipeError(f"text-diffusion: width × channel_mults must be multiples of "
                              f"fusion_heads ({self.fusion_heads})")
        return self

    @property
    def fused_levels(self) -> tuple[int, ...]:
        levels = len(self.channel_mults)
        if self.fusion_levels is not None:
            return self.fusion_levels
        return tuple(range(max(0, levels - 2), levels))


class TextUNet(nn.Module):
    """ε_θ(x_t, t, prompt): diffusion's U-Net with fusion blocks reading the prompt's token
    states; ``.text_encoder`` is the embedder network that makes them."""

    def __init__(self, config: TextDiffusionConfig):
        super().__init__()
        self.config = config
        c, g = config.width, config.groups
        emb_dim = 4 * c
        self.text_encoder = build_text_encoder(config.text_encoder, config.vocab_size)
        ctx = encoder_width(config.text_encoder, config.vocab_size)
        fused = set(config.fused_levels)

        def fusion(channels: int, level: int) -> nn.Module | None:
            if level not in fused:
                return None
            return make_fusion(config.fusion, channels, ctx, config.fusion_heads)

        self.time_mlp = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(config.channels, c, 3, padding=1)
        # (layer, its fusion block or None): a ResBlock may be followed by one, a resampler never
        self.down = nn.ModuleList()
        self.down_fusion = nn.ModuleList()
        widths, skips = [c], [c]
        last = len(config.channel_mults) - 1
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.blocks_per_level):
                self.down.append(ResBlock(widths[-1], c * mult, emb_dim, g))
                self.down_fusion.append(fusion(c * mult, level) or nn.Identity())
                widths.append(c * mult)
                skips.append(c * mult)
            if level < last:
                self.down.append(nn.Conv2d(widths[-1], widths[-1], 3, stride=2, padding=1))
                self.down_fusion.append(nn.Identity())
                skips.append(widths[-1])
        mid = widths[-1]
        self.mid1 = ResBlock(mid, mid, emb_dim, g)
        self.mid_fusion = make_fusion(config.fusion, mid, ctx, config.fusion_heads)
        self.mid_attn = Attention(mid, g) if config.attention else nn.Identity()
        self.mid2 = ResBlock(mid, mid, emb_dim, g)
        self.up = nn.ModuleList()
        self.up_fusion = nn.ModuleList()
        width = mid
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            for _ in range(config.blocks_per_level + 1):
                self.up.append(ResBlock(width + skips.pop(), c * mult, emb_dim, g))
                self.up_fusion.append(fusion(c * mult, level) or nn.Identity())
                width = c * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(width, width, 3, padding=1)))
                self.up_fusion.append(nn.Identity())
        self.out = nn.Sequential(nn.GroupNorm(g, width), nn.SiLU(),
                                 nn.Conv2d(width, config.channels, 3, padding=1))

    def context(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The prompts' token states (B, T, H) that every fusion block reads, zero where
        ``mask`` is False (no fusion block reads those; an empty caption is all zeros)."""
        states = encode(self.text_encoder, ids, mask)
        return torch.where(mask[..., None], states, torch.zeros((), dtype=states.dtype,
                                                                device=states.device))

    def denoise(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """ε estimate (B, C, H, W) of x_t (B, C, H, W) at timesteps t (B,) given the token
        states ``context`` (B, T, H) of the prompts whose real tokens are ``mask`` (B, T)."""
        emb = self.time_mlp(timestep_embedding(t, self.config.width))

        def fused(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
            return h if isinstance(block, nn.Identity) else fuse_map(block, h, context, mask)

        h = self.stem(x)
        hs = [h]
        for layer, block in zip(self.down, self.down_fusion, strict=True):
            h = fused(block, layer(h, emb)) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = fuse_map(self.mid_fusion, self.mid1(h, emb), context, mask)
        h = self.mid2(self.mid_attn(h), emb)
        for layer, block in zip(self.up, self.up_fusion, strict=True):
            if isinstance(layer, ResBlock):
                h = fused(block, layer(torch.cat([h, hs.pop()], dim=1), emb))
            else:
                h = layer(h)
        return self.out(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        return self.denoise(x, t, self.context(ids, mask), mask)


def build(config: TextDiffusionConfig) -> TextUNet:
    if config.vocab_size < 2:
        raise RecipeError("text-diffusion: needs a tokenizer's vocabulary (vocab_size; image_text "
                          "data fills it)")
    return TextUNet(config)


def empty_prompts(rows: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The empty caption for ``rows`` images: one pad id each, masked out (the fusion blocks
    read nothing)."""
    return (torch.ones(rows, 1, dtype=torch.long, device=device),
            torch.zeros(rows, 1, dtype=torch.bool, device=device))


# --- training objective -----------------------------------------------------------------------


def loss(model: TextUNet, batch: ImageTextBatch) -> dict[str, torch.Tensor]:
    """Ho et al. 2020, Algorithm 1 given the caption: t ~ U{0..T−1}, ε ~ N(0, I), minimise
    ‖ε − ε_θ(x_t, t, caption)‖², the caption dropped to the empty one with probability p_uncond."""
    config = model.config
    x0, g = batch.images, batch.generator
    B = x0.size(0)
    t = torch.randint(0, config.timesteps, (B,), generator=g).to(x0.device)
    noise = torch.randn(x0.shape, generator=g).to(x0.device)
    drop = (torch.rand(B, generator=g) < config.p_uncond).to(x0.device)
    x_t = training_scheduler(config.schedule, config.timesteps).add_noise(x0, noise, t)
    mask = batch.caption_mask & ~drop[:, None]
    eps = model(x_t, t, batch.captions, mask)
    return {"loss": F.mse_loss(eps.float(), noise)}


# --- sampling ---------------------------------------------------------------------------------


@torch.no_grad()
def sample(model: TextUNet, request: ImageRequest, generator: Generators) -> torch.Tensor:
    """DDPM (η = 1), DDIM (η = 0) or DPM-Solver++(2M) from x_T ~ N(0, I) over ``request.steps``
    timesteps given each image's prompt (``prompt_ids``/``prompt_mask``; none: the empty caption), with
    classifier-free guidance ε = ε_∅ + s·(ε_c − ε_∅) when s ≠ 1. The prompts are encoded once."""
    config = model.config
    B = request.num_samples
    device = next(model.parameters()).device
    scheduler = scheduler_for(config.schedule, config.timesteps, request.sampler)
    scheduler.set_timesteps(request.steps or default_steps(request.sampler, config.timesteps))
    if request.prompt_ids is None or request.prompt_mask is None:
        ids, mask = empty_prompts(B, device)
    else:
        ids, mask = request.prompt_ids.to(device), request.prompt_mask.to(device)
        if ids.shape[0] != B or mask.shape != ids.shape:
            raise ValueError(f"text-diffusion: {ids.shape[0]} prompts of shape {tuple(ids.shape)} "
                             f"(mask {tuple(mask.shape)}) for {B} images")
    guided = request.prompt_ids is not None and request.guidance_scale != 1.0
    context = model.context(ids, mask)
    if guided:  # one pass over [conditional; unconditional]: the null caption reads nothing
        context = torch.cat([context, torch.zeros_like(context)])
        mask = torch.cat([mask, torch.zeros_like(mask)])
    x = draw_normal(generator, B, (config.channels, config.image_size, config.image_size))
    for t in scheduler.timesteps.tolist():
        if guided:
            tt = torch.full((2 * B,), t, dtype=torch.long, device=device)
            xx = x.to(device)
            eps_c, eps_u = model.denoise(torch.cat([xx, xx]), tt, context, mask).float().cpu().chunk(2)
            eps = eps_u + request.guidance_scale * (eps_c - eps_u)
        else:
            tt = torch.full((B,), t, dtype=torch.long, device=device)
            eps = model.denoise(x.to(device), tt, context, mask).float().cpu()
        x = scheduler.step(eps, t, x, generator)
    return x.clamp(-1, 1)


_TINY_ENCODER = {"hidden": 16, "layers": 1, "heads": 2, "max_tokens": 32}

FAMILY = Family(
    name="text-diffusion",
    kinds=("image_text",),
    conditioning="text",
    config=TextDiffusionConfig,
    presets={
        "tiny": {"width": 8, "channel_mults": (1, 2), "attention": False, "groups": 4,
                 "timesteps": 100, "fusion_heads": 2, "text_encoder": _TINY_ENCODER},
        "small": {"width": 32, "channel_mults": (1, 2, 2), "attention": True,
                  "text_encoder": {"hidden": 64, "layers": 2, "heads": 4, "max_tokens": 32}},
    },
    build=build,
    loss=loss,
    sample=sample,
    description="text-to-image U-Net diffusion: fusion blocks (cross-attention, concat or FiLM) "
    "reading a text encoder's token states; caption dropout and classifier-free guidance; "
    "DDPM/DDIM/DPM-Solver++ sampling",
)
