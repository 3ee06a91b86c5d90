"""lstm — a recurrent language model (Hochreiter & Schmidhuber 1997; char-rnn, Karpathy 2015).

Embedding → stacked LSTM (cuDNN/oneDNN fused kernel via ``nn.LSTM``) → LayerNorm → linear head,
tied to the embedding when sizes allow. Generation carries the hidden state, so each new token
costs one step whatever the length so far — an LSTM needs no cache and has no context limit at
sampling time (``block_size`` is the training sequence length only).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from genloop.models.family import Family, TextModelConfig, TokenRequest, sample_next


class LSTMConfig(TextModelConfig):
    n_layer: int = Field(2, ge=1, le=8)
    n_embd: int = Field(128, ge=8, le=4096, description="embedding and hidden width")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    tie_weights: bool = True


PRESETS = {
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


@torch.no_grad()
def sample(
    model: LSTMLM, request: TokenRequest, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Yield the next token ids (B,): read the prompt once, then one recurrent step per token."""
    ids = request.prompt_ids
    logits, state = model(ids)
    logits = logits[:, -1, :]
    for _ in range(request.max_new_tokens):
        nxt = sample_next(
            logits, generator, temperature=request.temperature, top_k=request.top_k,
            top_p=request.top_p, repetition_penalty=request.repetition_penalty, history=ids,
        )
        yield nxt
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        logits, state = model(nxt[:, None], state)
        logits = logits[:, -1, :]


FAMILY = Family(
    name="lstm",
    modality="text",
    config=LSTMConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    sample=sample,
    kv_cache=False,
    streaming=True,
    description="stacked LSTM language model (char-rnn style)",
)
