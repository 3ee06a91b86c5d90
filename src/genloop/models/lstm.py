"""lstm — a recurrent language model (Hochreiter & Schmidhuber 1997; char-rnn, Karpathy 2015).

Embedding → stacked LSTM (cuDNN/oneDNN fused kernel via ``nn.LSTM``) → LayerNorm → linear head,
tied to the embedding when sizes allow. Generation carries the hidden state, so each new token
costs one step whatever the length so far — an LSTM needs no cache and has no context limit at
sampling time (``block_size`` is the training sequence length only). ``SlotStates`` keeps the
state of several independent sequences and steps any of them together (continuous batching).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from genloop.models.family import (
    Family,
    Generators,
    SequenceBatch,
    SlotDecoder,
    TextModelConfig,
    TokenRequest,
    check_slot,
    check_step,
)
from genloop.models.sampling import next_token


class LSTMConfig(TextModelConfig):
    n_layer: int = Field(2, ge=1, le=8)
    n_embd: int = Field(128, ge=8, le=4096, description="embedding and hidden width")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    tie_weights: bool = True


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_layer=1, n_embd=64, block_size=64),
    "small": dict(n_layer=2, n_embd=256, block_size=128),
    "medium": dict(n_layer=3, n_embd=512, block_size=128, dropout=0.2),
}


class LSTMLM(nn.Module):
    def __init__(self, config: LSTMConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("LSTMConfig.vocab_size must be set from the tokenizer")
        self.config = config
        C = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, C)
        self.rnn = nn.LSTM(C, C, num_layers=config.n_layer, batch_first=True,
                           dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.ln_f = nn.LayerNorm(C)
        self.head = nn.Linear(C, config.vocab_size, bias=False)
        if config.tie_weights:
            self.head.weight = self.wte.weight
        nn.init.normal_(self.wte.weight, std=0.02)

    def forward(
        self, idx: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Logits (B, T, V) and the new (h, c) state, each (n_layer, B, C)."""
        x = self.drop(self.wte(idx))  # (B, T, C)
        x, state = self.rnn(x, state)
        return self.head(self.ln_f(self.drop(x))), state


def build(config: LSTMConfig) -> LSTMLM:
    return LSTMLM(config)


def loss(model: LSTMLM, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Next-token cross-entropy over (inputs, targets), each (B, T); state starts at zero."""
    x, y = batch
    logits, _ = model(x)
    return {"loss": F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))}


def log_probs(model: LSTMLM, batch: SequenceBatch) -> torch.Tensor:
    """Per sequence (B,), the sum of log p(target_t | inputs_<=t) over the masked positions;
    state starts at zero."""
    logits, _ = model(batch.inputs)  # (B, T, V)
    nll = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
    return -nll.view(batch.targets.shape).masked_fill(~batch.mask, 0.0).sum(dim=1)


@torch.no_grad()
def sample(
    model: LSTMLM, request: TokenRequest, generator: Generators
) -> Iterator[torch.Tensor]:
    """Yield the next token ids (B,): read the prompt once, then one recurrent step per token."""
    ids = request.prompt_ids
    logits, state = model(ids)
    logits = logits[:, -1, :]
    for _ in range(request.max_new_tokens):
        nxt = next_token(logits, generator, request, ids)
        yield nxt
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        logits, state = model(nxt[:, None], state)
        logits = logits[:, -1, :]


class SlotStates:
    """The (h, c) state of ``slots`` independent sequences, each (n_layer, S, C): the ``SlotDecoder``
    of lstm. ``step`` gathers the listed slots' state, runs one batched recurrent step and
    scatters the new state back; greedy decoding through a slot gives ``sample``'s tokens."""

    def __init__(self, model: LSTMLM, slots: int):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        model.eval()  # decoding is inference: no dropout
        self.model, self.slots = model, slots
        p = next(model.parameters())
        shape = (model.config.n_layer, slots, model.config.n_embd)
        self.h = torch.zeros(shape, dtype=p.dtype, device=p.device)
        self.c = torch.zeros(shape, dtype=p.dtype, device=p.device)
        self.device = p.device
        self.occupied = [False] * slots

    def _check(self, slot: int) -> int:
        return check_slot(slot, self.slots)

    @torch.no_grad()
    def prefill(self, slot: int, ids: torch.Tensor) -> torch.Tensor:
        self._check(slot)
        if ids.ndim != 1 or ids.numel() < 1:
            raise ValueError(f"prefill takes one prompt of shape (T,) with T >= 1, got {tuple(ids.shape)}")
        logits, (h, c) = self.model(ids.to(self.device)[None])  # state starts at zero
        self.h[:, slot], self.c[:, slot] = h[:, 0], c[:, 0]
        self.occupied[slot] = True
        return logits[0, -1].float()

    def free(self, slot: int) -> None:
        self.occupied[self._check(slot)] = False

    @torch.no_grad()
    def step(self, slots: list[int], tokens: torch.Tensor) -> torch.Tensor:
        check_step(slots, tokens, self.slots, lambda s: self.occupied[s])
        if not slots:
            return torch.empty(0, self.model.config.vocab_size, device=self.device)
        idx = torch.tensor(slots, device=self.device)
        state = (self.h[:, idx], self.c[:, idx])  # (n_layer, B, C) each
        logits, (h, c) = self.model(tokens.to(self.device)[:, None], state)
        self.h[:, idx], self.c[:, idx] = h, c
        return logits[:, -1].float()  # (B, V)


def slot_decoder(model: torch.nn.Module, slots: int) -> SlotDecoder:
    assert isinstance(model, LSTMLM)
    return SlotStates(model, slots)


FAMILY = Family(
    name="lstm",
    kinds=("text", "pairs", "preferences"),
    conditioning="none",
    compiles=True,
    config=LSTMConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    log_probs=log_probs,
    sample=sample,
    kv_cache=False,
    streaming=True,
    slot_decoder=slot_decoder,
    description="stacked LSTM language model (char-rnn style)",
)
