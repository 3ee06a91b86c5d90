"""gpt — a decoder-only Transformer language model (Radford et al. 2018/2019), nanoGPT-style.

Pre-norm blocks, fused QKV projection, causal ``scaled_dot_product_attention``, GELU MLP, token
and learned position embeddings, the output head tied to the token embedding (Press & Wolf 2017).
Generation keeps a preallocated key/value cache per layer, so each new token costs one position's
work instead of recomputing the whole context. ``SlotKVCache`` holds such caches for several
independent sequences and steps any of them together, each at its own position (continuous
batching: concurrent requests share each forward pass).

Notable choices: bias-free linears and LayerNorm weights only (fewer ops to run); residual
projections initialised with std 0.02/sqrt(2·n_layer) (GPT-2); tanh-approximated GELU.

Options from the small-model speed runs (modded-nanoGPT), each off by default so old recipes and
saved models keep their meaning: rotary position embeddings instead of learned ones
(``pos_emb="rope"``, Su et al. 2021, rotating halves as GPT-NeoX does), RMS-normalised queries and
keys (``qk_norm``, Dehghani et al. 2023), a ReLU² (So et al. 2021, Primer) or SwiGLU (Shazeer
2020) MLP, and an untied output head (``tie_weights=False``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from genloop.models.family import (
    Family,
    Generators,
    SequenceBatch,
    SlotDecoder,
    TextModelConfig,
    TokenRequest,
    check_slot,
    check_step,
    step_slots,
)
from genloop.models.sampling import next_token


class GPTConfig(TextModelConfig):
    n_layer: int = Field(4, ge=1, le=96)
    n_head: int = Field(4, ge=1, le=64)
    n_embd: int = Field(128, ge=8, le=8192)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    tie_weights: bool = True
    pos_emb: Literal["learned", "rope"] = Field(
        "learned", description="learned absolute position embeddings, or rotary ones (rope)")
    qk_norm: bool = Field(False, description="RMS-normalise queries and keys per head")
    mlp: Literal["gelu", "relu2", "swiglu"] = Field(
        "gelu", description="the MLP's nonlinearity: GELU, ReLU² or SwiGLU (same parameter count)")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPTConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"pos_emb 'rope' needs an even head size, got n_embd/n_head = "
                             f"{self.n_embd // self.n_head}")
        return self


def modern_options(config: GPTConfig) -> list[str]:
    """The options of ``config`` that differ from the original GPT-2 layout, as ``key=value``:
    what an export to a format that cannot express them refuses."""
    options = []
    if config.pos_emb != "learned":
        options.append(f"pos_emb={config.pos_emb}")
    if config.qk_norm:
        options.append("qk_norm=true")
    if config.mlp != "gelu":
        options.append(f"mlp={config.mlp}")
    return options


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=64),
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64),  # the CPU baseline shape
    "medium": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2),
    "long": dict(n_layer=6, n_head=6, n_embd=384, block_size=1024),
}


class KVCache:
    """Keys and values of every layer, preallocated to the context length: (L, B, nh, T, hs)."""

    def __init__(self, config: GPTConfig, batch: int, dtype: torch.dtype, device: torch.device):
        hs = config.n_embd // config.n_head
        shape = (config.n_layer, batch, config.n_head, config.block_size, hs)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0  # positions filled so far

    @classmethod
    def over(cls, k: torch.Tensor, v: torch.Tensor) -> KVCache:
        """An empty cache writing into existing storage (L, B, nh, T, hs): one slot of a
        ``SlotKVCache``, so a prefill lands in place."""
        cache = cls.__new__(cls)
        cache.k, cache.v, cache.length = k, v, 0
        return cache


def rope_angles(pos: torch.Tensor, hs: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles at positions ``pos`` (any shape P): (*P, hs/2), fp32."""
    inv_freq = base ** (-torch.arange(0, hs, 2, device=pos.device, dtype=torch.float32) / hs)
    angles = pos.to(torch.float32)[..., None] * inv_freq
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary embedding of ``x`` (..., hs) by angles broadcastable to (..., hs/2) (Su et al. 2021,
    eq. 34, with the two halves of the head as the pairs, as GPT-NeoX and Llama do)."""
    cos, sin = rope[0].to(x.dtype), rope[1].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(q, k, v, causal_or_mask: bool | torch.Tensor, dropout: float) -> torch.Tensor:
    """SDPA; on the CPU always in fp32: under bf16 autocast the CPU's bf16 attention backward is
    several times slower than fp32 at these sizes, while the matmuls around it gain (BENCHMARKS.md,
    "What each training-step choice buys"). GPUs keep their fast half-precision kernels."""
    mask = causal_or_mask if isinstance(causal_or_mask, torch.Tensor) else None
    causal = bool(causal_or_mask) if mask is None else False
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              dropout_p=dropout)
    with torch.autocast("cpu", enabled=False):
        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                           is_causal=causal, dropout_p=dropout)
    return y.to(q.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.n_head, self.layer = config.n_head, layer
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.dropout = config.dropout
        hs = config.n_embd // config.n_head
        self.q_norm = nn.RMSNorm(hs) if getattr(config, "qk_norm", False) else None
        self.k_norm = nn.RMSNorm(hs) if getattr(config, "qk_norm", False) else None

    def queries_keys(self, q: torch.Tensor, k: torch.Tensor,
                     rope: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys (..., hs) after the options: QK-norm, then the rotary embedding."""
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rotate(q, rope), rotate(k, rope)
        return q, k

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``rope``: cos and sin (T, hs/2) of the positions of ``x`` with ``pos_emb="rope"``."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        q, k = self.queries_keys(q, k, rope)
        causal = True
        if cache is not None:
            start = cache.length
            cache.k[self.layer, :, :, start : start + T] = k
            cache.v[self.layer, :, :, start : start + T] = v
            k = cache.k[self.layer, :, :, : start + T]
            v = cache.v[self.layer, :, :, : start + T]
            if start > 0:
                # new queries see every cached key and, among themselves, only earlier ones
                causal = False
                if T > 1:
                    mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
                    y = attention(q, k, v, mask, 0.0)
                    return self.proj(y.transpose(1, 2).reshape(B, T, C))
        p = self.dropout if self.training else 0.0
        y = attention(q, k, v, causal, p)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class MLP(nn.Module):
    """4C hidden units with GELU or ReLU²; SwiGLU's gate and value take 8C/3 each (rounded up to
    a multiple of 8), so all three have about the same parameters and FLOPs."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.kind = getattr(config, "mlp", "gelu")
        C = config.n_embd
        hidden = -(-8 * C // 3 // 8) * 8 if self.kind == "swiglu" else 4 * C
        self.fc = nn.Linear(C, 2 * hidden if self.kind == "swiglu" else hidden, bias=False)
        self.proj = nn.Linear(hidden, C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.kind == "relu2":
            h = F.relu(h).square()
        elif self.kind == "swiglu":
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.gelu(h, approximate="tanh")
        return self.proj(h)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=False)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=False)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x), cache, rope))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("GPTConfig.vocab_size must be set from the tokenizer")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.pos_emb == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=False)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.head.weight = self.wte.weight
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2: scale residual branches by depth
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(
        self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T); with ``last_only``, (B, 1, V)."""
        x = self._trunk(idx, cache)
        if last_only:
            x = x[:, -1:, :]
        return self.head(self.ln_f(x))

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """The final hidden states (B, T, C), normalised, of token ids (B, T): what the output
        head reads (a reward model's score head reads them too)."""
        return self.ln_f(self._trunk(idx, None))

    def embed(self, idx: torch.Tensor, pos: torch.Tensor
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Token embeddings of ``idx`` at positions ``pos`` (idx's shape): with learned positions
        their embeddings added; with rotary ones, the angles the attention rotates by."""
        x = self.wte(idx)
        if self.wpe is not None:
            return x + self.wpe(pos), None
        return x, rope_angles(pos, self.config.n_embd // self.config.n_head)

    def _trunk(self, idx: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """Embeddings and blocks: (B, T, C) before the final norm."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x, rope = self.embed(idx, pos)
        x = self.drop(x)  # (B, T, C)
        for block in self.blocks:
            x = block(x, cache, rope)
        if cache is not None:
            cache.length += T
        return x


def build(config: GPTConfig) -> GPT:
    return GPT(config)


def loss(model: GPT, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Next-token cross-entropy; ``batch`` is (inputs, targets), both (B, T)."""
    x, y = batch
    logits = model(x)
    return {"loss": F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))}


def log_probs(model: GPT, batch: SequenceBatch) -> torch.Tensor:
    """Per sequence (B,), the sum of log p(target_t | inputs_<=t) over the masked positions."""
    logits = model(batch.inputs)  # (B, T, V)
    nll = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
    return -nll.view(batch.targets.shape).masked_fill(~batch.mask, 0.0).sum(dim=1)


@torch.no_grad()
def sample(model: GPT, request: TokenRequest, generator: Generators) -> Iterator[torch.Tensor]:
    """Yield the next token ids (B,) step by step.

    With the cache: one prefill of the prompt, then one position per step. When the context is
    full, the last half of it is prefilled again into a fresh cache (cheap, amortised). Without
    the cache (``use_cache=False``) the cropped context is recomputed every step — the baseline
    the cache is measured against.
    """
    block = model.config.block_size
    ids = request.prompt_ids
    dtype = next(model.parameters()).dtype
    cache = KVCache(model.config, ids.size(0), dtype, ids.device) if request.use_cache else None
    logits = model(ids[:, -block:], cache, last_only=True)[:, -1, :]
    for _ in range(request.max_new_tokens):
        nxt = next_token(logits, generator, request, ids)
        yield nxt
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if cache is None:
            logits = model(ids[:, -block:], last_only=True)[:, -1, :]
        elif cache.length < block:
            logits = model(nxt[:, None], cache, last_only=True)[:, -1, :]
        else:
            cache = KVCache(model.config, ids.size(0), dtype, ids.device)
            logits = model(ids[:, -(block // 2) :], cache, last_only=True)[:, -1, :]


class SlotKVCache:
    """Keys and values of ``slots`` independent sequences, (L, S, nh, T, hs), each at its own length:
    the ``SlotDecoder`` of gpt (continuous batching).

    ``prefill`` runs the model on one prompt into its slot; ``step`` runs the blocks by hand for B
    rows at B different positions — each row writes its key/value at its own position and attends
    over its own keys, up to the longest listed row only. Context overflow is handled as ``sample``
    does (the last half of the slot's tokens prefilled again), so greedy decoding through a slot
    gives exactly ``sample``'s tokens for that prompt alone.
    """

    def __init__(self, model: GPT, slots: int):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        model.eval()  # decoding is inference: no dropout
        self.model, self.slots = model, slots
        p = next(model.parameters())
        storage = KVCache(model.config, slots, p.dtype, p.device)
        self.k, self.v, self.device = storage.k, storage.v, p.device
        self.lengths = [0] * slots  # positions filled per slot
        # per occupied slot, its last block_size tokens (prompt + appended): overflow refills from it
        self.history: list[list[int] | None] = [None] * slots

    def _check(self, slot: int) -> int:
        return check_slot(slot, self.slots)

    @torch.no_grad()
    def _fill(self, slot: int, ids: list[int]) -> torch.Tensor:
        """Restart ``slot`` from ``ids`` (at most block_size of them); logits (V,) for the next."""
        cache = KVCache.over(self.k[:, slot : slot + 1], self.v[:, slot : slot + 1])
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        logits = self.model(x, cache, last_only=True)[0, -1]
        self.lengths[slot] = cache.length
        return logits.float()

    def prefill(self, slot: int, ids: torch.Tensor) -> torch.Tensor:
        self._check(slot)
        if ids.ndim != 1 or ids.numel() < 1:
            raise ValueError(f"prefill takes one prompt of shape (T,) with T >= 1, got {tuple(ids.shape)}")
        block = self.model.config.block_size
        history = ids[-block:].tolist()  # as ``sample``: a longer prompt is cropped to the context
        self.history[slot] = history
        return self._fill(slot, history)

    def free(self, slot: int) -> None:
        self.history[self._check(slot)] = None
        self.lengths[slot] = 0

    @torch.no_grad()
    def step(self, slots: list[int], tokens: torch.Tensor) -> torch.Tensor:
        check_step(slots, tokens, self.slots, lambda s: self.history[s] is not None)
        cfg = self.model.config
        return step_slots(slots, tokens, self.history, self.lengths, cfg.block_size, cfg.vocab_size,
                          self.device, self._fill, self._advance)

    def _advance(self, slots: list[int], tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` (B,) to ``slots`` (none full), each at its own position; logits (B, V).
        Runs the blocks by hand: ``Block.forward`` assumes one position for the whole batch."""
        m, cfg = self.model, self.model.config
        B, nh, C = len(slots), cfg.n_head, cfg.n_embd
        pos_list = [self.lengths[s] for s in slots]
        slot_t = torch.tensor(slots, device=self.device)
        pos = torch.tensor(pos_list, device=self.device)
        width = max(pos_list) + 1  # keys beyond the longest row are never needed
        # row b sees its keys 0..pos[b]: an additive mask (B, 1, 1, width) over heads and the query,
        # made once for every layer (SDPA would convert a boolean one in each), in the dtype
        # ``attention`` computes in
        unseen = (torch.arange(width, device=self.device) > pos[:, None])[:, None, None, :]
        dtype = torch.float32 if self.device.type == "cpu" else self.k.dtype
        mask = torch.zeros(unseen.shape, dtype=dtype, device=self.device).masked_fill_(unseen, -math.inf)
        # a run of consecutive slots is a view; others are gathered (index_select: a plain copy)
        lo = slots[0]
        consecutive = slots == list(range(lo, lo + B))
        x, rope = m.embed(tokens.to(self.device), pos)  # (B, C); rope: (B, hs/2) each
        if rope is not None:
            rope = (rope[0][:, None], rope[1][:, None])  # (B, 1, hs/2): one position per row
        for layer, blk in enumerate(m.blocks):
            assert isinstance(blk, Block)
            attn = blk.attn
            q, k, v = attn.qkv(blk.ln_1(x)).view(B, 3, nh, C // nh).unbind(1)  # (B, nh, hs)
            q, k = attn.queries_keys(q, k, rope)
            self.k[layer, slot_t, :, pos] = k
            self.v[layer, slot_t, :, pos] = v
            keys, values = self.k[layer, :, :, :width], self.v[layer, :, :, :width]
            if consecutive:
                keys, values = keys[lo : lo + B], values[lo : lo + B]  # (B, nh, width, hs)
            else:
                keys, values = keys.index_select(0, slot_t), values.index_select(0, slot_t)
            y = attention(q[:, :, None, :], keys, values, mask, 0.0)  # (B, nh, 1, hs)
            x = x + attn.proj(y.reshape(B, C))
            x = x + blk.mlp(blk.ln_2(x))
        for s in slots:
            self.lengths[s] += 1
        return m.head(m.ln_f(x)).float()  # (B, V)


def slot_decoder(model: torch.nn.Module, slots: int) -> SlotDecoder:
    assert isinstance(model, GPT)
    return SlotKVCache(model, slots)


FAMILY = Family(
    name="gpt",
    kinds=("text", "pairs", "preferences"),
    conditioning="none",
    compiles=True,
    config=GPTConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    log_probs=log_probs,
    sample=sample,
    kv_cache=True,
    streaming=True,
    slot_decoder=slot_decoder,
    description="decoder-only Transformer LM with a KV cache",
)
