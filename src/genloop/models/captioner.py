"""captioner — image → text: an image encoder and a GPT decoder that reads its features (BLIP-style).

The encoder turns an image (B, C, H, W) into a grid of feature vectors (B, N, E), each with a
fixed 2-D sine-cosine position embedding (MAE's) so the decoder can tell "top left" from
"bottom right" from the first step:

- ``conv``: four 3×3 convolutions, the first two stride 2 (H/4 × W/4 positions), GELU between;
- ``patch``: a patch Transformer (ViT, Dosovitskiy et al. 2021): non-overlapping
  ``patch_size`` patches linearly embedded, ``encoder_layers`` pre-norm encoder layers.

The decoder is gpt's (its causal self-attention with the key/value cache, and its MLP, imported
from ``models/gpt.py``) with the shared fusion block (``models/fusion.py``: gated cross-attention,
or the pooled concat / FiLM baselines of the ablation) between self-attention and MLP in every
block, so each caption token reads the image's features. Training is teacher-forced next-token
cross-entropy: input ``<eos> + caption``, target ``caption + <eos>`` (the end-of-text id starts a
caption as it starts a fresh document for gpt, and ends it).

Decoding: the image is encoded once; greedy (temperature 0), sampling (temperature, top-k, top-p
through ``models/sampling.py``, one generator per image so image i's caption depends only on its
seed), or beam search (length-normalised scores, Wu et al. 2016, as seq2seq's).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from genloop.models.family import CaptionRequest, Family, Generators, ImageModelConfig, ImageTextBatch
from genloop.models.fusion import FusionKind, make_fusion
from genloop.models.gpt import MLP, CausalSelfAttention, GPTConfig, KVCache
from genloop.models.sampling import sample_next


class CaptionerConfig(ImageModelConfig):
    vocab_size: int = Field(0, ge=0, le=1_000_000, description="set from the tokenizer")
    block_size: int = Field(32, ge=4, le=1024, description="longest caption in tokens, <eos> included")
    eos_id: int = Field(1, ge=0, description="the tokenizer's end-of-text id (genloop's tokenizers: 1)")
    encoder: Literal["conv", "patch"] = "conv"
    encoder_width: int = Field(64, ge=8, le=2048, description="width of the image features")
    patch_size: int = Field(4, ge=1, le=64, description="patch encoder: side of a patch")
    encoder_layers: int = Field(2, ge=1, le=24, description="patch encoder: Transformer layers")
    n_layer: int = Field(2, ge=1, le=48)
    n_head: int = Field(4, ge=1, le=64)
    n_embd: int = Field(64, ge=8, le=4096)
    fusion: FusionKind = "cross_attention"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> CaptionerConfig:
        if self.encoder_width % 4:
            raise ValueError(f"encoder_width ({self.encoder_width}) must be a multiple of 4 "
                             "(its 2-D position embedding)")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.encoder == "patch":
            if self.image_size % self.patch_size:
                raise ValueError(f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})")
            if self.encoder_width % self.n_head:
                raise ValueError(f"encoder_width ({self.encoder_width}) must be divisible by "
                                 f"n_head ({self.n_head})")
        elif self.image_size % 4:
            raise ValueError(f"the conv encoder halves the image twice: image_size ({self.image_size}) "
                             "must be a multiple of 4")
        return self

    def decoder(self) -> GPTConfig:
        """gpt's config for the decoder pieces imported from it."""
        return GPTConfig(vocab_size=max(self.vocab_size, 1), block_size=max(self.block_size, 8),
                         n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                         dropout=self.dropout)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(encoder_width=32, encoder_layers=1, n_layer=1, n_head=2, n_embd=32),
    "small": dict(encoder_width=128, encoder_layers=2, n_layer=2, n_head=4, n_embd=128),
    "small-patch": dict(encoder="patch", encoder_width=128, encoder_layers=3, n_layer=2, n_head=4,
                        n_embd=128),
}


def sincos_2d(side: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings of a side × side grid, (side², dim), row-major:
    a quarter of the channels each for sin/cos of the row and of the column at geometric
    frequencies (MAE's, He et al. 2022). Fixed and of unit scale, so where a feature sits is
    as plain to the decoder from the first step as what it shows."""
    freqs = 1.0 / 10_000 ** (torch.arange(dim // 4, dtype=torch.float32) / max(dim // 4, 1))
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float32),
                                torch.arange(side, dtype=torch.float32), indexing="ij")
    r, c = rows.flatten()[:, None] * freqs, cols.flatten()[:, None] * freqs
    return torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1)


class ConvEncoder(nn.Module):
    def __init__(self, config: CaptionerConfig):
        super().__init__()
        w, c = config.encoder_width, config.channels
        self.body = nn.Sequential(
            nn.Conv2d(c, w // 2, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w // 2, w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1),
        )
        self.register_buffer("pos", sincos_2d(config.image_size // 4, w), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images).flatten(2).transpose(1, 2) + self.pos  # (B, H/4·W/4, w)


class PatchEncoder(nn.Module):
    def __init__(self, config: CaptionerConfig):
        super().__init__()
        w, p = config.encoder_width, config.patch_size
        self.embed = nn.Conv2d(config.channels, w, p, stride=p)
        layer = nn.TransformerEncoderLayer(w, config.n_head, 4 * w, config.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, config.encoder_layers, enable_nested_tensor=False)
        self.register_buffer("pos", sincos_2d(config.image_size // p, w), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images).flatten(2).transpose(1, 2)  # (B, N, w)
        return self.layers(x + self.pos)


class DecoderBlock(nn.Module):
    """gpt's block with the fusion block between its self-attention and its MLP."""

    def __init__(self, config: CaptionerConfig, layer: int):
        super().__init__()
        gpt = config.decoder()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=False)
        self.attn = CausalSelfAttention(gpt, layer)
        self.fusion = make_fusion(config.fusion, config.n_embd, config.encoder_width, config.n_head)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=False)
        self.mlp = MLP(gpt)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, features: torch.Tensor, mask: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x), cache))
        x = self.fusion(x, features, mask)
        return x + self.drop(self.mlp(self.ln_2(x)))


class Captioner(nn.Module):
    def __init__(self, config: CaptionerConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("CaptionerConfig.vocab_size must be set from the tokenizer")
        self.config = config
        self.encoder: nn.Module = ConvEncoder(config) if config.encoder == "conv" else PatchEncoder(config)
        self.feature_norm = nn.LayerNorm(config.encoder_width)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=False)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied, as gpt's
        for m in (self.wte, self.wpe, self.blocks):
            m.apply(_init)
        for name, p in self.blocks.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.proj.weight")):  # GPT-2's depth scaling
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image features (B, N, E) of images (B, C, H, W) in [-1, 1]."""
        return self.feature_norm(self.encoder(images))

    def decode(self, ids: torch.Tensor, features: torch.Tensor, cache: KVCache | None = None,
               last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, V) of decoder ids (B, T) reading ``features`` (B, N, E); the cache, if
        given, holds the positions before these."""
        B, T = ids.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"caption of {start + T} tokens exceeds block_size {self.config.block_size}")
        mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        x = self.drop(self.wte(ids) + self.wpe(torch.arange(start, start + T, device=ids.device)))
        for block in self.blocks:
            x = block(x, features, mask, cache)
        if cache is not None:
            cache.length += T
        if last_only:
            x = x[:, -1:]
        return self.head(self.ln_f(x))

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of caption ids (B, T) given images (B, C, H, W)."""
        return self.decode(ids, self.encode(images))


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)


def build(config: CaptionerConfig) -> Captioner:
    return Captioner(config)


def teacher_forcing(captions: torch.Tensor, mask: torch.Tensor, eos: int, block: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs ``<eos> + caption``, targets ``caption + <eos>`` and the mask of counted targets
    (each caption's tokens and its closing <eos>), all (B, T') with T' <= ``block``: a caption
    longer than the context loses its end (and its closing <eos>)."""
    B, T = captions.shape
    lengths = mask.sum(dim=1)  # right-padded: the real tokens come first
    body = captions.masked_fill(~mask, eos)
    col = torch.full((B, 1), eos, dtype=captions.dtype, device=captions.device)
    inputs, targets = torch.cat([col, body], dim=1), torch.cat([body, col], dim=1)
    counted = torch.arange(T + 1, device=captions.device)[None] <= lengths[:, None]
    width = min(T + 1, block)
    return inputs[:, :width], targets[:, :width], counted[:, :width]


def loss(model: Captioner, batch: ImageTextBatch) -> dict[str, torch.Tensor]:
    """Next-token cross-entropy per caption token (its closing <eos> included)."""
    cfg = model.config
    inputs, targets, counted = teacher_forcing(batch.captions, batch.caption_mask, cfg.eos_id,
                                               cfg.block_size)
    logits = model(batch.images, inputs)
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    token_loss = (nll * counted.flatten()).sum() / counted.sum().clamp(min=1)
    with torch.no_grad():
        right = (logits.argmax(-1) == targets) & counted
        exact = (right | ~counted).all(dim=1).float().mean()
    return {"loss": token_loss, "token_accuracy": right.sum() / counted.sum().clamp(min=1),
            "exact_caption": exact}


# --- decoding --------------------------------------------------------------------------------


def _check_images(model: Captioner, images: torch.Tensor) -> None:
    cfg = model.config
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise ValueError(f"images of shape {tuple(images.shape)}: this captioner reads (B, {want[0]}, "
                         f"{want[1]}, {want[2]})")


@torch.no_grad()
def sample(model: Captioner, request: CaptionRequest, generator: Generators) -> list[list[int]]:
    """Each image's caption ids (B lists), without the <eos> that ended it.

    1. Encode the images once.
    2. Decode from <eos>, one position per step through the key/value cache (or the whole prefix
       again without it), each row picking its token with ``sample_next`` (its own generator when
       there is one per image); a row is done at <eos>; at most ``max_new_tokens`` and the context.
    Beam search (``num_beams`` > 1) runs image by image and draws nothing.
    """
    _check_images(model, request.images)
    cfg = model.config
    if request.num_beams > 1:
        return [beam_search(model, image, request.num_beams, request.max_new_tokens)
                for image in request.images]
    features = model.encode(request.images)
    B, eos = request.images.size(0), cfg.eos_id
    ids = torch.full((B, 1), eos, dtype=torch.long, device=features.device)
    dtype = next(model.parameters()).dtype
    cache = KVCache(cfg.decoder(), B, dtype, features.device) if request.use_cache else None
    logits = model.decode(ids, features, cache, last_only=True)[:, -1]
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    for _ in range(min(request.max_new_tokens, cfg.block_size)):
        nxt = sample_next(logits.float(), generator, temperature=request.temperature,
                          top_k=request.top_k, top_p=request.top_p)
        for b, t in enumerate(nxt.tolist()):
            if not done[b]:
                done[b] = t == eos
                if not done[b]:
                    out[b].append(t)
        if all(done) or ids.size(1) == cfg.block_size:
            break
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        logits = (model.decode(nxt[:, None], features, cache, last_only=True) if cache is not None
                  else model.decode(ids, features, last_only=True))[:, -1]
    return out


@torch.no_grad()
def beam_search(model: Captioner, image: torch.Tensor, num_beams: int, max_new_tokens: int,
                length_penalty: float = 1.0) -> list[int]:
    """The most likely caption of one image (C, H, W) among ``num_beams`` hypotheses, without its
    <eos>. A hypothesis's score is its summed log-prob over its length ** ``length_penalty`` (its
    <eos> counted); the search stops when ``num_beams`` hypotheses have ended and no running one
    can still beat the worst of them, at ``max_new_tokens``, or when the context is full."""
    cfg = model.config
    eos = cfg.eos_id
    features = model.encode(image[None]).expand(num_beams, -1, -1)
    dtype = next(model.parameters()).dtype
    cache = KVCache(cfg.decoder(), num_beams, dtype, features.device)
    ids = torch.full((num_beams, 1), eos, dtype=torch.long, device=features.device)
    logits = model.decode(ids, features, cache, last_only=True)[:, -1]
    scores = torch.full((num_beams,), -math.inf, device=features.device)
    scores[0] = 0.0  # every beam starts equal: only one is live at first
    beams: list[list[int]] = [[] for _ in range(num_beams)]
    ended: list[tuple[float, list[int]]] = []  # (normalised score, tokens without <eos>)
    limit = min(max_new_tokens, cfg.block_size)
    for step in range(1, limit + 1):
        # 1. every extension of every live beam, the best 2·num_beams of them
        V = logits.size(-1)
        total = (scores[:, None] + F.log_softmax(logits.float(), dim=-1)).view(-1)
        top, flat = total.topk(min(2 * num_beams, total.numel()))
        keep: list[tuple[float, int, int]] = []  # (score, beam, token)
        for rank, (s, i) in enumerate(zip(top.tolist(), flat.tolist(), strict=True)):
            if s == -math.inf or len(keep) == num_beams:
                break
            beam, token = divmod(i, V)
            if token == eos:  # 2. an ended hypothesis, if it ranks among the best num_beams
                if rank < num_beams:
                    ended.append((s / step ** length_penalty, beams[beam]))
            else:
                keep.append((s, beam, token))
        ended = sorted(ended, key=lambda e: -e[0])[:num_beams]
        if not keep:
            break
        # 3. stop when nothing running can beat the worst ended hypothesis
        if len(ended) == num_beams and keep[0][0] / step ** length_penalty <= ended[-1][0]:
            break
        while len(keep) < num_beams:  # fewer live candidates than beams: pad with dead ones
            keep.append((-math.inf, keep[0][1], keep[0][2]))
        # 4. reorder the cache to the kept beams and advance each by its token
        order = torch.tensor([b for _, b, _ in keep], device=features.device)
        tokens = torch.tensor([t for _, _, t in keep], device=features.device)
        scores = torch.tensor([s for s, _, _ in keep], device=features.device)
        beams = [[*beams[b], t] for _, b, t in keep]
        if step == limit:  # limit <= block_size: every decode below fits the context
            break
        ids = torch.cat([ids.index_select(0, order), tokens[:, None]], dim=1)
        cache.k, cache.v = cache.k.index_select(1, order), cache.v.index_select(1, order)
        logits = model.decode(tokens[:, None], features, cache, last_only=True)[:, -1]
    running = [(s / max(len(b), 1) ** length_penalty, b)
               for s, b in zip(scores.tolist(), beams, strict=True) if s > -math.inf and b]
    best: tuple[float, list[int]] = max(ended + running, key=lambda e: e[0], default=(0.0, []))
    return best[1]


FAMILY = Family(
    name="captioner",
    kinds=("image_text",),
    conditioning="image",
    config=CaptionerConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    sample=sample,
    description="image → caption: conv or patch encoder, GPT decoder with fusion, beam search",
)
