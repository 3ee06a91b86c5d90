"""hf — any causal language model transformers can build from its ``config.json``.

The network is ``AutoModelForCausalLM.from_config`` inside a thin wrapper (``HFNetwork``: the
transformers model as ``.lm``, genloop's ``HFConfig`` as ``.config``), so GPT-2, Llama, Qwen2,
Mistral, Phi, … are trained, scored and served by the same loop as ``gpt``. Tokens are drawn by
genloop's ``models.sampling.sample_next`` (the one seeded path every family shares) over
transformers' own KV cache (``DynamicCache``); when the context is full, its last half is
prefilled again into a fresh cache, as ``gpt`` does.

``HFSlots`` is the slot decoder (continuous batching): each slot's keys and values live in one
tensor per layer, (S, heads, capacity, head size), each slot at its own length. A step gathers
the stepped rows up to the longest one into a ``DynamicCache``, masks each row's unused
positions out (``attention_mask``), gives each new token its own position (``position_ids``),
and writes the key/value the model appended back at that row's position. Keys are stored after
their position encoding (RoPE) is applied, so a masked hole in the middle changes nothing.

transformers is an optional extra (``genloop[hf]``): imported inside the functions here.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from genloop.errors import InvalidInput
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

# where a config.json keeps the context length, by the names architectures use
CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length")


def context_key(hf_config: dict[str, Any]) -> str:
    """The key of ``hf_config`` that holds its context length (the first of CONTEXT_KEYS it has)."""
    for key in CONTEXT_KEYS:
        if isinstance(hf_config.get(key), int):
            return key
    raise InvalidInput(f"config.json names no context length (one of {', '.join(CONTEXT_KEYS)})")


class HFConfig(TextModelConfig):
    """A transformers ``config.json`` (``hf_config``) with genloop's two text sizes beside it.

    ``vocab_size`` and ``block_size`` are read from ``hf_config`` (``vocab_size``; ``n_positions``
    or ``max_position_embeddings``) unless given, and when given they are written into it, so a
    preset's sizes can be overridden like any family's; the two always agree."""

    hf_config: dict[str, Any] = Field(description="the transformers config.json content")
    block_size: int = Field(256, ge=8, le=1_048_576, description="context length in tokens")
    tokenizer_size: int | None = Field(
        None, ge=1, description="ids the tokenizer has, when fewer than the embedding's rows "
        "(checkpoints pad it): decoding never draws the others")

    @model_validator(mode="before")
    @classmethod
    def _sizes_from_hf_config(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("hf_config"), dict):
            return data
        data = dict(data)
        hf = dict(data["hf_config"])
        if not hf.get("model_type"):
            raise ValueError("hf_config names no model_type")
        ctx = context_key(hf)
        if data.get("vocab_size"):
            hf["vocab_size"] = int(data["vocab_size"])
        else:
            data["vocab_size"] = int(hf.get("vocab_size") or 0)
        if data.get("block_size"):
            hf[ctx] = int(data["block_size"])
        else:
            data["block_size"] = int(hf[ctx])
        data["hf_config"] = hf
        return data


_COMMON = {"initializer_range": 0.02, "tie_word_embeddings": True}
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"hf_config": {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 64,
                           "n_layer": 2, "n_head": 2, "n_positions": 64, "vocab_size": 0,
                           "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, **_COMMON}},
    "tiny-llama": {"hf_config": {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                 "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                 "num_attention_heads": 4, "num_key_value_heads": 2,
                                 "max_position_embeddings": 64, "vocab_size": 0, **_COMMON}},
}


def transformers_config(hf_config: dict[str, Any]) -> Any:
    """The transformers config object of ``hf_config``; an unknown architecture is one line."""
    try:
        from transformers import AutoConfig
    except ImportError:
        raise InvalidInput("the hf family needs transformers: pip install 'genloop[hf]'") from None
    d = dict(hf_config)
    model_type = d.pop("model_type", None)
    try:
        return AutoConfig.for_model(model_type, **d)
    except (ValueError, KeyError) as e:
        raise InvalidInput(f"config.json: transformers does not know the architecture "
                           f"{model_type!r} ({str(e).splitlines()[0][:120]})") from None


def _cache_keyword(lm: Any) -> str:
    """The KV cache's keyword: ``cache`` in newer transformers, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


class HFNetwork(nn.Module):
    """``.lm``: the transformers causal LM; ``.config``: genloop's ``HFConfig``."""

    def __init__(self, config: HFConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("HFConfig.vocab_size must be set from the tokenizer")
        from transformers import AutoModelForCausalLM

        self.config = config
        try:
            self.lm: Any = AutoModelForCausalLM.from_config(transformers_config(config.hf_config))
        except ValueError as e:  # a known config that is not a causal LM (an encoder-decoder, …)
            raise InvalidInput(f"config.json: {config.hf_config.get('model_type')!r} is not a causal "
                               f"language model transformers can build "
                               f"({str(e).splitlines()[0][:120]})") from None
        self._cache_kw = _cache_keyword(self.lm)

    @classmethod
    def wrap(cls, config: HFConfig, lm: Any) -> HFNetwork:
        """A network around an already built (pretrained) transformers model ``lm``."""
        network = cls.__new__(cls)
        nn.Module.__init__(network)
        network.config, network.lm = config, lm
        network._cache_kw = _cache_keyword(lm)
        return network

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of token ids (B, T), no cache."""
        # the mask says what the ids already say (no padding): transformers warns without one
        return self.lm(input_ids=idx, attention_mask=torch.ones_like(idx), use_cache=False).logits

    def step(self, ids: torch.Tensor, cache: Any, **kw: Any) -> torch.Tensor:
        """Logits (B, V) of the last position of ``ids`` (B, T) appended to ``cache``, the ids
        the tokenizer does not have masked out (``known``)."""
        if "attention_mask" not in kw:  # every past and new position is a real token
            past = cache.get_seq_length() if cache is not None else 0
            kw["attention_mask"] = torch.ones(ids.size(0), past + ids.size(1), dtype=torch.long,
                                              device=ids.device)
        return self.known(self.lm(input_ids=ids, use_cache=True, logits_to_keep=1,
                                  **{self._cache_kw: cache}, **kw).logits[:, -1, :])

    def known(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (…, V) with −inf at the ids past ``config.tokenizer_size``: a padded
        embedding's extra rows are no tokens, and a drawn one would have no text."""
        size = self.config.tokenizer_size
        if size is None or size >= logits.size(-1):
            return logits
        return logits.index_fill(-1, torch.arange(size, logits.size(-1), device=logits.device),
                                 float("-inf"))


def build(config: HFConfig) -> HFNetwork:
    return HFNetwork(config)


def loss(model: HFNetwork, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Next-token cross-entropy; ``batch`` is (inputs, targets), both (B, T)."""
    x, y = batch
    logits = model(x)
    return {"loss": F.cross_entropy(logits.flatten(0, 1).float(), y.reshape(-1))}


def log_probs(model: HFNetwork, batch: SequenceBatch) -> torch.Tensor:
    """Per sequence (B,), the sum of log p(target_t | inputs_<=t) over the masked positions."""
    logits = model(batch.inputs).float()
    nll = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
    return -nll.view(batch.targets.shape).masked_fill(~batch.mask, 0.0).sum(dim=1)


def _new_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


@torch.no_grad()
def sample(model: HFNetwork, request: TokenRequest, generator: Generators) -> Iterator[torch.Tensor]:
    """Yield the next token ids (B,) step by step, over transformers' KV cache (or recomputing
    the cropped context every step with ``use_cache=False``), refilled from the last half of
    the context when it is full, as ``gpt`` does."""
    model.eval()
    block = model.config.block_size
    ids = request.prompt_ids
    cache = _new_cache() if request.use_cache else None
    filled = min(ids.size(1), block)
    logits = (model.step(ids[:, -block:], cache) if cache is not None
              else model.known(model(ids[:, -block:])[:, -1]))
    for _ in range(request.max_new_tokens):
        nxt = next_token(logits, generator, request, ids)
        yield nxt
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if cache is None:
            logits = model.known(model(ids[:, -block:])[:, -1])
        elif filled < block:
            logits = model.step(nxt[:, None], cache)
            filled += 1
        else:
            cache, filled = _new_cache(), block // 2
            logits = model.step(ids[:, -filled:], cache)


class HFSlots:
    """The ``SlotDecoder`` of hf: ``slots`` sequences over per-layer key/value tensors, each at
    its own length, stepped together through transformers' ``DynamicCache`` (module docstring).
    Context overflow is handled as ``sample`` does, so greedy decoding through a slot gives
    ``sample``'s tokens for that prompt alone."""

    def __init__(self, model: HFNetwork, slots: int):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        model.eval()
        self.model, self.slots = model, slots
        self.device = next(model.parameters()).device
        self.k: list[torch.Tensor] = []  # per layer (S, heads, capacity, head size)
        self.v: list[torch.Tensor] = []
        self.lengths = [0] * slots
        self.history: list[list[int] | None] = [None] * slots

    def _room(self, need: int) -> None:
        """Grow every layer's storage to hold ``need`` positions (doubling, at most block_size)."""
        have = self.k[0].size(2)
        if need <= have:
            return
        cap = min(max(need, 2 * have), self.model.config.block_size)
        for store in (self.k, self.v):
            for i, t in enumerate(store):
                grown = t.new_zeros((*t.shape[:2], cap, t.shape[3]))
                grown[:, :, :have] = t
                store[i] = grown

    @torch.no_grad()
    def _fill(self, slot: int, ids: list[int]) -> torch.Tensor:
        cache = _new_cache()
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        logits = self.model.step(x, cache)[0]
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        if not self.k:  # shapes known from the first prefill
            for k, v in layers:
                cap = min(max(64, len(ids)), self.model.config.block_size)
                self.k.append(k.new_zeros((self.slots, k.size(1), cap, k.size(3))))
                self.v.append(v.new_zeros((self.slots, v.size(1), cap, v.size(3))))
        self._room(len(ids))
        for i, (k, v) in enumerate(layers):
            self.k[i][slot, :, : len(ids)] = k[0]
            self.v[i][slot, :, : len(ids)] = v[0]
        self.lengths[slot] = len(ids)
        return logits.float()

    def prefill(self, slot: int, ids: torch.Tensor) -> torch.Tensor:
        check_slot(slot, self.slots)
        if ids.ndim != 1 or ids.numel() < 1:
            raise ValueError(f"prefill takes one prompt of shape (T,) with T >= 1, got {tuple(ids.shape)}")
        history = ids[-self.model.config.block_size:].tolist()
        self.history[slot] = history
        return self._fill(slot, history)

    def free(self, slot: int) -> None:
        self.history[check_slot(slot, self.slots)] = None
        self.lengths[slot] = 0

    @torch.no_grad()
    def step(self, slots: list[int], tokens: torch.Tensor) -> torch.Tensor:
        check_step(slots, tokens, self.slots, lambda s: self.history[s] is not None)
        cfg = self.model.config
        return step_slots(slots, tokens, self.history, self.lengths, cfg.block_size, cfg.vocab_size,
                          self.device, self._fill, self._advance)

    def _advance(self, slots: list[int], tokens: torch.Tensor) -> torch.Tensor:
        from transformers import DynamicCache

        pos = [self.lengths[s] for s in slots]
        width = max(pos)
        self._room(width + 1)
        slot_t = torch.tensor(slots, device=self.device)
        cache = DynamicCache(ddp_cache_data=[
            (k.index_select(0, slot_t)[:, :, :width], v.index_select(0, slot_t)[:, :, :width])
            for k, v in zip(self.k, self.v, strict=True)])
        pos_t = torch.tensor(pos, device=self.device)
        # row b sees its own positions 0..pos[b]-1 and the new token (index ``width``)
        mask = torch.arange(width + 1, device=self.device)[None, :] < pos_t[:, None]
        mask[:, width] = True
        logits = self.model.step(tokens.to(self.device)[:, None], cache,
                                 attention_mask=mask.long(), position_ids=pos_t[:, None])
        for i, layer in enumerate(cache.layers):
            self.k[i][slot_t, :, pos_t] = layer.keys[:, :, width]
            self.v[i][slot_t, :, pos_t] = layer.values[:, :, width]
        for s in slots:
            self.lengths[s] += 1
        return logits.float()


def slot_decoder(model: torch.nn.Module, slots: int) -> SlotDecoder:
    assert isinstance(model, HFNetwork)
    return HFSlots(model, slots)


FAMILY = Family(
    name="hf",
    kinds=("text", "pairs", "preferences"),
    conditioning="none",
    config=HFConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    log_probs=log_probs,
    sample=sample,
    kv_cache=True,
    streaming=True,
    slot_decoder=slot_decoder,
    description="any transformers causal LM built from its config.json (imported checkpoints)",
)
