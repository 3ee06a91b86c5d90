"""The one path every face takes to generate: resolve → load (cached) → validate → sample → record.

``genloop generate``, ``genloop.load(...).generate(...)`` and the HTTP API all call ``TextModel``
or ``ImageModel``; none of them samples or records on its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch

from genloop.config import settings
from genloop.errors import CorruptArtifact, InvalidInput, NotFound, validation_message
from genloop.generation import fewshot, grounding
from genloop.generation.batching import Batcher
from genloop.generation.chat import ChatTemplate, load_chat_template
from genloop.generation.image import (
    ImageGenRequest,
    ImageOutput,
    generate_images,
    png_bytes,
    read_pixels,
    save_grid,
    save_pixels,
)
from genloop.generation.image import content_hash as pixels_hash
from genloop.generation.kinds import generates
from genloop.generation.reward import check_reward, mean_logprobs, ranked
from genloop.generation.reward import score as reward_scores
from genloop.generation.text import (
    TextOutput,
    TextRequest,
    content_hash,
    generate_texts,
    resolve_seed,
    stream_text,
)
from genloop.hub.adapters import load_network
from genloop.models.family import Family, ImageModelConfig, ModelConfig
from genloop.models.modeldir import ModelDir
from genloop.store import GenerationRecord, ModelVersion, Store
from genloop.tokenizers import Tokenizer


def _validated(model: type, params: dict[str, Any]) -> Any:
    try:
        return model(**params)
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise InvalidInput(validation_message(e)) from None


@dataclass
class _Loaded:
    """What every loaded model version has: its record, family, config and network."""

    version: ModelVersion
    family: Family
    config: ModelConfig
    network: torch.nn.Module
    store: Store

    @property
    def ref(self) -> str:
        return self.version.ref

    @property
    def directory(self) -> ModelDir:
        return ModelDir(Path(self.version.path))

    @property
    def card(self) -> str:
        return self.directory.card()

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.version.metrics or {})


@dataclass
class TextModel(_Loaded):
    """A registered text model version, loaded and ready to generate."""

    tokenizer: Tokenizer = None  # type: ignore[assignment]
    chat_template: ChatTemplate = field(default_factory=ChatTemplate)
    _batcher: Batcher | None = field(default=None, repr=False)

    def request(self, prompt: str | list[str] = "", **params: Any) -> TextRequest:
        return _validated(TextRequest, {"prompt": prompt, **params})

    def generate(self, prompt: str | list[str] = "", **params: Any) -> list[TextOutput]:
        """Generate and record every output; returns them in prompt order. With ``best_of``,
        each prompt's ``num_samples`` best of ``best_of`` candidates, best first (``rank``)."""
        request = params.pop("request", None) or self.request(prompt, **params)
        request = request.model_copy(update={"seed": resolve_seed(request.seed, request.choices)})
        request = self.with_grounding(self.with_examples(request))
        if request.best_of is not None:
            reward = load_reward(request.reward_model, self.store) if request.reward_model else None
            candidates = generate_texts(self.family, self.network, self.tokenizer,
                                        request.candidates())
            picked = self.rank(request, candidates, reward)
            for out, ranking in picked:
                self._record(request, out.prompt, out.text, out.seed, out.timings, ranking=ranking)
            return [out for out, _ in picked]
        outputs = generate_texts(self.family, self.network, self.tokenizer, request)
        for out in outputs:
            self._record(request, out.prompt, out.text, out.seed, out.timings)
        return outputs

    def rank(self, request: TextRequest, candidates: list[TextOutput],
             reward: TextModel | None = None) -> list[tuple[TextOutput, dict[str, Any]]]:
        """The ``best_of`` candidates of ``request`` (those of ``request.candidates()``, in order)
        ranked by ``reward``'s score, or by their mean token log-prob under this model: per
        prompt its ``num_samples`` best, highest first, each with its score and a ``ranking``
        (best_of, rank, score, what scored it) for its record."""
        assert request.best_of is not None
        prompts, texts = [c.prompt for c in candidates], [c.text for c in candidates]
        if reward is None:  # given what the model read: the few-shot examples too
            read = [request.model_prompt(p) for p in prompts]
            scores, by = mean_logprobs(self.family, self.network, self.tokenizer, read, texts), \
                "mean_logprob"
        else:
            scores, by = reward_scores(reward, prompts, texts), reward.ref
        picked = []
        for group in ranked(scores, len(request.prompts), request.best_of, request.num_samples):
            for rank, i in enumerate(group):
                ranking = {"best_of": request.best_of, "rank": rank, "score": scores[i], "by": by}
                picked.append((replace(candidates[i], score=scores[i]), ranking))
        return picked

    def stream(self, prompt: str = "", **params: Any) -> Iterator[str]:
        """Yield text pieces as they are decoded; the whole output is recorded at the end."""
        request = params.pop("request", None) or self.request(prompt, **params)
        seed = resolve_seed(request.seed)
        request = self.with_grounding(self.with_examples(request.model_copy(update={"seed": seed})))
        t0 = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        for piece in stream_text(self.family, self.network, self.tokenizer, request):
            first = first or time.perf_counter() - t0
            pieces.append(piece)
            yield piece
        timings = {"total_s": time.perf_counter() - t0, "first_token_s": first or 0.0}
        self._record(request, request.prompts[0], "".join(pieces), seed, timings)

    def with_examples(self, request: TextRequest, *, from_client: bool = False) -> TextRequest:
        """``request`` with its few-shot examples drawn (seeded by the request's seed unless the
        few-shot spec has its own) and checked against this model's context; the request that
        is then decoded and recorded holds them (``generation/fewshot.py``). ``from_client``:
        the HTTP face's, which names a registered dataset and k, never a file or the examples."""
        if request.few_shot is None:
            return request
        if from_client:
            fewshot.check_from_client(request.few_shot)
        assert request.seed is not None, "the seed is resolved first"
        spec = fewshot.draw(request.few_shot, request.seed, self.store, files=not from_client)
        block = getattr(self.network.config, "block_size", None) if self.family.kv_cache else None
        fewshot.check_fits(spec, request.prompts, self.tokenizer, block)
        return request.model_copy(update={"few_shot": spec})

    def with_grounding(self, request: TextRequest, *, from_client: bool = False) -> TextRequest:
        """``request`` with the triples of each prompt retrieved from its grounding's graph
        (``Store.kg_load``) and checked against this model's context; the request that is then
        decoded and recorded holds them (``generation/grounding.py``). ``from_client``: the
        HTTP face's, which names the graph, never the triples."""
        if request.grounding is None:
            return request
        if from_client:
            grounding.check_from_client(request.grounding)
        spec = grounding.retrieve(request.grounding, request.prompts, self.store)
        block = getattr(self.network.config, "block_size", None) if self.family.kv_cache else None
        before = "" if request.few_shot is None else request.few_shot.prefix()
        grounding.check_fits(spec, request.prompts, self.tokenizer, block, before)
        return request.model_copy(update={"grounding": spec})

    def _record(self, request: TextRequest, prompt: str, text: str, seed: int, timings: dict,
                extra: dict[str, Any] | None = None, owner: str | None = None,
                ranking: dict[str, Any] | None = None) -> GenerationRecord:
        # a choice is recorded as the request of one that draws it again (a best_of candidate
        # too: its seed is its own); how it was ranked is its own part of the record
        one = request.model_copy(update={"prompt": prompt, "seed": seed, "num_samples": 1})
        shared = {**json.loads(one.model_dump_json(exclude={"best_of", "reward_model"})),
                  **(extra or {})}
        own = {k: shared.pop(k) for k in ("prompt", "seed")}  # the rest is stored once
        if ranking is not None:
            own["ranking"] = ranking
        return self.store.record_generation(
            model=self.version, kind="text", request=own, shared=shared,
            seed=seed, output=text, file=None, content_hash=content_hash(text), timings=timings,
            owner=owner,
        )

    def record(self, request: TextRequest, output: TextOutput,
               extra: dict[str, Any] | None = None, owner: str | None = None,
               ranking: dict[str, Any] | None = None) -> GenerationRecord:
        """Record one finished choice of a batched request (``extra``: the face's own settings,
        e.g. the chat messages, so a history can restore them; ``owner``: the API key owner's;
        ``ranking``: a best_of choice's, from ``rank``)."""
        return self._record(request, output.prompt, output.text, output.seed,
                            {**output.timings, "tokens": output.tokens}, extra, owner, ranking)

    def batcher(self, max_batch: int = 16, max_queue: int = 32) -> Batcher:
        """This model's continuous-batching loop (created on first use; later limits are ignored)."""
        with _LOCK:
            if self._batcher is None:
                self._batcher = Batcher(self.family, self.network, self.tokenizer,
                                        max_batch=max_batch, max_queue=max_queue)
            return self._batcher


@dataclass
class ImageResult:
    """The images of one request, each recorded as a generation with its own PNG."""

    output: ImageOutput
    request: ImageGenRequest
    records: list[GenerationRecord]
    model: str

    def save_grid(self, path: Path, columns: int | None = None) -> Path:
        provenance = {"model": self.model, "seed": self.output.seed,
                      "request": self.request.model_dump(mode="json"),
                      "seeds": [r.seed for r in self.records],
                      "content_hashes": [r.content_hash for r in self.records],
                      "generations": [r.id for r in self.records]}
        return save_grid(self.output.images, Path(path), provenance, columns)


@dataclass
class ImageModel(_Loaded):
    """A registered image model version, loaded and ready to generate."""

    config: ImageModelConfig  # what every image family's config derives from
    class_names: list[str] = None  # type: ignore[assignment]

    def request(self, **params: Any) -> ImageGenRequest:
        return _validated(ImageGenRequest, params)

    def generate(self, **params: Any) -> ImageResult:
        """Draw images; each is recorded with its own seed and a request of one that draws it
        again (an interpolation: the whole walk's request and the image's index), its pixels
        stored once by content (``image_png`` gives its PNG with its own provenance); ``owner``:
        the API key owner's (None: the workspace's)."""
        owner = params.pop("owner", None)
        request = params.pop("request", None) or self.request(**params)
        request = request.model_copy(update={"seed": resolve_seed(request.seed, request.num_samples)})
        out = generate_images(self.family, self.config, self.network, self.class_names, request)
        folder = settings().generations_dir
        records = []
        for i, (pixels, label) in enumerate(zip(out.images, out.labels, strict=True)):
            name = None if label is None else self.class_names[label]
            one = request if request.interpolate else request.model_copy(update={
                "num_samples": 1, "seed": out.seeds[i],
                "class_label": request.class_label if name is None else name})
            meta = {**one.model_dump(mode="json"), "index": i, "class": name}
            # the pixels are stored before the row that points at them exists
            path, digest = save_pixels(folder, pixels)
            records.append(self.store.record_generation(
                model=self.version, kind="image", request=meta, seed=out.seeds[i],
                output=name, file=str(path), content_hash=digest, timings=out.timings,
                owner=owner,
            ))
        return ImageResult(out, request, records, self.ref)


def image_provenance(record: GenerationRecord) -> dict[str, Any]:
    """The ``genloop:*`` chunks of generation ``record``'s PNG: its model, seed, request, content
    hash and id."""
    return {"model": record.model, "seed": record.seed, "request": record.request,
            "content_hash": record.content_hash, "generation": record.id}


def image_png(record: GenerationRecord) -> bytes:
    """Generation ``record``'s PNG: its stored pixels with its own provenance chunks (many
    generations may share the pixels; none shares another's provenance)."""
    if record.file is None:
        raise InvalidInput(f"generation {record.id!r} is {record.kind}, not an image")
    path = Path(record.file)
    if not path.is_file():
        raise NotFound(f"the file of generation {record.id!r} is gone from the workspace")
    pixels = read_pixels(path)
    if pixels_hash(pixels) != record.content_hash:
        raise CorruptArtifact(f"{path}: its pixels do not match generation {record.id!r}'s content hash")
    return png_bytes(pixels, image_provenance(record))


_CACHE: OrderedDict[tuple[str, str], TextModel | ImageModel] = OrderedDict()
_LOCK = threading.RLock()
_LOADING: dict[tuple[str, str], threading.Lock] = {}
CACHE_SIZE = 4


def load(ref: str, store: Store | None = None, cache_size: int | None = None) -> TextModel | ImageModel:
    """Resolve ``name`` or ``name@N`` and load it, reusing the few most recently used models.

    Concurrent first loads of one version wait for a single load (a server must not end up with
    two copies, and two decoding loops, of the same model). ``cache_size`` changes how many
    versions stay loaded (least recently used go first).
    """
    global CACHE_SIZE
    store = store or Store()
    version = store.resolve(ref)
    key = (store.url, f"{version.ref}")
    with _LOCK:
        CACHE_SIZE = cache_size or CACHE_SIZE
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        loading = _LOADING.setdefault(key, threading.Lock())
    with loading:
        with _LOCK:
            if key in _CACHE:
                return _CACHE[key]
        model = _load_version(version, store)
        with _LOCK:
            _CACHE[key] = model
            _LOADING.pop(key, None)
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
    return model


def load_reward(ref: str, store: Store | None = None, cache_size: int | None = None) -> TextModel:
    """Reward model ``ref``, loaded (cached as any version); a one-line InvalidInput when there
    is no such model or it is not a reward model."""
    try:
        model = load(ref, store, cache_size)
    except NotFound as e:
        raise InvalidInput(f"reward_model: {e}") from None
    if not isinstance(model, TextModel):
        raise InvalidInput(f"reward_model: {model.ref} generates images, it is not a reward model")
    check_reward(model)
    return model


def loaded() -> list[str]:
    """Refs of the versions loaded now, least recently used first."""
    with _LOCK:
        return [ref for _url, ref in _CACHE]


def _load_version(version: ModelVersion, store: Store) -> TextModel | ImageModel:
    directory = ModelDir(Path(version.path))
    if version.variant is not None:  # a servable variant: the ONNX graph, run by onnxruntime
        from genloop.hub.ort import load_variant

        family, config, network = load_variant(directory, version.variant)
    else:
        family, config, network = load_network(version, store)  # an adapter: over its base
    if generates(family).request is ImageGenRequest:
        return ImageModel(version, family, cast(ImageModelConfig, config), network, store,
                          directory.labels() or [])
    tokenizer = directory.tokenizer()
    if tokenizer is None:
        raise CorruptArtifact(f"{directory.path}: a text model without its tokenizer")
    return TextModel(version, family, config, network, store, tokenizer,
                     load_chat_template(directory))


@dataclass
class Replay:
    """A recorded generation run again from its record alone."""

    record: GenerationRecord
    content_hash: str
    output: str | None  # the text, or the image's class name
    pixels: Any = None  # an image's (H, W, C) uint8 pixels

    @property
    def matches(self) -> bool:
        return self.content_hash == self.record.content_hash


def replay(generation_id: str, store: Store | None = None) -> Replay:
    """Run generation ``generation_id`` again from what its record holds (model version, request,
    seed) and hash the result; nothing new is recorded. A text choice or an image replays as a
    request of one with its own seed (``choice_seed``); an image of an interpolation is the walk
    drawn again with the request's seed, taken at its recorded index."""
    store = store or Store()
    record = store.get_generation(generation_id)
    model = load(record.model, store)
    if isinstance(model, TextModel):
        fields = {k: v for k, v in record.request.items()
                  if k in TextRequest.model_fields and k != "logprobs"}  # not part of the text
        request = _validated(TextRequest, {**fields, "seed": record.seed, "num_samples": 1})
        out = generate_texts(model.family, model.network, model.tokenizer, request)[0]
        return Replay(record, out.content_hash, out.text)
    fields = {k: v for k, v in record.request.items() if k in ImageGenRequest.model_fields}
    walk = bool(fields.get("interpolate"))
    request = _validated(ImageGenRequest, {**fields, "seed": record.seed,
                                           **({} if walk else {"num_samples": 1})})
    images = generate_images(model.family, model.config, model.network, model.class_names, request)
    pixels = images.images[int(record.request.get("index", 0)) if walk else 0]
    return Replay(record, pixels_hash(pixels), record.output, pixels)
