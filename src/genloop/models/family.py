"""The one contract every model family fulfils; the loop and the faces speak only this.

A family is a name, a typed config with named presets, and four functions:

    build(config) -> nn.Module                       the network, nothing else
    loss(model, batch) -> {"loss": tensor, ...}      the training objective ("loss" is minimised)
    sample(model, request, generator) -> output      the generation loop, written out
    train_step                                       only for families with several optimizers
    log_probs(model, SequenceBatch) -> (B,)          text families: log-likelihood of given tokens

Text families take ``(x, y)`` token batches and a ``TokenRequest``; image families take an
``ImageBatch`` and an ``ImageRequest``. Capabilities the faces need are fields (``kv_cache``,
``streaming``, ``slot_decoder``, ``latent_shape``, ``importance_nll``), never ``hasattr`` probes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from genloop.errors import RecipeError


class ModelConfig(BaseModel):
    """Base of every family's config: typed, bounded, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class TextModelConfig(ModelConfig):
    """Sizes every text family shares. ``vocab_size`` is filled in from the dataset's tokenizer."""

    vocab_size: int = Field(0, ge=0, le=1_000_000, description="set from the tokenizer")
    block_size: int = Field(256, ge=8, le=65536, description="context length in tokens")


class ImageModelConfig(ModelConfig):
    """Sizes every image family shares; the three shape fields are filled in from the dataset."""

    channels: int = Field(1, ge=1, le=4, description="set from the dataset")
    image_size: int = Field(28, ge=4, le=512, description="side of the square images; set from the dataset")
    num_classes: int = Field(0, ge=0, le=100_000, description="set from the dataset's labels")
    conditional: bool = Field(False, description="condition on the class label")


@dataclass
class ImageBatch:
    """One training batch of an image family.

    ``images`` (B, C, H, W) float in [-1, 1]; ``labels`` (B,) int64 class ids; ``generator``
    draws every random number the objective needs (noise, timesteps, latents, binarisation), so
    a batch — and a resumed run — is a pure function of (seed, step, micro-batch, rank).
    """

    images: torch.Tensor
    labels: torch.Tensor
    generator: torch.Generator


@dataclass
class ImageTextBatch(ImageBatch):
    """An image batch with each image's caption (the ``image_text`` kind).

    ``captions`` (B, T) int64 token ids, right-padded with the tokenizer's end-of-text id;
    ``caption_mask`` (B, T) bool, True on the caption's own tokens; ``attributes`` (B, A) int64:
    the caption's attribute ids (``data/shapes.py``; −1 where a slot is absent), or None when the
    dataset has none (a folder of captioned photos).
    """

    captions: torch.Tensor = None  # type: ignore[assignment]
    caption_mask: torch.Tensor = None  # type: ignore[assignment]
    attributes: torch.Tensor | None = None


@dataclass
class SequenceBatch:
    """Token sequences of which only some targets count (a completion after its prompt).

    ``inputs`` and ``targets`` (B, T) int64, ``targets`` the next token of each input position;
    ``mask`` (B, T) bool, True where the target token counts (a loss or a log-likelihood sums
    over those positions only).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor


def sequence_batch(prompts: Sequence[np.ndarray], completions: Sequence[np.ndarray], block: int,
                   pad: int) -> SequenceBatch:
    """One masked batch from each record's prompt and completion ids (1-D int arrays).

    Each record is ``prompt + completion`` cut to ``block + 1`` tokens: the prompt loses its
    oldest tokens first, then the completion its last ones; an empty prompt is one ``pad``
    (end-of-text: a fresh document, as in generation). Rows are right-padded with ``pad``;
    ``mask`` is True on targets that are completion tokens."""
    rows, masks = [], []
    for p, c in zip(prompts, completions, strict=True):
        if len(p) == 0:  # an empty prompt starts a fresh document, as in generation
            p = np.array([pad])
        c = c[: block + 1]
        p = p[max(0, len(p) - (block + 1 - len(c))):] if len(c) < block + 1 else p[:0]
        rows.append(np.concatenate([p, c]).astype(np.int64))
        masks.append(np.concatenate([np.zeros(len(p), bool), np.ones(len(c), bool)]))
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, (r, m) in enumerate(zip(rows, masks, strict=True)):
        ids[i, : len(r)], mask[i, : len(m)] = r, m
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    return SequenceBatch(inputs=ids_t[:, :-1], targets=ids_t[:, 1:], mask=mask_t[:, 1:])


# how a diffusion family samples: DDPM's ancestral chain, DDIM, or DPM-Solver++(2M) (schedulers.py)
Sampler = Literal["ddpm", "ddim", "dpmpp_2m"]


@dataclass
class ImageRequest:
    """What an image family's ``sample`` needs; it returns (B, C, H, W) float in [-1, 1].

    ``labels`` (B,) int64 gives the class of each sample (None: unconditional, or the model
    ignores it). ``steps``/``sampler``/``guidance_scale`` matter to diffusion only; ``latents``
    (B, *latent_shape) replaces the random draw for families with a latent space (interpolation).

    ``sample(model, request, generator)`` draws with ``Generators``: one generator for the whole
    batch, or one per image: then image i takes every random number it needs (its labels when
    none are given, its latent or initial noise, a DDPM step's noise) from generator i alone, in
    the order a batch of one would, so each image depends only on its own seed while the network
    still runs on the batch (``draw_normal``).
    """

    num_samples: int
    labels: torch.Tensor | None = None
    steps: int | None = None
    sampler: Sampler = "ddim"
    guidance_scale: float = 1.0
    latents: torch.Tensor | None = None
    # text-conditioned families: each image's prompt as token ids (B, T) int64, right-padded,
    # and its mask (B, T) bool (True on real tokens); an all-False row is the empty caption
    prompt_ids: torch.Tensor | None = None
    prompt_mask: torch.Tensor | None = None


@dataclass
class CaptionRequest:
    """What an image-conditioned family's ``sample`` needs (a captioner): the images to describe.

    ``images`` (B, C, H, W) float in [-1, 1], already at the model's channels and size.
    ``temperature`` 0 is greedy; ``num_beams`` > 1 is beam search (deterministic: temperature and
    top-k/p are not used). ``sample(model, request, generators)`` returns each image's token ids
    (B lists), without the end-of-text token that ended it; with per-image generators, image i's
    tokens depend only on generator i. ``use_cache``: the decoder's key/value cache (False: the
    whole prefix again every step, the baseline it is checked against).
    """

    images: torch.Tensor
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    num_beams: int = 1
    use_cache: bool = True


@dataclass
class TokenRequest:
    """What a text family's ``sample`` needs: already tokenized, already validated.

    ``prompt_ids`` is (B, T): one batch of prompts of equal length (the generation layer groups
    prompts by length). ``sample`` yields the next token ids, (B,), one step at a time, until
    ``max_new_tokens`` steps; the caller may stop early (stop strings, client gone).
    """

    prompt_ids: torch.Tensor
    max_new_tokens: int = 100
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    use_cache: bool = True
    frequency_penalty: float = 0.0  # OpenAI's, over the ids generated so far (models/sampling.py)
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None


# what a family's ``sample`` draws with: one generator for the batch, or one per row
Generators = torch.Generator | Sequence[torch.Generator]


def draw_normal(generator: Generators, rows: int, shape: tuple[int, ...],
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise (rows, *shape) on the CPU: from one generator, or row i from
    generator i (exactly what a batch of one would draw from it)."""
    if isinstance(generator, torch.Generator):
        return torch.randn((rows, *shape), generator=generator, device=generator.device,
                           dtype=dtype).cpu()
    _check_rows(generator, rows)
    return torch.cat([torch.randn((1, *shape), generator=g, device=g.device, dtype=dtype).cpu()
                      for g in generator])


def draw_labels(generator: Generators, rows: int, classes: int) -> torch.Tensor:
    """Uniform class ids (rows,) on the CPU, from one generator or row i from generator i."""
    if isinstance(generator, torch.Generator):
        return torch.randint(0, classes, (rows,), generator=generator, device=generator.device).cpu()
    _check_rows(generator, rows)
    return torch.cat([torch.randint(0, classes, (1,), generator=g, device=g.device).cpu()
                      for g in generator])


def _check_rows(generators: Sequence[torch.Generator], rows: int) -> None:
    if len(generators) != rows:
        raise ValueError(f"{len(generators)} generators for {rows} images")


class SlotDecoder(Protocol):
    """Decoding state of up to ``slots`` independent sequences of one model (continuous batching).

    A sequence occupies a slot from ``prefill`` until ``free``; ``step`` advances any subset of
    occupied slots by one token in one forward pass, whatever their lengths. Concurrent requests
    to one text model so share each forward pass, joining and leaving between steps; greedy
    decoding through a slot gives the tokens of the family's ``sample`` run on that prompt alone.
    """

    slots: int

    def prefill(self, slot: int, ids: torch.Tensor) -> torch.Tensor:
        """(Re)start ``slot`` with the prompt ``ids`` (T,) int64, T >= 1 (the caller keeps
        T < block_size for context-limited models); return logits (V,) float32 for the next token."""
        ...

    def step(self, slots: list[int], tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` (B,) int64, the token just chosen for each of the distinct ``slots``
        (B = len(slots)); return logits (B, V) float32 for the token after it, in that order."""
        ...

    def free(self, slot: int) -> None:
        """Release ``slot``; a later ``prefill`` may reuse it."""
        ...


def check_slot(slot: int, slots: int) -> int:
    """``slot`` if it is one of a decoder's ``slots``, else IndexError."""
    if not 0 <= slot < slots:
        raise IndexError(f"slot {slot} out of range: this decoder has slots 0..{slots - 1}")
    return slot


def check_step(slots: list[int], tokens: torch.Tensor, n_slots: int,
               occupied: Callable[[int], bool]) -> None:
    """The arguments of ``SlotDecoder.step``, checked the same way by every family."""
    if tokens.shape != (len(slots),):
        raise ValueError(f"step takes one token per slot: {len(slots)} slots, "
                         f"tokens of shape {tuple(tokens.shape)}")
    if len(set(slots)) != len(slots):
        raise ValueError(f"step takes distinct slots, got {slots}")
    for s in slots:
        if not occupied(check_slot(s, n_slots)):
            raise ValueError(f"slot {s} is free: prefill it before stepping it")


def step_slots(slots: list[int], tokens: torch.Tensor, history: list[list[int] | None],
               lengths: list[int], block: int, vocab: int, device: torch.device | str,
               fill: Callable[[int, list[int]], torch.Tensor],
               advance: Callable[[list[int], torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The part of ``SlotDecoder.step`` every context-limited decoder shares (arguments already
    checked by ``check_step``): each token is appended to its slot's ``history`` (its last
    ``block`` tokens); a slot whose cache is full is restarted by ``fill(slot, ids)`` from the
    last half of its history, as the families' ``sample`` do; every other row goes through
    ``advance(slots, tokens)`` in one pass. Logits (B, V) in the order of ``slots``."""
    if not slots:
        return torch.empty(0, vocab, device=device)
    refilled: dict[int, torch.Tensor] = {}  # row -> logits
    for i, (s, t) in enumerate(zip(slots, tokens.tolist(), strict=True)):
        ids = history[s]
        assert ids is not None
        ids.append(t)
        if len(ids) > block:
            del ids[0]
        if lengths[s] == block:
            refilled[i] = fill(s, ids[-(block // 2):])
    if not refilled:
        return advance(slots, tokens)
    rows = [i for i in range(len(slots)) if i not in refilled]
    out = torch.empty(len(slots), vocab, device=device)
    for i, logits in refilled.items():
        out[i] = logits
    if rows:
        out[rows] = advance([slots[i] for i in rows], tokens[rows])
    return out


# the request field each conditioning is given in (ImageGenRequest's, for image families): a
# class-conditional family reads ``class_label``, a text-conditioned one a ``prompt`` sentence
READS: dict[str, str | None] = {"none": None, "class": "class_label", "text": "prompt", "image": "image"}


@dataclass(frozen=True)
class Family:
    name: str
    # the data kinds it trains on (``data/kinds.py``); the first is what it generates from
    kinds: tuple[str, ...]
    # what a request may condition it on: nothing, a class label, a text, an image
    conditioning: Literal["none", "class", "text", "image"]
    config: type[ModelConfig]
    presets: dict[str, dict[str, Any]]
    build: Callable[[Any], torch.nn.Module]
    # The model argument of the functions below is ``Any``: each family's functions take its own
    # nn.Module subclass (what its ``build`` returns), which a registry of mixed families cannot
    # name; ``sample`` draws with ``Generators`` (one generator, or one per row or image) and
    # returns an ``Iterator[torch.Tensor]`` of next-token ids (text) or a (B, C, H, W) tensor (image).
    loss: Callable[[Any, Any], dict[str, torch.Tensor]]
    sample: Callable[[Any, Any, Any], Any]
    # train_step(model, batch, optimizer, grad_clip) -> {"loss": float, ...}: one whole update
    # (backward and optimizer.step included), for objectives with several players (GAN)
    train_step: Callable[..., dict[str, float]] | None = None
    # log_probs(model, batch) -> (B,) float: per sequence, the sum of log p(target_t | inputs_<=t)
    # over the masked positions (text families; preference and pairs objectives build on it)
    log_probs: Callable[[Any, SequenceBatch], torch.Tensor] | None = None
    # score(model, batch) -> (B,) float: one scalar per sequence, read where its last completion
    # token is predicted (reward models; the ``reward`` objective and best-of-n build on it)
    score: Callable[[Any, SequenceBatch], torch.Tensor] | None = None
    # embed(model, ids, mask) -> (B, D) float32: one vector per sequence of token ids (B, T) int64
    # whose ``mask`` (B, T) bool marks the real tokens (embedders; ``/v1/embeddings`` builds on it)
    embed: Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    # init_from(model, parent_family, parent_config, parent_network): start a new network from a
    # parent of another family (reward: a gpt's weights under its score head); RecipeError when
    # the parent does not fit. None: only a parent of this family, with the same config
    init_from: Callable[[Any, Family, Any, torch.nn.Module], None] | None = None
    # the objective a recipe trains it with when it names none (None: its data kind's own)
    objective: str | None = None
    kv_cache: bool = False
    streaming: bool = False
    # slot_decoder(model, slots) -> SlotDecoder: decoding state for up to ``slots`` sequences
    # stepped together (text families; the HTTP face batches concurrent requests through it)
    slot_decoder: Callable[[Any, int], SlotDecoder] | None = None
    # beam_search(model, prompt_ids (T,), num_beams, max_new_tokens, end_ids, length_penalty)
    # -> the best hypothesis's token ids (text families that search; ``TextRequest.num_beams``)
    beam_search: Callable[..., list[int]] | None = None
    description: str = ""
    # False: the network is not a generator (the feature classifier behind FID); evaluation
    # measures its accuracy instead of its samples
    generative: bool = True
    # False: the validation loss says nothing about sample quality (GAN): keep the last weights
    selects_best: bool = True
    # latent_shape(config) -> shape of one latent (GAN, VAE): interpolation walks this space
    latent_shape: Callable[[Any], tuple[int, ...]] | None = None
    # importance_nll(model, batch, k) -> (B,) negative log-likelihood in nats from k importance
    # samples (k=1: the negative ELBO); families with a tractable bound (VAE)
    importance_nll: Callable[[Any, ImageBatch, int], torch.Tensor] | None = None
    # True: torch.compile pays for its start-up on long runs (``train.compile: auto``); image
    # objectives draw from a generator inside the graph, which compile splits
    compiles: bool = False
    # Contract checks a family cannot pass, with the reason (the common test reads these).
    exempt: dict[str, str] = field(default_factory=dict)

    @property
    def reads(self) -> str | None:
        """The request field its conditioning is given in (``READS``): ``prompt`` for a
        text-conditioned family, ``class_label`` for a class-conditional one, None for none."""
        return READS[self.conditioning]

    def make_config(self, preset: str = "tiny", **overrides: Any) -> ModelConfig:
        """The preset's config with ``overrides`` applied; unknown presets and keys are errors."""
        if preset not in self.presets:
            known = ", ".join(sorted(self.presets))
            raise RecipeError(f"unknown preset {preset!r} for family {self.name!r} (known: {known})")
        return self.config.model_validate({**self.presets[preset], **overrides})


def fast_bf16(device_type: str = "cpu") -> bool:
    """Whether bf16 matmuls are native here (AVX-512 BF16 / AMX on CPU, Ampere+ on GPU)."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
