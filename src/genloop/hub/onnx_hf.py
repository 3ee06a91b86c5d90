"""The ONNX decoder of an ``hf`` version (imported checkpoints: GPT-2, Llama, … layouts).

The graph has gpt's interface (``hub/onnx.py``): ``input_ids`` (B, T), ``past_lengths`` (B,),
``past_keys`` / ``past_values`` (L, B, heads, P, head size) in; ``logits`` and the T new
positions' keys and values out; so one runtime (``hub/ort.py``) serves both families. Here the
forward is transformers' own: the stacked past becomes a ``DynamicCache``, each row's unused past
positions are masked out by the ``attention_mask`` and each new token gets its own
``position_ids`` (``past_lengths[b] + t``) — what ``HFSlots`` does for a step — and the keys and
values the model appended are cut from the cache. ``heads`` are the key/value heads (grouped-query
attention keeps fewer than the query heads) and keys are cached after their rotary encoding, so a
masked hole in a row's past changes nothing. The dimensions are read off a one-token prefill, not
from the config's names, so any architecture whose cache is a ``DynamicCache`` of full layers
exports the same way.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from genloop.models.hf import HFNetwork

CacheDims = tuple[int, int, int]  # layers, key/value heads, head size


@torch.no_grad()
def cache_dims(model: HFNetwork) -> CacheDims:
    """(layers, key/value heads, head size) of ``model``'s KV cache, from a one-token prefill."""
    from transformers import DynamicCache

    cache = DynamicCache()
    device = next(model.parameters()).device
    model.lm(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device), use_cache=True,
             **{model._cache_kw: cache})
    keys = cache.layers[0].keys
    return len(cache.layers), int(keys.shape[1]), int(keys.shape[3])


class HFDecoder(nn.Module):
    """One decoding step of an ``HFNetwork`` as the exported graph computes it (module doc)."""

    def __init__(self, model: HFNetwork):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, past_lengths: torch.Tensor, past_keys: torch.Tensor,
                past_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from transformers import DynamicCache

        B, T = input_ids.shape
        P = past_keys.shape[3]
        cache: Any = DynamicCache(ddp_cache_data=[(past_keys[i], past_values[i])
                                                  for i in range(past_keys.shape[0])])
        counted = torch.arange(P, device=input_ids.device)[None, :] < past_lengths[:, None]
        mask = torch.cat([counted, torch.ones(B, T, dtype=torch.bool, device=input_ids.device)], 1)
        positions = past_lengths[:, None] + torch.arange(T, device=input_ids.device)[None, :]
        logits = self.model.lm(input_ids=input_ids, attention_mask=mask.long(),
                               position_ids=positions, use_cache=True,
                               **{self.model._cache_kw: cache}).logits
        keys = torch.stack([layer.keys[:, :, P:] for layer in cache.layers])
        values = torch.stack([layer.values[:, :, P:] for layer in cache.layers])
        return logits, keys, values
