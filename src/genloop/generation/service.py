"""The one path every face takes to generate: resolve → load (cached) → validate → sample → record.

``genloop generate``, ``genloop.load(...).generate(...)`` and the HTTP API all call ``TextModel``,
``ImageModel`` or ``CaptionModel``; none of them samples or records on its own.
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

import numpy as np
import torch

from genloop.config import settings
from genloop.errors import CorruptArtifact, InvalidInput, NotFound, validation_message
from genloop.generation import fewshot, grounding
from genloop.generation.batching import Batcher
from genloop.generation.caption import CaptionGenRequest, generate_captions, input_pixels, stored_input
from genloop.generation.chat import ChatTemplate, load_chat_template
from genloop.generation.image import (
    ImageGenRequest,
    ImageOutput,
    class_index,
    generate_images,
    image_tensor,
    png_bytes,
    prepare_images,
    read_pixels,
    run_draw,
    save_grid,
    save_pixels,
)
from genloop.generation.image import content_hash as pixels_hash
from genloop.generation.image_batching import ImageBatcher
from genloop.generation.kinds import CAPTIONS, generates
from genloop.generation.provenance import grid_signer, record_signer, signed_image_png
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
from genloop.safety.classifier import FAMILY as MODERATION_FAMILY
from genloop.safety.moderator import ContentBlocked, Moderator, OutputWithheld, workspace_moderator
from genloop.safety.stream import StreamGuard
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
        moderator = self.moderator()
        request, prompt_safety = self.moderate_prompts(request, moderator)
        if request.best_of is not None:
            reward = load_reward(request.reward_model, self.store) if request.reward_model else None
            candidates = generate_texts(self.family, self.network, self.tokenizer,
                                        request.candidates())
            picked = [(self.moderated(out, prompt_safety.get(out.prompt), moderator), ranking)
                      for out, ranking in self.rank(request, candidates, reward)]
            for out, ranking in picked:
                self._record(request, out.prompt, out.text, out.seed, out.timings, ranking=ranking,
                             safety=out.safety)
            return [out for out, _ in picked]
        outputs = [self.moderated(out, prompt_safety.get(out.prompt), moderator)
                   for out in generate_texts(self.family, self.network, self.tokenizer, request)]
        for out in outputs:
            self._record(request, out.prompt, out.text, out.seed, out.timings, safety=out.safety)
        return outputs

    def search(self, request: TextRequest) -> list[TextOutput]:
        """The outputs of a beam-search request (``num_beams`` > 1; the seed resolved, the
        examples drawn), not recorded: the HTTP face records each with its extras (``record``),
        as it does the batcher's. ``generate`` decodes and records them in one call."""
        return generate_texts(self.family, self.network, self.tokenizer, request)

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
        """Yield text pieces as they are decoded and pass moderation (``safety.stream``: held
        back until checked); the whole output is recorded at the end. A withheld output is
        recorded, then ``OutputWithheld`` says why."""
        request = params.pop("request", None) or self.request(prompt, **params)
        seed = resolve_seed(request.seed)
        request = self.with_grounding(self.with_examples(request.model_copy(update={"seed": seed})))
        moderator = self.moderator()
        request, prompt_safety = self.moderate_prompts(request, moderator)
        guard = StreamGuard(moderator)
        t0 = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        for piece in stream_text(self.family, self.network, self.tokenizer, request):
            first = first or time.perf_counter() - t0
            pieces.append(piece)
            if shown := guard.feed(piece):
                yield shown
        rest, _verdict = guard.finish("".join(pieces))
        if rest:
            yield rest
        timings = {"total_s": time.perf_counter() - t0, "first_token_s": first or 0.0}
        self._streamed(request, "".join(pieces), seed, timings,
                       prompt_safety.get(request.prompts[0]), moderator)

    def _streamed(self, request: TextRequest, text: str, seed: int, timings: dict,
                  prompt_safety: dict[str, Any] | None, moderator: Moderator) -> None:
        """Record a streamed output (moderated as a whole); raise if it was withheld."""
        out = self.moderated(TextOutput(request.prompts[0], text, 0, "stop", seed,
                                        content_hash(text)), prompt_safety, moderator)
        record = self._record(request, request.prompts[0], out.text, seed, timings,
                              safety=out.safety)
        if out.finish_reason == "content_filter":
            reason = (out.safety or {}).get("output", {}).get("reason", "blocked")
            raise OutputWithheld(f"output withheld by the moderation policy ({reason}); "
                                 f"generation {record.id}")

    def moderator(self) -> Moderator:
        """The workspace's moderation policy, ready to check (reread when its file changes)."""
        return workspace_moderator(self.store)

    def moderate_prompts(self, request: TextRequest, moderator: Moderator | None = None,
                         ) -> tuple[TextRequest, dict[str, dict[str, Any]]]:
        """Each prompt checked: a blocked one refuses the request (``ContentBlocked``, nothing
        generated or recorded); a redacted one is replaced by its redacted form, which the model
        reads and the record keeps. Returns the request and each prompt's verdict, by prompt."""
        moderator = moderator or self.moderator()
        verdicts: dict[str, dict[str, Any]] = {}
        prompts = []
        for i, prompt in enumerate(request.prompts):
            verdict = moderator.check(prompt, "prompt")
            if verdict.blocked:
                where = "prompt" if isinstance(request.prompt, str) else f"prompt.{i}"
                raise ContentBlocked(f"{where}: refused by the moderation policy "
                                     f"({verdict.reason()})", param=where)
            prompts.append(verdict.text)
            verdicts[verdict.text] = verdict.record()
        if prompts != request.prompts:
            request = request.model_copy(update={
                "prompt": prompts[0] if isinstance(request.prompt, str) else prompts})
        return request, verdicts

    def moderated(self, out: TextOutput, prompt_safety: dict[str, Any] | None = None,
                  moderator: Moderator | None = None) -> TextOutput:
        """``out`` as it may be shown: redacted, or withheld (empty text, ``finish_reason``
        "content_filter", as OpenAI's), with the verdicts its record keeps (``safety``). Its
        content hash is that of the text shown, which is what the record holds; logprobs go
        with a redacted or withheld text (their tokens would show what was removed)."""
        return moderate_output(out, moderator or self.moderator(), prompt_safety)

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
                ranking: dict[str, Any] | None = None,
                safety: dict[str, Any] | None = None) -> GenerationRecord:
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
            owner=owner, safety=safety, sign=record_signer(self.version),
        )

    def record(self, request: TextRequest, output: TextOutput,
               extra: dict[str, Any] | None = None, owner: str | None = None,
               ranking: dict[str, Any] | None = None) -> GenerationRecord:
        """Record one finished choice of a batched request (``extra``: the face's own settings,
        e.g. the chat messages, so a history can restore them; ``owner``: the API key owner's;
        ``ranking``: a best_of choice's, from ``rank``)."""
        return self._record(request, output.prompt, output.text, output.seed,
                            {**output.timings, "tokens": output.tokens}, extra, owner, ranking,
                            output.safety)

    def batcher(self, max_batch: int = 16, max_queue: int = 32) -> Batcher:
        """This model's continuous-batching loop (created on first use; later limits are ignored)."""
        with _LOCK:
            if self._batcher is None:
                self._batcher = Batcher(self.family, self.network, self.tokenizer,
                                        max_batch=max_batch, max_queue=max_queue)
            return self._batcher


def moderate_output(out: TextOutput, moderator: Moderator,
                    prompt_safety: dict[str, Any] | None = None) -> TextOutput:
    """``TextModel.moderated``'s rule, for every text output (a caption's too)."""
    verdict = moderator.check(out.text, "output")
    safety = {**({} if prompt_safety is None else {"prompt": prompt_safety}),
              "output": verdict.record(), "withheld": verdict.blocked}
    if verdict.text == out.text and not verdict.blocked:
        return replace(out, safety=safety)
    return replace(out, text=verdict.text, content_hash=content_hash(verdict.text),
                   finish_reason="content_filter" if verdict.blocked else out.finish_reason,
                   logprobs=None, safety=safety)


@dataclass
class CaptionModel(_Loaded):
    """A registered captioner version (image in, text out), loaded and ready to caption."""

    config: ImageModelConfig  # a captioner's config is an image family's, with its vocabulary
    tokenizer: Tokenizer = None  # type: ignore[assignment]

    def request(self, **params: Any) -> CaptionGenRequest:
        return _validated(CaptionGenRequest, params)

    def generate(self, image: bytes | np.ndarray | str | Path, **params: Any) -> list[TextOutput]:
        """Caption ``image`` (encoded bytes, (H, W, 1 or 3) uint8 pixels, or a file); each caption
        is moderated as a text output and recorded as a text generation whose request holds the
        input's ``image`` {content_hash} — its pixels stored once, by content, so ``replay``
        captions them again; ``owner``: the API key owner's (None: the workspace's)."""
        owner = params.pop("owner", None)
        request = params.pop("request", None) or self.request(**params)
        return [out for out, _record in self.caption(input_pixels(image), request, owner=owner)]

    def caption(self, pixels: np.ndarray, request: CaptionGenRequest,
                extra: dict[str, Any] | None = None, owner: str | None = None,
                ) -> list[tuple[TextOutput, GenerationRecord]]:
        """``generate`` on decoded pixels, each caption with its record; ``extra``: the face's
        own settings, recorded beside the request (the chat messages of the HTTP face)."""
        request = request.model_copy(update={"seed": resolve_seed(request.seed, request.num_samples)})
        _path, digest = save_pixels(settings().generations_dir, pixels)
        moderator = workspace_moderator(self.store)
        outputs = [moderate_output(out, moderator) for out in generate_captions(
            self.family, self.network, self.tokenizer, image_tensor(pixels, self.config), request)]
        one = request.model_copy(update={"seed": None, "num_samples": 1})
        shared = {**one.model_dump(mode="json", exclude={"seed"}), **(extra or {}),
                  "image": {"content_hash": digest}}
        return [(out, self.store.record_generation(
            model=self.version, kind="text", request={"seed": out.seed}, shared=shared,
            seed=out.seed, output=out.text, file=None, content_hash=out.content_hash,
            timings=out.timings, owner=owner, safety=out.safety, sign=record_signer(self.version)))
            for out in outputs]


@dataclass
class ImageResult:
    """The images of one request, each recorded as a generation with its own PNG."""

    output: ImageOutput
    request: ImageGenRequest
    records: list[GenerationRecord]
    model: str
    dataset_hash: str | None = None  # the model's (lineage), for the grid's signed provenance

    def save_grid(self, path: Path, columns: int | None = None) -> Path:
        """The images as one PNG grid with their provenance: text chunks and a signed C2PA
        manifest naming every generation (``generation/provenance.py``)."""
        provenance = {"model": self.model, "seed": self.output.seed,
                      "request": self.request.model_dump(mode="json"),
                      "seeds": [r.seed for r in self.records],
                      "content_hashes": [r.content_hash for r in self.records],
                      "generations": [r.id for r in self.records]}
        sign = grid_signer(self.model, self.output.seed, self.request.model_dump(mode="json"),
                           self.records, self.dataset_hash)
        return save_grid(self.output.images, Path(path), provenance, columns, sign=sign)


@dataclass
class ImageModel(_Loaded):
    """A registered image model version, loaded and ready to generate."""

    config: ImageModelConfig  # what every image family's config derives from
    class_names: list[str] = None  # type: ignore[assignment]
    tokenizer: Tokenizer | None = None  # text-conditioned families: what reads the prompt

    _batcher: ImageBatcher | None = field(default=None, repr=False)

    def request(self, **params: Any) -> ImageGenRequest:
        return _validated(ImageGenRequest, params)

    def batcher(self, max_batch: int = 16, max_queue: int = 16) -> ImageBatcher:
        """This model's image batching loop (made on first use; later limits are ignored)."""
        with _LOCK:
            self._batcher = self._batcher or ImageBatcher(self.family, self.network,
                                                          max_batch=max_batch, max_queue=max_queue)
            return self._batcher

    def generate(self, **params: Any) -> ImageResult:
        """Draw images; each is recorded with its own seed and a request of one that draws it
        again (an interpolation: the whole walk's request and the image's index), its pixels
        stored once by content (``image_png``: its PNG with its provenance); ``owner``: the API
        key owner's (None: the workspace's); ``batched``: through ``batcher()`` (same images)."""
        owner, batched = params.pop("owner", None), params.pop("batched", False)
        request = params.pop("request", None) or self.request(**params)
        request = request.model_copy(update={"seed": resolve_seed(request.seed, request.num_samples)})
        text = request.prompt if request.prompt is not None else _class_text(self.class_names,
                                                                            request.class_label)
        safety = moderate_image_prompt(text, self.store)
        draw = prepare_images(self.family, self.config, self.class_names, request, self.tokenizer)
        out = self.batcher().generate(draw) if batched else run_draw(self.family, self.network, draw)
        folder = settings().generations_dir
        records = []
        for i, (pixels, label) in enumerate(zip(out.images, out.labels, strict=True)):
            name = None if label is None else self.class_names[label]
            one = request if request.interpolate else request.model_copy(update={
                "num_samples": 1, "seed": out.seeds[i],
                "class_label": request.class_label if name is None else name})
            meta = {**one.model_dump(mode="json"), "index": i, "class": name,
                    **({"unknown_words": out.unknown_words} if out.unknown_words else {})}
            # the pixels are stored before the row that points at them exists
            path, digest = save_pixels(folder, pixels)
            records.append(self.store.record_generation(
                model=self.version, kind="image", request=meta, seed=out.seeds[i],
                output=name, file=str(path), content_hash=digest, timings=out.timings,
                owner=owner, safety=safety, sign=record_signer(self.version),
            ))
        return ImageResult(out, request, records, self.ref, self.version.dataset_hash)


def moderation_classifier_message(ref: str) -> str:
    return (f"{ref} is a moderation classifier: name it in moderation.yaml (classifier: "
            f"{{model: {ref}, labels: [...]}}) to check prompts and outputs, or try it with "
            "genloop moderation check; it does not generate")


def _class_text(class_names: list[str] | None, label: int | str | None) -> int | str | None:
    """The text of the class a request names — by index as much as by name — for moderation;
    an unknown one as given (generating refuses it after)."""
    if label is None or not class_names:
        return label
    try:
        index = class_index(label, class_names)
    except InvalidInput:
        return label
    return label if index is None else class_names[index]


def moderate_image_prompt(prompt: object, store: Store) -> dict[str, Any] | None:
    """An image request's text (its prompt, or the class it names) checked as a prompt: a
    blocked one refuses the request; its verdict, for the records (None: no text)."""
    if not isinstance(prompt, str) or not prompt:
        return None
    verdict = workspace_moderator(store).check(prompt, "prompt")
    if verdict.blocked:
        raise ContentBlocked(f"prompt: refused by the moderation policy ({verdict.reason()})")
    return {"prompt": verdict.record(), "withheld": False}


def image_provenance(record: GenerationRecord) -> dict[str, Any]:
    """The ``genloop:*`` chunks of generation ``record``'s PNG: its model, seed, request, content
    hash and id."""
    return {"model": record.model, "seed": record.seed, "request": record.request,
            "content_hash": record.content_hash, "generation": record.id}


def image_png(record: GenerationRecord, store: Store | None = None) -> bytes:
    """Generation ``record``'s PNG: its stored pixels with its own provenance chunks and C2PA
    manifest, signed now (many generations may share the pixels; none shares another's
    provenance). ``store``: where its model's lineage is read (None: the workspace's)."""
    if record.file is None:
        raise InvalidInput(f"generation {record.id!r} is {record.kind}, not an image")
    path = Path(record.file)
    if not path.is_file():
        raise NotFound(f"the file of generation {record.id!r} is gone from the workspace")
    pixels = read_pixels(path)
    if pixels_hash(pixels) != record.content_hash:
        raise CorruptArtifact(f"{path}: its pixels do not match generation {record.id!r}'s content hash")
    return signed_image_png(record, png_bytes(pixels, image_provenance(record)), store)


Loaded = TextModel | ImageModel | CaptionModel
_CACHE: OrderedDict[tuple[str, str], Loaded] = OrderedDict()
_LOCK = threading.RLock()
_LOADING: dict[tuple[str, str], threading.Lock] = {}
CACHE_SIZE = 4


def load(ref: str, store: Store | None = None, cache_size: int | None = None) -> Loaded:
    """Resolve ``name`` or ``name@N`` and load it, reusing the few most recently used models.

    Concurrent first loads of one version wait for a single load (a server must not end up with
    two copies, and two decoding loops, of the same model). ``cache_size`` changes how many
    versions stay loaded (least recently used go first).
    """
    global CACHE_SIZE
    store = store or Store()
    version = store.resolve(ref)
    if version.family == MODERATION_FAMILY:
        raise InvalidInput(moderation_classifier_message(version.ref))
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
        raise InvalidInput(f"reward_model: {model.ref} is not a reward model")
    check_reward(model)
    return model


def loaded() -> list[str]:
    """Refs of the versions loaded now, least recently used first."""
    with _LOCK:
        return [ref for _url, ref in _CACHE]


def _load_version(version: ModelVersion, store: Store) -> Loaded:
    directory = ModelDir(Path(version.path))
    if version.variant is not None:  # a servable variant: the ONNX graph, run by onnxruntime
        from genloop.hub.ort import load_variant

        family, config, network = load_variant(directory, version.variant)
    else:
        family, config, network = load_network(version, store)  # an adapter: over its base
    if generates(family).request is ImageGenRequest:
        image_tokenizer = directory.tokenizer() if family.reads == "prompt" else None
        if family.reads == "prompt" and image_tokenizer is None:
            raise CorruptArtifact(f"{directory.path}: a text-to-image model without its tokenizer")
        return ImageModel(version, family, cast(ImageModelConfig, config), network, store,
                          directory.labels() or [], image_tokenizer)
    tokenizer = directory.tokenizer()
    if tokenizer is None:
        raise CorruptArtifact(f"{directory.path}: a text model without its tokenizer")
    if generates(family) is CAPTIONS:
        return CaptionModel(version, family, cast(ImageModelConfig, config), network, store, tokenizer)
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
    if isinstance(model, CaptionModel):  # the stored input captioned again with the choice's seed
        fields = {k: v for k, v in record.request.items() if k in CaptionGenRequest.model_fields}
        request = _validated(CaptionGenRequest, {**fields, "seed": record.seed, "num_samples": 1})
        pixels = stored_input(str(record.request.get("image", {}).get("content_hash", "")))
        out = generate_captions(model.family, model.network, model.tokenizer,
                                image_tensor(pixels, model.config), request)[0]
        out = moderate_output(out, workspace_moderator(store))  # as it was recorded
        return Replay(record, out.content_hash, out.text)
    if isinstance(model, TextModel):
        fields = {k: v for k, v in record.request.items()
                  if k in TextRequest.model_fields and k != "logprobs"}  # not part of the text
        request = _validated(TextRequest, {**fields, "seed": record.seed, "num_samples": 1})
        out = generate_texts(model.family, model.network, model.tokenizer, request)[0]
        out = model.moderated(out)  # what was recorded is what moderation let through
        return Replay(record, out.content_hash, out.text)
    fields = {k: v for k, v in record.request.items() if k in ImageGenRequest.model_fields}
    walk = bool(fields.get("interpolate"))
    request = _validated(ImageGenRequest, {**fields, "seed": record.seed,
                                           **({} if walk else {"num_samples": 1})})
    images = generate_images(model.family, model.config, model.network, model.class_names, request,
                             model.tokenizer)
    pixels = images.images[int(record.request.get("index", 0)) if walk else 0]
    return Replay(record, pixels_hash(pixels), record.output, pixels)
