"""Few-shot prompts: k examples drawn (seeded) from a ``pairs`` dataset or a JSONL file of
prompt/completion records, each formatted by a template, put before the user's prompt.

    TextRequest(prompt="c>", few_shot=FewShot(source="mapping.jsonl", k=4, separator="\\n"))
    # the model reads:  "a>3\\nf>0\\nb>7\\nh>3\\nc>"

The examples are the first k of one seeded permutation of the records (``sample_indices``: a
request with 4 shots uses the first 4 of the 8 that 8 shots would), seeded by ``FewShot.seed`` or
else the request's seed. ``draw`` fills ``FewShot.examples`` in before decoding, so the request
that is recorded with each choice holds the very examples used — and its replay reads them from
the record, not from a dataset that may have changed or a file that may be gone.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genloop.data.folder import read_folder
from genloop.data.records import read_records, record_split
from genloop.errors import GenloopError, InvalidInput, UnicodeText
from genloop.tokenizers import Tokenizer

if TYPE_CHECKING:
    from genloop.store import Store

MAX_SHOTS = 64
FIELDS = ("prompt", "completion")


class Example(BaseModel):
    """One example of a few-shot prompt."""

    model_config = ConfigDict(extra="forbid")

    prompt: UnicodeText
    completion: UnicodeText


class FewShot(BaseModel):
    """k examples put before every prompt of a request; the same names on every face."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=1000,
                        description="a registered pairs dataset (its name, or its hash or a "
                                    "prefix of it) or a .jsonl file of prompt/completion records")
    k: int = Field(4, ge=0, le=MAX_SHOTS, description="how many examples")
    seed: int | None = Field(None, ge=0, le=2**63 - 1,
                             description="draws the examples; None = the request's seed")
    template: str = Field("{prompt}{completion}", min_length=1, max_length=1000,
                          description="one example: {prompt} and {completion} ({{ }} for braces)")
    separator: UnicodeText = Field("\n\n", max_length=100,
                                   description="after each example (the user's prompt follows the "
                                               "last)")
    examples: list[Example] | None = Field(None, max_length=MAX_SHOTS,
                                           description="the examples drawn: filled in when the "
                                                       "request runs, and recorded")
    source_hash: str | None = Field(None, max_length=200,
                                    description="the dataset's content hash, or the file's sha256, "
                                                "when the examples were drawn")

    @field_validator("template")
    @classmethod
    def _template_fields(cls, v: str) -> str:
        try:
            names = {name for _lit, name, _spec, _conv in string.Formatter().parse(v)
                     if name is not None}
        except ValueError as e:  # an unmatched brace
            raise ValueError(f"not a template: {e} (write {{{{ and }}}} for literal braces)") from None
        unknown = names - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown field {{{sorted(unknown)[0]}}}: a template has only "
                             "{prompt} and {completion}")
        if "completion" not in names:
            raise ValueError("needs {completion}: an example shows its answer")
        return v

    @model_validator(mode="after")
    def _k_examples(self) -> FewShot:
        if self.examples is not None and len(self.examples) != self.k:
            raise ValueError(f"examples: {len(self.examples)} given for k = {self.k}")
        return self

    def prefix(self) -> str:
        """The text put before the user's prompt: each example formatted, then the separator."""
        if self.examples is None:
            raise InvalidInput("few_shot: its examples are not drawn yet (TextModel draws them "
                               "before decoding: generation.fewshot.draw)")
        return "".join(self.template.format(prompt=e.prompt, completion=e.completion)
                       + self.separator for e in self.examples)


def sample_indices(n: int, k: int, seed: int) -> list[int]:
    """The first ``k`` of a seeded permutation of ``range(n)`` (a partial Fisher–Yates shuffle:
    O(k), and the first j of a draw of k are the draw of j)."""
    rng = random.Random(seed)
    moved: dict[int, int] = {}
    out = []
    for i in range(k):
        j = i + rng.randrange(n - i)
        out.append(moved.get(j, j))
        moved[j] = moved.get(i, i)
    return out


def is_file(source: str) -> bool:
    return source.lower().endswith(".jsonl")


def read_source(source: str, store: Store | None = None, *,
                files: bool = True) -> tuple[list[Example], str]:
    """The records of ``source`` and its identity: a .jsonl file (its sha256), or a registered
    pairs dataset by name (the newest of that name) or hash prefix (its training split, decoded
    by its tokenizer; its content hash). ``files=False`` refuses files (the HTTP face: a client
    must not make the server read its disk)."""
    if is_file(source):
        if not files:
            raise InvalidInput(f"few_shot.source: {source!r} is a file; this face takes a "
                               "registered pairs dataset (see `genloop data list`)")
        path = Path(source).expanduser()
        rows = read_records(path, FIELDS)
        digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        return [Example(prompt=p, completion=c) for (p, c), _ in rows], digest
    if store is None:
        from genloop.store import Store

        store = Store()
    matches = [d for d in store.list_datasets()
               if d.name == source or (len(source) >= 8 and d.hash.startswith(source))]
    if not matches:
        raise InvalidInput(f"few_shot.source: no dataset {source!r} (see `genloop data list`), "
                           "and not a .jsonl file")
    record = matches[0]  # newest first
    try:
        folder = read_folder(record.path, "pairs")
    except GenloopError as e:
        raise InvalidInput(f"few_shot.source: {e}") from None
    assert folder.tokenizer is not None
    split = record_split(folder, "train")
    tok, prompts, completions = folder.tokenizer, split.fields["prompt"], split.fields["completion"]
    examples = []
    for i in range(len(prompts)):
        ids = [int(t) for t in completions[i] if int(t) != tok.eos_id]  # stored ending in eos
        examples.append(Example(prompt=tok.decode([int(t) for t in prompts[i]]),
                                completion=tok.decode(ids)))
    return examples, record.hash


def draw(spec: FewShot, seed: int, store: Store | None = None, *, files: bool = True) -> FewShot:
    """``spec`` with its ``k`` examples drawn from its source, seeded by its own seed or else
    ``seed`` (recorded either way); a spec whose examples are given is returned as it is."""
    if spec.examples is not None:
        return spec
    records, digest = read_source(spec.source, store, files=files)
    if spec.k > len(records):
        raise InvalidInput(f"few_shot: {spec.k} shots asked, but {spec.source} holds "
                           f"{len(records)} records")
    used = spec.seed if spec.seed is not None else seed
    picked = [records[i] for i in sample_indices(len(records), spec.k, used)]
    return spec.model_copy(update={"examples": picked, "seed": used, "source_hash": digest})


def check_from_client(spec: FewShot) -> None:
    """A client (the HTTP face) names the source and k; the server draws and records the rest."""
    for name in ("examples", "source_hash"):
        if getattr(spec, name) is not None:
            raise InvalidInput(f"few_shot.{name}: drawn and recorded by the server; give source "
                               "and k")


def check_fits(spec: FewShot, prompts: Sequence[str], tokenizer: Tokenizer,
               block_size: int | None) -> None:
    """Every prompt, after the examples, leaves room in the context for a generated token; else a
    one-line error saying how many shots would fit."""
    if block_size is None or not spec.examples:
        return
    prefix = spec.prefix()
    for prompt in prompts:
        n = len(tokenizer.encode(prefix + prompt))
        if n < block_size:
            continue
        fit = next((j for j in range(spec.k - 1, -1, -1)
                    if len(tokenizer.encode(_first(spec, j).prefix() + prompt)) < block_size), None)
        if fit is None:  # the prompt alone does not fit: encode_prompt says so
            return
        raise InvalidInput(f"few_shot: the {spec.k} examples and the prompt are {n} tokens; this "
                           f"model's context is {block_size} tokens (at most {fit} shots fit)")


def _first(spec: FewShot, j: int) -> FewShot:
    assert spec.examples is not None
    return spec.model_copy(update={"k": j, "examples": spec.examples[:j]})
