"""embedder — a pretrained text encoder (BERT family) and the pooling that makes a sentence vector.

The network is whatever transformers builds from the encoder's ``config.json``
(``AutoModel.from_config``: BERT, RoBERTa, DistilBERT, MPNet, ...), held as ``.encoder``; the
sentence embedding is the sentence-transformers recipe its directory declares
(``modules.json``, ``1_Pooling/config.json``): the token states pooled over the real tokens
(``mean``, ``cls``, ``max`` or ``mean_sqrt_len``), then L2-normalised if a ``Normalize`` module
follows. ``hub/encoders.py`` imports such a directory into this family.

It is not generative: ``sample`` refuses, and ``embed(model, ids, mask)`` is what the faces call
(``generation/embeddings.py``, ``POST /v1/embeddings``). Its own objective (``loss``) is the one
sentence-transformers tunes embedders with (multiple negatives ranking: each row's positive
against the batch's others, cosine similarity × 20), on ``(anchor, positive)`` token rows; a
text batch's windows and the same windows one token on serve as those pairs.

Pretraining from scratch is BERT's masked language model (``mlm_loss``, the ``mlm`` objective):
15% of the tokens are chosen, 80% of those replaced by the mask token (``mask_id``: an imported
BERT's ``[MASK]``, genloop tokenizers' ``<unk>``), 10% by a random token and 10% kept, and the
model predicts the originals through its own input embeddings (tied: no new parameters, so the
state dict stays the embedder's and loads as a text encoder unchanged).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from genloop.errors import InvalidInput
from genloop.models.family import Family, TextModelConfig

Pooling = Literal["mean", "cls", "max", "mean_sqrt_len"]
SCALE = 20.0  # sentence-transformers' MultipleNegativesRankingLoss: cosine similarity × 20


class EmbedderConfig(TextModelConfig):
    """``hf_config``: the encoder's transformers ``config.json``; ``block_size``: tokens per text
    (special ones included: sentence-transformers' ``max_seq_length``); ``vocab_size`` is the
    encoder's own unless set."""

    hf_config: dict[str, Any] = Field(description="the encoder's transformers config.json")
    pooling: Pooling = "mean"
    normalize: bool = Field(True, description="L2-normalise each sentence vector")
    mask_id: int = Field(0, ge=0, description="the token the mlm objective masks with: an imported "
                         "BERT's [MASK], else 0 (genloop tokenizers' <unk>)")

    @model_validator(mode="after")
    def _fits(self) -> EmbedderConfig:
        if not self.hf_config.get("model_type"):
            raise ValueError("hf_config needs the encoder's model_type")
        if self.vocab_size == 0:
            self.vocab_size = int(self.hf_config.get("vocab_size", 0))
        positions = self.hf_config.get("max_position_embeddings")
        if positions is not None and self.block_size > int(positions):
            raise ValueError(f"block_size {self.block_size} is longer than the encoder's "
                             f"{positions} positions")
        return self

    @property
    def width(self) -> int:
        """Dimensions of one embedding (the encoder's hidden size)."""
        return int(self.hf_config.get("hidden_size") or self.hf_config.get("dim") or 0)


def _bert(hidden: int, layers: int, heads: int) -> dict[str, Any]:
    return {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": hidden,
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": 4 * hidden, "max_position_embeddings": 64, "type_vocab_size": 2,
            "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0}


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"hf_config": _bert(32, 2, 2), "block_size": 64},
    # the text encoder of the shapes (TextEncoderSpec's from-scratch size), pretrained by shapes-mlm
    "encoder": {"hf_config": _bert(64, 2, 4), "block_size": 32, "normalize": False},
    "small": {"hf_config": {**_bert(128, 4, 4), "max_position_embeddings": 256}, "block_size": 256},
}


def transformers_config(config: EmbedderConfig) -> Any:
    """The transformers config object of ``config.hf_config`` (with its ``vocab_size``);
    InvalidInput when transformers does not know the architecture."""
    from transformers import AutoConfig

    raw = {k: v for k, v in config.hf_config.items() if not k.startswith("_")}
    raw["vocab_size"] = config.vocab_size
    try:
        return AutoConfig.for_model(**raw)
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidInput(f"transformers cannot build an encoder of model_type "
                           f"{raw.get('model_type')!r} ({str(e).splitlines()[0]})") from None


class Embedder(torch.nn.Module):
    def __init__(self, config: EmbedderConfig):
        super().__init__()
        from transformers import AutoModel

        self.config = config
        self.encoder = AutoModel.from_config(transformers_config(config))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token states (B, T, H) of ids (B, T) int64, attending to the real tokens (mask, bool)."""
        return self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state


def build(config: EmbedderConfig) -> Embedder:
    return Embedder(config)


def pool(tokens: torch.Tensor, mask: torch.Tensor, how: Pooling) -> torch.Tensor:
    """One vector per row from token states (B, T, H) over the real tokens (B, T): as
    sentence-transformers' ``Pooling`` computes it."""
    if how == "cls":
        return tokens[:, 0]
    m = mask[..., None].to(tokens.dtype)
    if how == "max":
        return tokens.masked_fill(m == 0, -1e9).max(dim=1).values
    total, count = (tokens * m).sum(dim=1), m.sum(dim=1).clamp(min=1e-9)
    return total / (count if how == "mean" else count.sqrt())


def embed(model: Embedder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, H) float32 sentence embeddings of ids (B, T) with their attention mask (B, T) bool."""
    vectors = pool(model(ids, mask), mask, model.config.pooling).float()
    return F.normalize(vectors, p=2, dim=1) if model.config.normalize else vectors


def loss(model: Embedder, batch: Any) -> dict[str, torch.Tensor]:
    """Multiple negatives ranking on ``(anchors, positives)`` (B, T) token rows: row i's positive
    is its match, every other row's a negative (cross-entropy over scaled cosine similarities)."""
    anchors, positives = batch
    a = F.normalize(embed(model, anchors, torch.ones_like(anchors, dtype=torch.bool)), dim=1)
    b = F.normalize(embed(model, positives, torch.ones_like(positives, dtype=torch.bool)), dim=1)
    scores = SCALE * a @ b.T
    labels = torch.arange(len(a), device=a.device)
    return {"loss": F.cross_entropy(scores, labels),
            "accuracy": (scores.detach().argmax(dim=1) == labels).float().mean()}


MLM_SHARE, MLM_MASK, MLM_RANDOM = 0.15, 0.8, 0.1  # BERT: 15% chosen; of those 80% / 10% / 10% kept


def _batch_generator(ids: torch.Tensor) -> torch.Generator:
    """A CPU generator seeded by the batch's tokens: the masks of a batch are a pure function of
    it (a resumed run and every validation pass mask alike)."""
    weights = torch.arange(1, ids.numel() + 1, device=ids.device).view_as(ids)
    return torch.Generator().manual_seed(int((ids.long() * weights).sum().item()) % (2**63))


def mlm_loss(model: Embedder, ids: torch.Tensor, mask_id: int | None = None,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """BERT's masked-LM loss on token rows ``ids`` (B, T): cross-entropy of the chosen tokens'
    originals, read through the tied input embeddings; ``masked_accuracy`` beside it. Every row
    has at least one chosen token."""
    g = generator or _batch_generator(ids)
    vocab = model.encoder.get_input_embeddings().weight  # (V, H)
    shape = ids.shape
    chosen = (torch.rand(shape, generator=g) < MLM_SHARE).to(ids.device)
    chosen[:, 0] |= ~chosen.any(dim=1)
    action = torch.rand(shape, generator=g).to(ids.device)
    randoms = torch.randint(0, vocab.shape[0], shape, generator=g).to(ids.device)
    mask_token = model.config.mask_id if mask_id is None else mask_id
    inputs = torch.where(chosen & (action < MLM_MASK), torch.full_like(ids, mask_token), ids)
    inputs = torch.where(chosen & (action >= MLM_MASK) & (action < MLM_MASK + MLM_RANDOM), randoms, inputs)
    states = model(inputs, torch.ones_like(ids, dtype=torch.bool))  # (B, T, H)
    logits = states[chosen].float() @ vocab.float().T  # (N, V)
    targets = ids[chosen]
    return {"loss": F.cross_entropy(logits, targets),
            "masked_accuracy": (logits.detach().argmax(dim=1) == targets).float().mean()}


def sample(model: Embedder, request: Any, generator: Any) -> Any:
    raise InvalidInput("an embedder maps text to vectors, it does not generate text: use "
                       "POST /v1/embeddings or genloop.generation.embeddings.embed")


FAMILY = Family(
    name="embedder",
    kinds=("text",),
    conditioning="none",
    config=EmbedderConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    sample=sample,
    embed=embed,
    generative=False,
    description="a pretrained text encoder (BERT family) with sentence-transformers pooling: "
                "one vector per text",
    exempt={"seeded_sample": "an embedder maps text to vectors; it does not generate",
            "log_probs": "an encoder has no next-token head: it embeds text, it does not score "
                         "continuations"},
)
