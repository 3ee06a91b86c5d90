"""Multimodal fusion: one block that lets the positions of one input read another's, three ways.

Both directions of text ↔ image use it: the text-to-image U-Net's feature map reads the caption's
token states, and the captioner's decoder tokens read the image's patch features. Every variant
has the same signature, ``forward(x, context, mask) -> x'`` with x (B, N, D), context (B, M, Dc)
and mask (B, M) bool (True on real context positions), so a family swaps them by one config
field (``fusion``) and the ablation compares like with like:

- ``cross_attention``: x + tanh(α) · MHA(LN(x), LN(context)), then x + tanh(β) · MLP(LN(x)).
  Each position attends to every real context position (Vaswani et al. 2017's encoder–decoder
  attention; the tanh gates are Flamingo's, Alayrac et al. 2022, here started open, since both
  sides train from scratch).
- ``concat``: the context pooled over its real positions (a masked mean), projected and
  concatenated to every position, then projected back: x + W[LN(x); p]. What early text-to-image
  GANs did with a sentence vector (Reed et al. 2016).
- ``film``: the pooled context predicts a per-channel scale and shift, x + (γ ⊙ LN(x) + β)
  (Perez et al. 2018, "FiLM").

The pooled variants see one vector per context, so they cannot tie a word to a place: that is
what the ablation measures.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

FusionKind = Literal["cross_attention", "concat", "film"]
FUSIONS: tuple[str, ...] = ("cross_attention", "concat", "film")


def masked_mean(context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, M, D) states averaged over their real positions (mask (B, M) bool) → (B, D)."""
    m = mask[..., None].to(context.dtype)
    return (context * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class CrossAttentionFusion(nn.Module):
    """Gated cross-attention (with a gated MLP after it) from x to the real context positions."""

    def __init__(self, dim: int, context_dim: int, heads: int = 4, gate_init: float = 1.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"fusion: width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(context_dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.attn_gate = nn.Parameter(torch.tensor(float(gate_init)))
        self.mlp_gate = nn.Parameter(torch.tensor(float(gate_init)))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        M, h = context.shape[1], self.heads
        q = self.q(self.norm(x)).view(B, N, h, D // h).transpose(1, 2)
        k, v = self.kv(self.context_norm(context)).view(B, M, 2, h, D // h).permute(2, 0, 3, 1, 4)
        # a row with no real context (an empty caption) reads nothing: it looks at position 0
        # (no all-masked softmax, no NaN) and its result is zeroed
        has = mask.any(dim=1)
        safe = mask.clone()
        safe[:, 0] |= ~has
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None, None, :])
        a = a * has[:, None, None, None].to(a.dtype)
        x = x + torch.tanh(self.attn_gate) * self.out(a.transpose(1, 2).reshape(B, N, D))
        return x + torch.tanh(self.mlp_gate) * self.mlp(self.mlp_norm(x))


class ConcatFusion(nn.Module):
    """The pooled context concatenated to every position, projected back to the width."""

    def __init__(self, dim: int, context_dim: int, heads: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.context = nn.Linear(context_dim, dim)
        self.proj = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        p = self.context(masked_mean(context, mask))[:, None].expand(-1, x.shape[1], -1)
        return x + self.proj(torch.cat([self.norm(x), p], dim=-1))


class FiLMFusion(nn.Module):
    """The pooled context predicts a scale and shift of every channel."""

    def __init__(self, dim: int, context_dim: int, heads: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.film = nn.Sequential(nn.Linear(context_dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, 2 * dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(masked_mean(context, mask))[:, None].chunk(2, dim=-1)
        return x + gamma * self.norm(x) + beta


def make_fusion(kind: str, dim: int, context_dim: int, heads: int = 4) -> nn.Module:
    """The fusion block ``kind`` (one of ``FUSIONS``) from width ``dim`` to ``context_dim``."""
    if kind == "cross_attention":
        return CrossAttentionFusion(dim, context_dim, heads)
    if kind == "concat":
        return ConcatFusion(dim, context_dim, heads)
    if kind == "film":
        return FiLMFusion(dim, context_dim, heads)
    raise ValueError(f"unknown fusion {kind!r} (known: {', '.join(FUSIONS)})")


def fuse_map(block: nn.Module, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A fusion block on a feature map x (B, C, H, W): its H·W positions read the context."""
    B, C, H, W = x.shape
    seq = x.flatten(2).transpose(1, 2)  # (B, HW, C)
    return block(seq, context, mask).transpose(1, 2).reshape(B, C, H, W)


__all__ = ["FUSIONS", "FusionKind", "fuse_map", "make_fusion", "masked_mean"]
