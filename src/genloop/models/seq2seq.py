"""seq2seq — an encoder–decoder Transformer (Vaswani et al. 2017) for prompt → completion pairs.

The encoder reads the source (the prompt) with bidirectional self-attention; each decoder block
runs causal self-attention over the target so far, then cross-attention over the encoded source,
then its MLP. Pre-LN blocks as in gpt (Xiong et al. 2020), bias-free linears, GELU, learned
positions (one table for the source, one for the target), the output head tied to the target
embedding (``tie_weights``). ``shared_vocab``: one token embedding for source and target (one
tokenizer), or a separate source table.

The family trains on ``pairs`` with every text objective unchanged: its ``log_probs`` reads the
same masked ``SequenceBatch`` every pairs batch is (``split_pairs``: the tokens before a row's
first counted target are its source, the counted ones its target), so ``pairs``/``sft``, DPO,
KTO, the pairs evaluation and best-of ranking all apply. The decoder starts from a learned
start vector (``START`` in the decoder's ids), not a token, so no tokenizer id is assumed.

Decoding: the source is encoded once and each decoder layer's cross-attention keys/values are
computed once from it; the decoder's self-attention keys/values are a preallocated cache that
grows one position per step. When the target fills the context, the last half of it is decoded
again into a fresh cache, as gpt does. ``Seq2SeqSlots`` is the slot decoder (continuous
batching: each slot holds its own source's cross keys/values), ``beam_search`` the deterministic
alternative to sampling (length-normalised scores, Wu et al. 2016 with α = ``length_penalty``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
from genloop.models.gpt import attention
from genloop.models.sampling import next_token

START = -1  # the decoder's first input: the learned start vector, not a token


class Seq2SeqConfig(TextModelConfig):
    """``block_size`` is the context of each side: the longest source, and the longest target the
    decoder attends over (training cuts a record's prompt + completion to it, as for gpt)."""

    n_encoder_layer: int = Field(2, ge=1, le=48)
    n_decoder_layer: int = Field(2, ge=1, le=48)
    n_head: int = Field(4, ge=1, le=64)
    n_embd: int = Field(128, ge=8, le=8192)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    shared_vocab: bool = Field(True, description="one token embedding for source and target")
    tie_weights: bool = Field(True, description="the output head is the target embedding")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Seq2SeqConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_encoder_layer=1, n_decoder_layer=1, n_head=2, n_embd=64, block_size=64),
    # about gpt small's parameters: a decoder block has a cross-attention more than gpt's
    "small": dict(n_encoder_layer=2, n_decoder_layer=2, n_head=4, n_embd=128, block_size=64),
    "medium": dict(n_encoder_layer=4, n_decoder_layer=4, n_head=6, n_embd=384, block_size=256,
                   dropout=0.2),
}


# --- batches ---------------------------------------------------------------------------------


@dataclass
class Seq2SeqBatch:
    """A pairs batch as the encoder–decoder reads it. ``source`` (B, S) int64 with
    ``source_mask`` (B, S) bool (True: a real token); ``inputs`` (B, T): ``START`` then the target
    but its last token; ``targets`` (B, T) the target; ``mask`` (B, T) True on real targets."""

    source: torch.Tensor
    source_mask: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor


def split_pairs(batch: SequenceBatch) -> Seq2SeqBatch:
    """Each row of a masked ``SequenceBatch`` (``models.family.sequence_batch``: prompt, then
    completion, then padding) as source = its tokens before the first counted target, target =
    the counted tokens. The same records, the same counted tokens: log-likelihoods compare with
    a decoder-only model's on the same batch."""
    B = batch.inputs.size(0)
    device = batch.inputs.device
    ids = torch.cat([batch.inputs[:, :1], batch.targets], dim=1)  # (B, W): the rows themselves
    counted = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=device), batch.mask], dim=1)
    W = ids.size(1)
    prompt = torch.where(counted.any(dim=1), counted.int().argmax(dim=1), W)  # (B,) source lengths
    lengths = counted.sum(dim=1)  # (B,) target lengths
    S, T = int(prompt.max()), max(int(lengths.max()), 1)
    source_mask = torch.arange(S, device=device) < prompt[:, None]
    source = ids[:, :S].masked_fill(~source_mask, 0)
    where = (prompt[:, None] + torch.arange(T, device=device)).clamp(max=W - 1)  # (B, T)
    mask = torch.arange(T, device=device) < lengths[:, None]
    assert torch.equal(counted.gather(1, where) & mask, mask), "a completion is one run of tokens"
    targets = ids.gather(1, where).masked_fill(~mask, 0)
    inputs = torch.cat([torch.full((B, 1), START, device=device), targets[:, :-1]], dim=1)
    return Seq2SeqBatch(source, source_mask, inputs, targets, mask)


# --- blocks ----------------------------------------------------------------------------------


def _heads(t: torch.Tensor, nh: int) -> torch.Tensor:
    B, T, C = t.shape
    return t.view(B, T, nh, C // nh).transpose(1, 2)  # (B, nh, T, hs)


class DecoderCache:
    """What decoding a batch of sources keeps: each decoder layer's self-attention keys/values,
    preallocated (L, B, nh, T, hs), ``length`` of them filled; and each layer's cross-attention
    keys/values of the encoded source, (B, nh, S, hs), with ``source_mask`` (B, 1, 1, S) or None."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, cross: list[tuple[torch.Tensor, torch.Tensor]],
                 source_mask: torch.Tensor | None = None):
        self.k, self.v, self.cross, self.source_mask = k, v, cross, source_mask
        self.length = 0

    @property
    def grows(self) -> bool:
        """False for a teacher-forced pass: no self-attention keys are kept."""
        return self.k.numel() > 0

    @classmethod
    def empty(cls, config: Seq2SeqConfig, batch: int, cross: list[tuple[torch.Tensor, torch.Tensor]],
              source_mask: torch.Tensor | None = None) -> DecoderCache:
        k0 = cross[0][0]
        shape = (config.n_decoder_layer, batch, config.n_head, config.block_size,
                 config.n_embd // config.n_head)
        return cls(torch.zeros(shape, dtype=k0.dtype, device=k0.device),
                   torch.zeros(shape, dtype=k0.dtype, device=k0.device), cross, source_mask)


class SelfAttention(nn.Module):
    def __init__(self, config: Seq2SeqConfig, layer: int = 0):
        super().__init__()
        self.n_head, self.layer, self.dropout = config.n_head, layer, config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, mask: bool | torch.Tensor,
                cache: DecoderCache | None = None) -> torch.Tensor:
        """``mask``: True (causal), False (every key), or a bool (B, 1, 1, S) of keys to see."""
        B, T, C = x.shape
        q, k, v = (_heads(t, self.n_head) for t in self.qkv(x).split(C, dim=2))
        if cache is not None and cache.length > 0:  # new queries see the past and earlier new keys
            start = cache.length
            cache.k[self.layer, :, :, start:start + T] = k
            cache.v[self.layer, :, :, start:start + T] = v
            k, v = cache.k[self.layer, :, :, :start + T], cache.v[self.layer, :, :, :start + T]
            mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start) if T > 1 else False
        elif cache is not None:
            cache.k[self.layer, :, :, :T], cache.v[self.layer, :, :, :T] = k, v
        y = attention(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class CrossAttention(nn.Module):
    """Queries from the decoder, keys and values from the encoded source (computed once)."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.kv = nn.Linear(config.n_embd, 2 * config.n_embd, bias=False)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def memory(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(encoded).chunk(2, dim=2)
        return _heads(k, self.n_head), _heads(v, self.n_head)  # (B, nh, S, hs) each

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                source_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q = _heads(self.q(x), self.n_head)
        mask: bool | torch.Tensor = False if source_mask is None else source_mask
        y = attention(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):  # gpt's
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class EncoderBlock(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=False)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=False)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: bool | torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x), mask))
        return x + self.drop(self.mlp(self.ln_2(x)))


class DecoderBlock(nn.Module):
    def __init__(self, config: Seq2SeqConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=False)
        self.attn = SelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=False)
        self.cross = CrossAttention(config)
        self.ln_3 = nn.LayerNorm(config.n_embd, bias=False)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        k, v = cache.cross[self.layer]
        x = x + self.drop(self.attn(self.ln_1(x), True, cache if cache.grows else None))
        x = x + self.drop(self.cross(self.ln_2(x), k, v, cache.source_mask))
        return x + self.drop(self.mlp(self.ln_3(x)))


# --- the model -------------------------------------------------------------------------------


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("Seq2SeqConfig.vocab_size must be set from the tokenizer")
        self.config = config
        C = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, C)  # target tokens (and source, when shared)
        self.src_wte = None if config.shared_vocab else nn.Embedding(config.vocab_size, C)
        self.start = nn.Parameter(torch.zeros(C))  # the decoder's first input
        self.enc_wpe = nn.Embedding(config.block_size, C)
        self.dec_wpe = nn.Embedding(config.block_size, C)
        self.drop = nn.Dropout(config.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.n_encoder_layer))
        self.ln_enc = nn.LayerNorm(C, bias=False)
        self.decoder = nn.ModuleList(DecoderBlock(config, i) for i in range(config.n_decoder_layer))
        self.ln_f = nn.LayerNorm(C, bias=False)
        self.head = nn.Linear(C, config.vocab_size, bias=False)
        if config.tie_weights:
            self.head.weight = self.wte.weight
        self.apply(self._init)
        nn.init.normal_(self.start, std=0.02)
        depth = config.n_encoder_layer + config.n_decoder_layer
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2: scale residual branches by depth
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * depth))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def encode(self, source: torch.Tensor, source_mask: torch.Tensor | None = None
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Source ids (B, S) (``source_mask`` (B, S) True on real tokens; None: all) → each decoder
        layer's cross-attention keys and values, (B, nh, S, hs) each."""
        B, S = source.shape
        if S > self.config.block_size:
            raise ValueError(f"source of {S} tokens exceeds block_size {self.config.block_size}")
        wte = self.src_wte if self.src_wte is not None else self.wte
        x = self.drop(wte(source) + self.enc_wpe(torch.arange(S, device=source.device)))
        mask: bool | torch.Tensor = False if source_mask is None else source_mask[:, None, None, :]
        for block in self.encoder:
            x = block(x, mask)
        x = self.ln_enc(x)
        return [_cross(blk).memory(x) for blk in self.decoder]

    def decode(self, ids: torch.Tensor, cache: DecoderCache, last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, V) of decoder ids (B, T) (``START`` first in a fresh decoder) after the
        ``cache.length`` positions already in the cache (an empty cache: a teacher-forced pass)."""
        B, T = ids.shape
        start = cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"target of {start + T} exceeds block_size {self.config.block_size}")
        tok = self.wte(ids.clamp(min=0))
        tok = torch.where((ids == START)[..., None], self.start.to(tok.dtype), tok)
        x = self.drop(tok + self.dec_wpe(torch.arange(start, start + T, device=ids.device)))
        for block in self.decoder:
            x = block(x, cache)
        cache.length += T
        if last_only:
            x = x[:, -1:, :]
        return self.head(self.ln_f(x))

    def forward(self, source: torch.Tensor, inputs: torch.Tensor,
                source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) of the target given the source and ``inputs``."""
        cross = self.encode(source, source_mask)
        mask = None if source_mask is None else source_mask[:, None, None, :]
        no_cache = torch.empty(0, device=source.device)
        return self.decode(inputs, DecoderCache(no_cache, no_cache, cross, mask))


def _cross(block: nn.Module) -> CrossAttention:
    assert isinstance(block, DecoderBlock)
    return block.cross


def build(config: Seq2SeqConfig) -> Seq2Seq:
    return Seq2Seq(config)


def _token_nll(model: Seq2Seq, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    b = split_pairs(batch)
    logits = model(b.source, b.inputs, b.source_mask).float()  # (B, T, V)
    nll = F.cross_entropy(logits.flatten(0, 1), b.targets.flatten(), reduction="none")
    return nll.view(b.targets.shape).masked_fill(~b.mask, 0.0), b.mask


def log_probs(model: Seq2Seq, batch: SequenceBatch) -> torch.Tensor:
    """Per row (B,), the sum of log p(completion token | source, completion before it)."""
    nll, _ = _token_nll(model, batch)
    return -nll.sum(dim=1)


def loss(model: Seq2Seq, batch: SequenceBatch) -> dict[str, torch.Tensor]:
    """Cross-entropy per completion token (what the ``pairs`` objective computes)."""
    nll, mask = _token_nll(model, batch)
    return {"loss": nll.sum() / mask.sum().clamp(min=1)}


# --- decoding --------------------------------------------------------------------------------


def _restart(model: Seq2Seq, cross: list[tuple[torch.Tensor, torch.Tensor]], rows: int,
             ids: torch.Tensor) -> tuple[DecoderCache, torch.Tensor]:
    """A fresh cache for ``rows`` sequences, prefilled with decoder ids (rows, T); last logits."""
    cache = DecoderCache.empty(model.config, rows, cross)
    return cache, model.decode(ids, cache, last_only=True)[:, -1, :]


@torch.no_grad()
def sample(model: Seq2Seq, request: TokenRequest, generator: Generators) -> Iterator[torch.Tensor]:
    """Yield the next target ids (B,) step by step; ``prompt_ids`` (B, S) is the source.

    1. Encode the source once: each decoder layer's cross keys/values.
    2. Decode ``START``; then one position per step through the cache. A full context is
       restarted from the last half of the decoder's ids (the source stays). Without the cache
       (``use_cache=False``) the whole target window is decoded again every step (the baseline).
    """
    block = model.config.block_size
    source = request.prompt_ids[:, -block:]
    B = source.size(0)
    cross = model.encode(source)
    dec = torch.full((B, 1), START, dtype=torch.long, device=source.device)
    cache, logits = _restart(model, cross, B, dec)
    ids = request.prompt_ids  # prompt + generated: what the penalties read, as for gpt
    for _ in range(request.max_new_tokens):
        nxt = next_token(logits.float(), generator, request, ids)
        yield nxt
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        dec = torch.cat([dec, nxt[:, None]], dim=1)
        if not request.use_cache:
            logits = _restart(model, cross, B, dec[:, -block:])[1]
        elif cache.length < block:
            logits = model.decode(nxt[:, None], cache, last_only=True)[:, -1, :]
        else:
            cache, logits = _restart(model, cross, B, dec[:, -(block // 2):])


@torch.no_grad()
def beam_search(model: Seq2Seq, prompt_ids: torch.Tensor, num_beams: int, max_new_tokens: int,
                end_ids: set[int], length_penalty: float = 1.0) -> list[int]:
    """The most likely target of one source ``prompt_ids`` (T,) among ``num_beams`` hypotheses:
    its tokens, ending with an end token if it ended. A hypothesis's score is its summed log-prob
    over its length ** ``length_penalty``; the search stops when ``num_beams`` hypotheses have
    ended and no running one can still beat the worst of them, or at ``max_new_tokens``."""
    block = model.config.block_size
    source = prompt_ids.reshape(1, -1)[:, -block:]
    cross = [(k.expand(num_beams, -1, -1, -1), v.expand(num_beams, -1, -1, -1))
             for k, v in model.encode(source)]
    dec = torch.full((num_beams, 1), START, dtype=torch.long, device=source.device)
    cache, logits = _restart(model, cross, num_beams, dec)
    scores = torch.full((num_beams,), -math.inf, device=source.device)
    scores[0] = 0.0  # every beam starts equal: only one is live at first
    beams: list[list[int]] = [[] for _ in range(num_beams)]
    ended: list[tuple[float, list[int]]] = []  # (normalised score, tokens), best first
    for step in range(1, max_new_tokens + 1):
        # 1. every extension of every live beam, the best 2·num_beams of them
        V = logits.size(-1)
        total = (scores[:, None] + F.log_softmax(logits.float(), dim=-1)).view(-1)
        top, flat = total.topk(min(2 * num_beams, total.numel()))
        keep: list[tuple[float, int, int]] = []  # (score, beam, token)
        for rank, (s, i) in enumerate(zip(top.tolist(), flat.tolist(), strict=True)):
            if s == -math.inf or len(keep) == num_beams:
                break
            beam, token = divmod(i, V)
            if token in end_ids:  # 2. an ended hypothesis, if it ranks among the best num_beams
                if rank < num_beams:
                    ended.append((s / step ** length_penalty, [*beams[beam], token]))
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
        order = torch.tensor([b for _, b, _ in keep], device=source.device)
        tokens = torch.tensor([t for _, _, t in keep], device=source.device)
        scores = torch.tensor([s for s, _, _ in keep], device=source.device)
        beams = [[*beams[b], t] for _, b, t in keep]
        dec = torch.cat([dec.index_select(0, order), tokens[:, None]], dim=1)
        if step == max_new_tokens:
            break
        if cache.length < block:
            cache.k, cache.v = cache.k.index_select(1, order), cache.v.index_select(1, order)
            logits = model.decode(tokens[:, None], cache, last_only=True)[:, -1, :]
        else:
            cache, logits = _restart(model, cross, num_beams, dec[:, -(block // 2):])
    running = [(s / max(len(b), 1) ** length_penalty, b) for s, b in zip(scores.tolist(), beams,
                                                                         strict=True)
               if s > -math.inf and b]
    best: tuple[float, list[int]] = max(ended + running, key=lambda e: e[0], default=(0.0, []))
    return best[1]


class Seq2SeqSlots:
    """The ``SlotDecoder`` of seq2seq: up to ``slots`` sources, each slot with its own cross
    keys/values (L, S, nh, T, hs) up to its source's length and its decoder's self keys/values,
    stepped together at their own positions. Overflow restarts as ``sample`` does, so greedy
    decoding through a slot gives ``sample``'s tokens for that source alone."""

    def __init__(self, model: Seq2Seq, slots: int):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        model.eval()
        self.model, self.slots = model, slots
        cfg = model.config
        p = next(model.parameters())
        shape = (cfg.n_decoder_layer, slots, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.k, self.v, self.ck, self.cv = (torch.zeros(shape, dtype=p.dtype, device=p.device)
                                            for _ in range(4))
        self.device = p.device
        self.lengths = [0] * slots  # decoder positions filled per slot
        self.sources = [0] * slots  # source length per slot
        self.history: list[list[int] | None] = [None] * slots  # the decoder's last block ids

    def _cross(self, slot: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        S = self.sources[slot]
        return [(self.ck[i, slot:slot + 1, :, :S], self.cv[i, slot:slot + 1, :, :S])
                for i in range(self.model.config.n_decoder_layer)]

    @torch.no_grad()
    def _fill(self, slot: int, ids: list[int]) -> torch.Tensor:
        cache = DecoderCache(self.k[:, slot:slot + 1], self.v[:, slot:slot + 1], self._cross(slot))
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        logits = self.model.decode(x, cache, last_only=True)[0, -1]
        self.lengths[slot] = cache.length
        return logits.float()

    @torch.no_grad()
    def prefill(self, slot: int, ids: torch.Tensor) -> torch.Tensor:
        check_slot(slot, self.slots)
        if ids.ndim != 1 or ids.numel() < 1:
            raise ValueError(f"prefill takes one prompt of shape (T,) with T >= 1, got {tuple(ids.shape)}")
        source = ids[-self.model.config.block_size:].to(self.device)
        S = self.sources[slot] = source.numel()
        for i, (k, v) in enumerate(self.model.encode(source[None])):
            self.ck[i, slot, :, :S], self.cv[i, slot, :, :S] = k[0], v[0]
        self.history[slot] = [START]
        return self._fill(slot, [START])

    def free(self, slot: int) -> None:
        self.history[check_slot(slot, self.slots)] = None
        self.lengths[slot] = self.sources[slot] = 0

    @torch.no_grad()
    def step(self, slots: list[int], tokens: torch.Tensor) -> torch.Tensor:
        check_step(slots, tokens, self.slots, lambda s: self.history[s] is not None)
        cfg = self.model.config
        return step_slots(slots, tokens, self.history, self.lengths, cfg.block_size, cfg.vocab_size,
                          self.device, self._fill, self._advance)

    def _advance(self, slots: list[int], tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` (B,) to ``slots`` (none full), each at its own position; logits (B, V).
        Runs the decoder blocks by hand: ``DecoderBlock.forward`` takes one position for all."""
        m, cfg = self.model, self.model.config
        B, nh, C = len(slots), cfg.n_head, cfg.n_embd
        slot_t = torch.tensor(slots, device=self.device)
        pos = torch.tensor([self.lengths[s] for s in slots], device=self.device)
        width = int(pos.max()) + 1
        sees = (torch.arange(width, device=self.device) <= pos[:, None])[:, None, None, :]
        src = torch.tensor([self.sources[s] for s in slots], device=self.device)
        widest = int(src.max())
        reads = (torch.arange(widest, device=self.device) < src[:, None])[:, None, None, :]
        x = m.wte(tokens.to(self.device)) + m.dec_wpe(pos)  # (B, C)
        for layer, blk in enumerate(m.decoder):
            assert isinstance(blk, DecoderBlock)
            q, k, v = blk.attn.qkv(blk.ln_1(x)).view(B, 3, nh, C // nh).unbind(1)  # (B, nh, hs)
            self.k[layer, slot_t, :, pos], self.v[layer, slot_t, :, pos] = k, v
            keys = self.k[layer, :, :, :width].index_select(0, slot_t)  # (B, nh, width, hs)
            values = self.v[layer, :, :, :width].index_select(0, slot_t)
            y = attention(q[:, :, None, :], keys, values, sees, 0.0)  # (B, nh, 1, hs)
            x = x + blk.attn.proj(y.reshape(B, C))
            q = blk.cross.q(blk.ln_2(x)).view(B, nh, 1, C // nh)
            keys = self.ck[layer, :, :, :widest].index_select(0, slot_t)
            values = self.cv[layer, :, :, :widest].index_select(0, slot_t)
            x = x + blk.cross.proj(attention(q, keys, values, reads, 0.0).reshape(B, C))
            x = x + blk.mlp(blk.ln_3(x))
        for s in slots:
            self.lengths[s] += 1
        return m.head(m.ln_f(x)).float()  # (B, V)


def slot_decoder(model: torch.nn.Module, slots: int) -> SlotDecoder:
    assert isinstance(model, Seq2Seq)
    return Seq2SeqSlots(model, slots)


FAMILY = Family(
    name="seq2seq",
    kinds=("pairs",),
    conditioning="text",
    config=Seq2SeqConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    log_probs=log_probs,
    sample=sample,
    beam_search=beam_search,
    kv_cache=True,
    streaming=True,
    slot_decoder=slot_decoder,
    description="encoder–decoder Transformer (cross-attention, decoder KV cache, beam search)",
    exempt={"log_probs": "the check reads model(x) as a decoder-only model's logits; an "
                         "encoder–decoder scores a completion given its source "
                         "(tests/models/test_seq2seq.py checks it against teacher forcing)"},
)
