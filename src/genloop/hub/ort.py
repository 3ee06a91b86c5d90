"""Serving a version's ONNX variant (``name@N:onnx``, ``name@N:int8``) with onnxruntime.

``load_variant`` gives what ``ModelDir.load`` gives for the PyTorch network — a family, its
config and a network — so the generation layer serves a variant through the same paths: the
family is gpt's with ``sample``, ``slot_decoder`` and ``log_probs`` running the graph
(``hub/onnx.py``), and the network (``OrtNetwork``) maps token ids to logits as ``GPT`` does.

``OrtSlots`` keeps each slot's keys and values in one preallocated array (L, S, nh, T, hs), as
gpt's ``SlotKVCache`` does, and steps any subset of slots in one run of the graph: their pasts
are gathered up to the longest one (the rest masked by ``past_lengths``) and the new keys and
values written back at each row's own position. Context overflow is handled as gpt's ``sample``
does (the last half of the tokens prefilled again), and ``sample`` itself decodes through the
slots, so the CLI, the Python API and the HTTP batcher draw the same tokens.

The same runtime serves ``hf`` variants (``hub/onnx_hf.py``: the graph's interface is gpt's):
the network carries its cache's dimensions (``dims``, from ``variant.json``), and the decoding
paths mask the ids past an imported tokenizer's size as ``HFNetwork.known`` does. The cache
grows (doubling, up to the context) instead of being allocated for the whole context at once:
imported models have long contexts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genloop.errors import CorruptArtifact, NotFound
from genloop.hub.onnx import (
    DECODER_FILE,
    cache_shape,
    gpt_dims,
    prefill_logits,
    read_meta,
    run_decoder,
    session,
)
from genloop.hub.onnx_hf import CacheDims
from genloop.models.family import (
    Family,
    Generators,
    ModelConfig,
    SequenceBatch,
    SlotDecoder,
    TokenRequest,
    check_slot,
    check_step,
    step_slots,
)
from genloop.models.gpt import GPTConfig
from genloop.models.modeldir import ModelDir
from genloop.models.sampling import next_token


class OrtNetwork(nn.Module):
    """An onnxruntime session over a variant's decoder, called like ``GPT``: ids (B, T) →
    logits (B, T, V). Holds no weights; one empty parameter says which device it runs on
    (the CPU), as the generation layer asks every network."""

    def __init__(self, sess: Any, config: Any, variant: str, dims: CacheDims | None = None):
        super().__init__()
        self.session, self.config, self.variant = sess, config, variant
        self.dims: CacheDims = dims if dims is not None else gpt_dims(config)
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(prefill_logits(self.session, self.dims, idx.cpu().numpy()))

    def known(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` with −inf past the tokenizer's size (``HFConfig.tokenizer_size``), as
        ``HFNetwork.known``; gpt configs have none, so their logits pass unchanged."""
        size = getattr(self.config, "tokenizer_size", None)
        if size is None or size >= logits.size(-1):
            return logits
        logits[..., size:] = float("-inf")
        return logits


class OrtSlots:
    """The ``SlotDecoder`` of an ONNX variant: ``slots`` independent sequences (see the module doc)."""

    def __init__(self, network: OrtNetwork, slots: int):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.network, self.slots = network, slots
        self.config, self.dims = network.config, network.dims
        self.k = np.zeros(cache_shape(self.dims, slots, min(64, self.config.block_size)), np.float32)
        self.v = np.zeros_like(self.k)
        self.lengths = [0] * slots
        self.history: list[list[int] | None] = [None] * slots

    def _room(self, need: int) -> None:
        """Grow the cache to hold ``need`` positions (doubling, at most the context)."""
        have = self.k.shape[3]
        if need <= have:
            return
        cap = min(max(need, 2 * have), self.config.block_size)
        for name in ("k", "v"):
            old = getattr(self, name)
            grown = np.zeros((*old.shape[:3], cap, old.shape[4]), np.float32)
            grown[:, :, :, :have] = old
            setattr(self, name, grown)

    def _fill(self, slot: int, ids: list[int]) -> torch.Tensor:
        empty = np.zeros(cache_shape(self.dims, 1, 0), np.float32)
        logits, keys, values = run_decoder(self.network.session, np.array([ids]),
                                           np.zeros(1, np.int64), empty, empty)
        n = len(ids)
        self._room(n)
        self.k[:, slot, :, :n], self.v[:, slot, :, :n] = keys[:, 0], values[:, 0]
        self.lengths[slot] = n
        return self.network.known(torch.from_numpy(logits[0, -1].copy()))

    def prefill(self, slot: int, ids: torch.Tensor) -> torch.Tensor:
        check_slot(slot, self.slots)
        if ids.ndim != 1 or ids.numel() < 1:
            raise ValueError(f"prefill takes one prompt of shape (T,) with T >= 1, got {tuple(ids.shape)}")
        history = ids[-self.config.block_size :].tolist()
        self.history[slot] = history
        return self._fill(slot, history)

    def free(self, slot: int) -> None:
        self.history[check_slot(slot, self.slots)] = None
        self.lengths[slot] = 0

    def step(self, slots: list[int], tokens: torch.Tensor) -> torch.Tensor:
        check_step(slots, tokens, self.slots, lambda s: self.history[s] is not None)
        return step_slots(slots, tokens, self.history, self.lengths, self.config.block_size,
                          self.config.vocab_size, "cpu", self._fill, self._advance)

    def _advance(self, slots: list[int], tokens: torch.Tensor) -> torch.Tensor:
        lengths = np.array([self.lengths[s] for s in slots], np.int64)
        P = int(lengths.max())
        self._room(P + 1)
        if slots == list(range(slots[0], slots[0] + len(slots))):  # a run of slots: one slice
            k = self.k[:, slots[0] : slots[0] + len(slots), :, :P]
            v = self.v[:, slots[0] : slots[0] + len(slots), :, :P]
        else:
            k, v = self.k[:, slots, :, :P], self.v[:, slots, :, :P]
        logits, keys, values = run_decoder(self.network.session, tokens.numpy()[:, None], lengths,
                                           k, v)
        for i, s in enumerate(slots):
            n = self.lengths[s]
            self.k[:, s, :, n], self.v[:, s, :, n] = keys[:, i, :, 0], values[:, i, :, 0]
            self.lengths[s] = n + 1
        return self.network.known(torch.from_numpy(logits[:, -1].copy()))


def slot_decoder(network: OrtNetwork, slots: int) -> SlotDecoder:
    return OrtSlots(network, slots)


def sample(network: OrtNetwork, request: TokenRequest, generator: Generators) -> Iterator[torch.Tensor]:
    """gpt's ``sample`` on the graph: the rows prefilled, then stepped together (each row's
    context overflow refilled as gpt's cache is); ``use_cache`` is ignored (the graph always
    caches)."""
    ids = request.prompt_ids.cpu()
    slots = OrtSlots(network, ids.size(0))
    logits = torch.stack([slots.prefill(i, row) for i, row in enumerate(ids)])
    everyone = list(range(ids.size(0)))
    for _ in range(request.max_new_tokens):
        nxt = next_token(logits, generator, request, ids)
        yield nxt
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        logits = slots.step(everyone, nxt)


def loss(network: OrtNetwork, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    x, y = batch
    logits = network(x)
    return {"loss": F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))}


def log_probs(network: OrtNetwork, batch: SequenceBatch) -> torch.Tensor:
    logits = network(batch.inputs)
    nll = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
    return -nll.view(batch.targets.shape).masked_fill(~batch.mask, 0.0).sum(dim=1)


def _not_trainable(config: Any) -> nn.Module:
    raise NotFound("an ONNX variant is served, not built or trained: train the version itself")


def family_of(base: Family) -> Family:
    """``base`` (gpt or hf) with its decoding run by onnxruntime."""
    return replace(base, build=_not_trainable, loss=loss, sample=sample, log_probs=log_probs,
                   slot_decoder=slot_decoder, compiles=False, train_step=None,
                   description=base.description + " (onnxruntime)")


def load_variant(directory: ModelDir, variant: str) -> tuple[Family, ModelConfig, nn.Module]:
    """Family, config and network of servable variant ``variant`` of the version in ``directory``."""
    path = directory.variant_dir(variant)
    if not (path / DECODER_FILE).is_file():
        raise CorruptArtifact(f"{path}: variant {variant!r} has no {DECODER_FILE}")
    meta = read_meta(path)
    family, config = directory.family_config()
    cache = meta.get("cache")  # variants written before hf ones: gpt's, from its config
    dims = (cast(CacheDims, tuple(int(d) for d in cache))
            if isinstance(cache, list) and len(cache) == 3 else gpt_dims(cast(GPTConfig, config)))
    return family_of(family), config, OrtNetwork(session(Path(path) / DECODER_FILE), config,
                                                 variant, dims)
