"""Text generation: a typed request in, texts out — batched, seeded, streamable, stoppable.

The family's ``sample`` is the decoding loop (prefill, KV cache or recurrent state); this module
does what every text family shares: validate the request against the model (context, vocabulary),
tokenize, group prompts of equal length into one batch, cut at stop strings, detokenize, and
stream text pieces as they become valid UTF-8.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from genloop.errors import InvalidInput, UnicodeText
from genloop.generation.fewshot import FewShot
from genloop.generation.grounding import Grounding, prompt_key
from genloop.models.family import Family, TokenRequest
from genloop.tokenizers import Tokenizer, end_ids
from genloop.tokenizers.incremental import IncrementalDecoder

MAX_PROMPTS = 256
MAX_TOP_LOGPROBS = 20

Bias = Annotated[float, Field(ge=-100.0, le=100.0)]


class TextRequest(BaseModel):
    """One generation request; the same names across CLI, Python and HTTP faces."""

    model_config = ConfigDict(extra="forbid")

    prompt: UnicodeText | list[UnicodeText] = ""
    max_new_tokens: int = Field(200, ge=1, le=100_000)
    temperature: float = Field(0.8, ge=0.0, le=5.0, description="0 = greedy")
    top_k: int | None = Field(None, ge=1, le=1_000_000)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, ge=1.0, le=10.0)
    stop: list[UnicodeText] = Field(default_factory=list, max_length=16)
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="None = a fresh random seed")
    num_samples: int = Field(1, ge=1, le=64, description="samples per prompt")
    use_cache: bool = True
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0,
                                     description="minus count × this, per token generated so far")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0,
                                    description="minus this, once per token generated so far")
    logit_bias: dict[int, Bias] | None = Field(None, description="token id → added to its logit")
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                 description="return each token's log-probability and this many "
                                             "most likely alternatives (the batcher's faces)")
    best_of: int | None = Field(None, ge=1, le=64,
                                description="candidates per prompt, of which the num_samples best "
                                            "are returned (ranked by reward_model, else by mean "
                                            "token log-prob)")
    reward_model: str | None = Field(None, min_length=1, max_length=80,
                                     description="the reward model (name or name@N) that ranks "
                                                 "the best_of candidates")
    few_shot: FewShot | None = Field(None, description="k examples drawn from a pairs dataset or "
                                                       "a .jsonl file, put before each prompt")
    num_beams: int = Field(1, ge=1, le=16,
                           description="beam search over this many hypotheses (deterministic: "
                                       "temperature, top-k/p and the penalties are not used); 1 = "
                                       "sampling")
    grounding: Grounding | None = Field(None, description="triples retrieved from a knowledge "
                                                          "graph for each prompt, put before it")

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, v: list[str]) -> list[str]:
        if any(s == "" for s in v):
            raise ValueError("stop strings must be non-empty")
        return v

    @model_validator(mode="after")
    def _choice_seeds_fit(self) -> TextRequest:
        if self.best_of is not None and self.best_of < self.num_samples:
            raise ValueError(f"best_of ({self.best_of}) must be at least num_samples "
                             f"({self.num_samples}): it is how many candidates they are chosen from")
        if self.reward_model is not None and self.best_of is None:
            raise ValueError("reward_model ranks best_of candidates: give best_of too")
        if self.num_beams > 1 and (self.num_samples > 1 or self.best_of is not None):
            raise ValueError("num_beams: beam search returns one text per prompt (its best "
                             "hypothesis): use num_samples=1 and no best_of")
        check_choice_seeds(self.seed, self.choices)
        return self

    @property
    def choices(self) -> int:
        """How many choices are drawn: per prompt num_samples, or best_of candidates."""
        return len(self.prompts) * (self.best_of or self.num_samples)

    def candidates(self) -> TextRequest:
        """The request that draws the best_of candidates: num_samples = best_of, so candidate k
        of prompt j is choice j·best_of + k, seeded ``choice_seed(seed, j·best_of + k)``, and
        replays as that choice alone."""
        assert self.best_of is not None
        return self.model_copy(update={"num_samples": self.best_of, "best_of": None,
                                       "reward_model": None})

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def model_prompt(self, prompt: str) -> str:
        """``prompt`` as the model reads it: after the few-shot examples and its retrieved
        facts, if any."""
        examples = "" if self.few_shot is None else self.few_shot.prefix()
        facts = "" if self.grounding is None else self.grounding.prefix(prompt)
        return examples + facts + prompt

    @model_serializer(mode="wrap")
    def _without_unset_few_shot(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """No ``few_shot`` or ``grounding`` key when there is none: records of requests without
        one keep their shape, and their shared settings their content hash. A grounding is
        dumped with the retrievals of this request's prompts only (a choice's record: its own)."""
        dumped = handler(self)
        for key in ("few_shot", "grounding"):
            if dumped.get(key, ...) is None:
                del dumped[key]
        if dumped.get("num_beams", ...) == 1:  # the same for sampling requests: no key
            del dumped["num_beams"]
        if self.grounding is not None and self.grounding.retrieved is not None:
            dumped["grounding"]["retrieved"] = [
                r for r in dumped["grounding"]["retrieved"]
                if r["prompt"] in {prompt_key(p) for p in self.prompts}]
        return dumped


@dataclass
class TokenLogprob:
    """One generated token with the model's log-probability of it and of the most likely
    alternatives at that step (most likely first): ``models.sampling.token_logprobs``."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class TextOutput:
    prompt: str
    text: str
    tokens: int
    finish_reason: str  # "stop" (stop string or end-of-text) | "length"
    seed: int
    content_hash: str
    timings: dict[str, float] = field(default_factory=dict)
    logprobs: list[TokenLogprob] | None = None  # one per token of ``tokens`` when requested
    score: float | None = None  # best_of: what it was ranked by (reward, or mean token log-prob)
    safety: dict[str, Any] | None = None  # the moderation verdicts recorded with it (service)


def check_request(tokenizer: Tokenizer, request: TextRequest) -> None:
    """What the request asks of this model's vocabulary: ``logit_bias`` ids must be in it."""
    bad = [i for i in (request.logit_bias or {}) if not 0 <= i < tokenizer.vocab_size]
    if bad:
        raise InvalidInput(f"logit_bias: token id {bad[0]} is outside this model's vocabulary "
                           f"(0..{tokenizer.vocab_size - 1})")


SEED_MAX = 2**63 - 1


def choice_seed(seed: int, index: int) -> int:
    """The seed of choice ``index`` of a request seeded ``seed``: ``seed + index``.

    Every face decodes choice i (prompt by prompt, then sample by sample; image i of an image
    request) with its own generator seeded so, and records this seed: a choice replays alone, as
    a request of one, from its record. Requests whose last choice would pass 2^63 − 1 are refused
    (``check_choice_seeds``), never wrapped round to 0."""
    assert 0 <= seed + index <= SEED_MAX, "check_choice_seeds admits no such request"
    return seed + index


def check_choice_seeds(seed: int | None, choices: int) -> None:
    """ValueError when a request seeded ``seed`` has a choice whose seed would pass 2^63 − 1."""
    if seed is not None and seed + choices - 1 > SEED_MAX:
        raise ValueError(f"choice i is seeded seed + i, and with {choices} choices seed {seed} "
                         f"would pass 2^63 - 1: give a seed of at most {SEED_MAX - choices + 1}")


def resolve_seed(seed: int | None, choices: int = 1) -> int:
    """The request's seed, or a fresh one (recorded, so the output can be reproduced) whose
    ``choices`` choice seeds all fit."""
    if seed is not None:
        return seed
    return int.from_bytes(os.urandom(8), "little") % (SEED_MAX - choices + 2)


def encode_prompt(tokenizer: Tokenizer, prompt: str, block_size: int | None) -> list[int]:
    ids = tokenizer.encode(prompt) if prompt else []
    if not ids:
        ids = [tokenizer.eos_id]  # an empty prompt starts a fresh document
    if block_size is not None and len(ids) >= block_size:
        raise InvalidInput(
            f"prompt is {len(ids)} tokens; this model's context is {block_size} tokens "
            f"(shorten the prompt to at most {block_size - 1})"
        )
    return ids


def content_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class TextRow:
    """Decoding state of one sequence: its tokens, its text so far, whether it has finished.

    Text that might be the start of a stop string is held back until the next tokens decide,
    so a stream never shows text that the final, stop-cut text does not contain.
    """

    def __init__(self, prompt: str, stops: list[str]):
        self.prompt, self.stops = prompt, stops
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters of ``text`` already handed out
        self.done: str | None = None
        self._decoder: IncrementalDecoder | None = None  # decodes ``ids`` as they grow
        self._ends: frozenset[int] = frozenset()

    def flush(self) -> str:
        """The text not handed out yet (call once the row is done)."""
        new = self.text[self.sent :]
        self.sent = max(self.sent, len(self.text))
        return new

    def add(self, token: int, tokenizer: Tokenizer) -> str:
        """Append a token; return the newly completed text (may be '' mid-UTF-8). Any of the
        tokenizer's end tokens (``end_ids``: end-of-text, a chat model's end-of-turn) ends it."""
        if self._decoder is None or self._decoder.tokenizer is not tokenizer:
            self._decoder = IncrementalDecoder(tokenizer, self.ids)
            self._ends = end_ids(tokenizer) | {tokenizer.eos_id}
        if token in self._ends:
            self.done = "stop"
            return self.flush()
        full = self._decoder.add(token)  # tokenizer.decode(self.ids), at the new token's cost
        if full.endswith("\ufffd"):  # an unfinished multi-byte character (byte-level BPE)
            return ""
        if not self.stops:
            new = full[self.sent :]
            self.text = full
            self.sent += len(new)
            return new
        # the earliest stop string that the new text completes, whatever the order of the list
        cuts = [full.find(s, max(0, len(self.text) - len(s) + 1)) for s in self.stops]
        cuts = [c for c in cuts if c != -1]
        if cuts:
            self.text = full[: min(cuts)]
            self.done = "stop"
            return self.flush()
        self.text = full
        hold = max(
            (k for s in self.stops for k in range(1, len(s)) if full.endswith(s[:k])), default=0
        )
        new = full[self.sent : max(self.sent, len(full) - hold)]
        self.sent += len(new)
        return new


def stream_tokens(
    family: Family,
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    request: TextRequest,
    seed: int,
) -> Iterator[tuple[int, str, TextRow]]:
    """Decode every (prompt × num_samples) row; yield (row index, new text, row) as text appears.

    Rows whose prompts have the same token length share one batch, but each row draws with its
    own generator seeded ``choice_seed(seed, row)``: its text is that of the row alone, the same
    as the HTTP face's continuous batching gives for that choice.
    """
    if not family.streaming:  # its sample does not yield tokens
        raise InvalidInput(f"model family {family.name!r} does not generate text")
    prompts = request.prompts
    if not prompts or len(prompts) > MAX_PROMPTS:
        raise InvalidInput(f"prompt: give between 1 and {MAX_PROMPTS} prompts")
    if request.logprobs is not None:
        raise InvalidInput("logprobs: returned by the HTTP face (continuous batching) only")
    check_request(tokenizer, request)
    block = getattr(model.config, "block_size", None) if family.kv_cache else None
    encoded = [encode_prompt(tokenizer, request.model_prompt(p), block) for p in prompts]
    rows = [TextRow(p, request.stop) for p in prompts for _ in range(request.num_samples)]
    row_ids = [encoded[i] for i in range(len(prompts)) for _ in range(request.num_samples)]
    groups: dict[int, list[int]] = {}
    for r, ids in enumerate(row_ids):
        groups.setdefault(len(ids), []).append(r)
    device = next(model.parameters()).device
    if request.num_beams > 1:
        yield from _beam_rows(family, model, tokenizer, request, row_ids, rows, device)
        return
    generators = [torch.Generator().manual_seed(choice_seed(seed, r)) for r in range(len(rows))]
    for members in groups.values():
        batch = torch.tensor([row_ids[r] for r in members], dtype=torch.long, device=device)
        token_request = TokenRequest(
            prompt_ids=batch, max_new_tokens=request.max_new_tokens,
            temperature=request.temperature, top_k=request.top_k, top_p=request.top_p,
            repetition_penalty=request.repetition_penalty, use_cache=request.use_cache,
            frequency_penalty=request.frequency_penalty, presence_penalty=request.presence_penalty,
            logit_bias=request.logit_bias,
        )
        for step in family.sample(model, token_request, [generators[r] for r in members]):
            for j, r in enumerate(members):
                row = rows[r]
                if row.done is None:
                    piece = row.add(int(step[j]), tokenizer)
                    if piece or row.done:
                        yield r, piece, row
            if all(rows[r].done for r in members):
                break
        for r in members:
            if rows[r].done is None:
                rows[r].done = "length"
                yield r, rows[r].flush(), rows[r]


def _beam_rows(family: Family, model: torch.nn.Module, tokenizer: Tokenizer, request: TextRequest,
               row_ids: list[list[int]], rows: list[TextRow], device: torch.device
               ) -> Iterator[tuple[int, str, TextRow]]:
    """Each row's best beam (``Family.beam_search``), cut at stop strings and end tokens as a
    sampled row is; its text appears once the search has finished."""
    if family.beam_search is None:
        raise InvalidInput(f"num_beams: model family {family.name!r} has no beam search "
                           "(use num_beams=1)")
    for r, (ids, row) in enumerate(zip(row_ids, rows, strict=True)):
        tokens = family.beam_search(model, torch.tensor(ids, dtype=torch.long, device=device),
                                    request.num_beams, request.max_new_tokens, end_ids(tokenizer))
        for token in tokens:
            piece = row.add(token, tokenizer)
            if piece or row.done:
                yield r, piece, row
            if row.done:
                break
        if row.done is None:
            row.done = "length"
            yield r, row.flush(), row


def generate_texts(
    family: Family, model: torch.nn.Module, tokenizer: Tokenizer, request: TextRequest
) -> list[TextOutput]:
    """All outputs of ``request`` at once, in prompt order (each prompt's samples together)."""
    if request.best_of is not None:
        raise InvalidInput("best_of: candidates are ranked by the model service (TextModel.generate)")
    seed = resolve_seed(request.seed, len(request.prompts) * request.num_samples)
    t0 = time.perf_counter()
    rows: dict[int, TextRow] = {}
    for r, _piece, row in stream_tokens(family, model, tokenizer, request, seed):
        rows[r] = row
    elapsed = time.perf_counter() - t0
    return [
        TextOutput(
            prompt=row.prompt, text=row.text, tokens=len(row.ids),
            finish_reason=row.done or "length", seed=choice_seed(seed, r),
            content_hash=content_hash(row.text), timings={"total_s": elapsed},
        )
        for r, row in sorted(rows.items())
    ]


def stream_text(
    family: Family, model: torch.nn.Module, tokenizer: Tokenizer, request: TextRequest
) -> Iterator[str]:
    """Text pieces of a single-prompt, single-sample request as they are decoded."""
    if len(request.prompts) != 1 or request.num_samples != 1:
        raise InvalidInput("streaming takes one prompt and num_samples=1")
    if request.best_of is not None:
        raise InvalidInput("best_of: cannot stream (the best candidate is known only once every "
                           "candidate has finished)")
    seed = resolve_seed(request.seed)
    for _r, piece, _row in stream_tokens(family, model, tokenizer, request, seed):
        if piece:
            yield piece
