"""The one path every face takes to generate: resolve → load (cached) → validate → sample → record.

``genloop generate``, ``genloop.load(...).generate(...)`` and the HTTP API all call ``TextModel``;
none of them samples or records on its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genloop.errors import InvalidInput, validation_message
from genloop.generation.text import (
    TextOutput,
    TextRequest,
    content_hash,
    generate_texts,
    resolve_seed,
    stream_text,
)
from genloop.models.family import Family, ModelConfig
from genloop.models.io import load_model_dir
from genloop.store import ModelVersion, Store
from genloop.tokenizers import Tokenizer, load_tokenizer


@dataclass
class TextModel:
    """A registered text model version, loaded and ready to generate."""

    version: ModelVersion
    family: Family
    config: ModelConfig
    network: torch.nn.Module
    tokenizer: Tokenizer
    store: Store

    @property
    def ref(self) -> str:
        return self.version.ref

    @property
    def card(self) -> str:
        path = Path(self.version.path) / "card.md"
        return path.read_text(encoding="utf-8") if path.exists() else ""

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.version.metrics or {})

    def request(self, prompt: str | list[str] = "", **params: Any) -> TextRequest:
        try:
            return TextRequest(prompt=prompt, **params)
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            raise InvalidInput(validation_message(e)) from None

    def generate(self, prompt: str | list[str] = "", **params: Any) -> list[TextOutput]:
        """Generate and record every output; returns them in prompt order."""
        request = params.pop("request", None) or self.request(prompt, **params)
        request = request.model_copy(update={"seed": resolve_seed(request.seed)})
        outputs = generate_texts(self.family, self.network, self.tokenizer, request)
        for out in outputs:
            self._record(request, out.prompt, out.text, out.seed, out.timings)
        return outputs

    def stream(self, prompt: str = "", **params: Any) -> Iterator[str]:
        """Yield text pieces as they are decoded; the whole output is recorded at the end."""
        request = params.pop("request", None) or self.request(prompt, **params)
        request = request.model_copy(update={"seed": resolve_seed(request.seed)})
        t0 = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        for piece in stream_text(self.family, self.network, self.tokenizer, request):
            first = first or time.perf_counter() - t0
            pieces.append(piece)
            yield piece
        timings = {"total_s": time.perf_counter() - t0, "first_token_s": first or 0.0}
        self._record(request, request.prompts[0], "".join(pieces), request.seed, timings)

    def _record(self, request: TextRequest, prompt: str, text: str, seed: int, timings: dict):
        one = request.model_copy(update={"prompt": prompt})
        self.store.record_generation(
            model=self.version, kind="text", request=json.loads(one.model_dump_json()),
            seed=seed, output=text, file=None, content_hash=content_hash(text), timings=timings,
        )


_CACHE: OrderedDict[tuple[str, str], TextModel] = OrderedDict()
_LOCK = threading.Lock()
CACHE_SIZE = 4


def load(ref: str, store: Store | None = None) -> TextModel:
    """Resolve ``name`` or ``name@N`` and load it, reusing the few most recently used models."""
    store = store or Store()
    version = store.resolve(ref)
    key = (store.url, f"{version.ref}")
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    directory = Path(version.path)
    family, config, network = load_model_dir(directory)
    tokenizer = load_tokenizer(directory / "tokenizer.json")
    model = TextModel(version, family, config, network, tokenizer, store)
    with _LOCK:
        _CACHE[key] = model
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return model
