"""Text tokenizers: character level, byte-level BPE and whole words, all saved as JSON (never
pickle); and ``hf``, an imported model's own Hugging Face ``tokenizer.json`` with its special tokens.

Why two: a character tokenizer is the classic baseline (nanoGPT's shakespeare_char) and treats
every Unicode character, Chinese included, as one token, so a tiny model learns it in minutes;
byte-level BPE (Hugging Face ``tokenizers``) gives shorter sequences and round-trips any string.

A word tokenizer (``word``) suits a closed language like the shapes captions: one token per
lower-cased word or punctuation mark, so a caption is a handful of tokens and an unknown word is
exactly one ``<unk>`` (``unknown_words`` names the words of a text that a tokenizer cannot read).

All three put the special tokens at fixed ids, ``<unk>`` = 0 and ``<eos>`` = 1, so data files and
models can rely on them. Special ids decode to "" so generated text never shows them.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from genloop.atomic import atomic_write_text
from genloop.errors import CorruptArtifact, InvalidInput, NotFound

if TYPE_CHECKING:
    import tokenizers as hf

UNK = "<unk>"
EOS = "<eos>"
SPECIAL_TOKENS = (UNK, EOS)
FORMAT_VERSION = 1


class Tokenizer(Protocol):
    """What models, data and generation need from a tokenizer, whatever its kind."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def unk_id(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def to_json(self) -> str: ...


def _check_ids(ids: Sequence[int], vocab_size: int) -> None:
    """Reject ids outside the vocabulary: a silent "" would hide a model/tokenizer mismatch."""
    for i in ids:
        if not 0 <= int(i) < vocab_size:
            raise InvalidInput(f"token id {int(i)} is outside the vocabulary (size {vocab_size})")


class CharTokenizer:
    """One token per Unicode character: ids 0/1 are ``<unk>``/``<eos>``, then the sorted
    distinct characters of the training texts. Characters never seen in training encode to
    ``<unk>`` rather than failing, since validation and user prompts always hold a few."""

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise InvalidInput("a character vocabulary must list distinct single characters")
        if chars != sorted(chars):
            raise InvalidInput("a character vocabulary must be sorted by code point")
        self.chars = chars
        self._itos = [""] * len(SPECIAL_TOKENS) + chars
        # Sorted code points let encode look up a whole text at once with np.searchsorted.
        self._codes = np.fromiter((ord(c) for c in chars), dtype=np.uint32, count=len(chars))

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @property
    def unk_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return 1

    def encode_array(self, text: str) -> np.ndarray:
        """Encode to an int64 array; vectorised so a 1 MB corpus takes milliseconds."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if len(self._codes) == 0:
            return np.full(len(codes), self.unk_id, dtype=np.int64)
        pos = np.searchsorted(self._codes, codes)
        pos_clipped = np.minimum(pos, len(self._codes) - 1)
        found = self._codes[pos_clipped] == codes
        return np.where(found, pos_clipped + len(SPECIAL_TOKENS), self.unk_id).astype(np.int64)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Sequence[int]) -> str:
        _check_ids(ids, self.vocab_size)
        return "".join(self._itos[int(i)] for i in ids)

    def to_json(self) -> str:
        return json.dumps(
            {"kind": self.kind, "version": FORMAT_VERSION, "vocab": [*SPECIAL_TOKENS, *self.chars]},
            ensure_ascii=False,
        )

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        vocab = d["vocab"]
        if not isinstance(vocab, list) or tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError("vocab must be a list starting with <unk>, <eos>")
        return cls(vocab[len(SPECIAL_TOKENS) :])


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) from Hugging Face ``tokenizers``: every string round-trips,
    since any byte is in the base alphabet; ``<unk>``/``<eos>`` sit at ids 0/1."""

    kind = "bpe"

    def __init__(self, hf_tokenizer: hf.Tokenizer):  # imported lazily: a heavy dependency
        self._tok = hf_tokenizer
        # Text that happens to spell "<eos>" is ordinary text: split it into bytes like any
        # other, so decode(encode(s)) == s for every s and prompts cannot inject an eos.
        self._tok.encode_special_tokens = True
        if self._tok.token_to_id(UNK) != 0 or self._tok.token_to_id(EOS) != 1:
            raise ValueError("BPE vocabulary must hold <unk> at id 0 and <eos> at id 1")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2048) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,  # library code never prints
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    @property
    def unk_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return 1

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        _check_ids(ids, self.vocab_size)
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def to_json(self) -> str:
        # The inner "tokenizer" object is Hugging Face's own tokenizer.json, usable by other tools.
        return json.dumps(
            {
                "kind": self.kind,
                "version": FORMAT_VERSION,
                "tokenizer": json.loads(self._tok.to_str()),
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_str(json.dumps(d["tokenizer"])))


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` as it came with an imported model (kind ``hf``): its
    own vocabulary and special tokens, named by their text (``eos``, ``bos``, ``unk``: from
    ``tokenizer_config.json`` / ``special_tokens_map.json``). Text is encoded as it reads, the
    model's special tokens included (a chat template writes them), nothing added around it; ids
    of special tokens decode to "". A model without an unknown token uses its end-of-text id.
    ``ends``: every token that ends a text (chat models end a turn with their own token, e.g.
    Llama 3's ``<|eot_id|>`` beside ``<|end_of_text|>``: ``generation_config.json``'s
    ``eos_token_id`` list); ``eos`` is always one of them."""

    kind = "hf"

    def __init__(self, hf_tokenizer: hf.Tokenizer, eos: str, bos: str | None = None,
                 unk: str | None = None, ends: Sequence[str] = ()):
        self._tok = hf_tokenizer
        self.eos, self.bos, self.unk = eos, bos, unk
        self.ends = [eos, *(t for t in dict.fromkeys(ends) if t != eos)]
        for role, token in (("eos", eos), ("bos", bos), ("unk", unk), *(("end", t) for t in ends)):
            if token is not None and hf_tokenizer.token_to_id(token) is None:
                raise ValueError(f"the {role} token {token!r} is not in the vocabulary")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], eos: str, bos: str | None = None,
                  unk: str | None = None) -> HFTokenizer:
        from tokenizers import Tokenizer as HFTokenizerFile

        return cls(HFTokenizerFile.from_file(str(path)), eos, bos, unk)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def _id(self, token: str) -> int:
        found = self._tok.token_to_id(token)
        assert found is not None, "checked when the tokenizer was made"
        return int(found)

    @property
    def eos_id(self) -> int:
        return self._id(self.eos)

    @property
    def bos_id(self) -> int | None:
        return None if self.bos is None else self._id(self.bos)

    @property
    def end_ids(self) -> frozenset[int]:
        return frozenset(self._id(t) for t in self.ends)

    @property
    def unk_id(self) -> int:
        return self.eos_id if self.unk is None else self._id(self.unk)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        _check_ids(ids, self.vocab_size)
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def to_json(self) -> str:
        return json.dumps(
            {"kind": self.kind, "version": FORMAT_VERSION, "eos": self.eos, "bos": self.bos,
             "unk": self.unk, "ends": self.ends, "tokenizer": json.loads(self._tok.to_str())},
            ensure_ascii=False,
        )

    @classmethod
    def from_dict(cls, d: dict) -> HFTokenizer:
        from tokenizers import Tokenizer as HFTokenizerFile

        return cls(HFTokenizerFile.from_str(json.dumps(d["tokenizer"])), d["eos"], d.get("bos"),
                   d.get("unk"), d.get("ends") or ())


class WordTokenizer:
    """One token per word: the text lower-cased and split into ``\\w+`` runs and single
    punctuation marks; ids 0/1 are ``<unk>``/``<eos>``, then the vocabulary (the training texts'
    words, most frequent first, ties alphabetical). Words never seen in training encode to
    ``<unk>``. Decoding joins words with spaces and attaches punctuation to the word before it."""

    kind = "word"
    SPLIT = re.compile(r"\w+|[^\w\s]")

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if len(set(words)) != len(words) or any(self.SPLIT.fullmatch(w) is None or w != w.lower()
                                                for w in words):
            raise InvalidInput("a word vocabulary must list distinct lower-case words or marks")
        if set(words) & set(SPECIAL_TOKENS):
            raise InvalidInput("a word vocabulary must not hold the special tokens")
        self.words = words
        self._itos = [""] * len(SPECIAL_TOKENS) + words
        self._stoi = {w: i + len(SPECIAL_TOKENS) for i, w in enumerate(words)}

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None) -> WordTokenizer:
        """The words of ``texts``; with ``vocab_size``, only the most frequent that fit."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(cls.SPLIT.findall(text.lower()))
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        if vocab_size is not None:
            ranked = ranked[: max(0, vocab_size - len(SPECIAL_TOKENS))]
        return cls(ranked)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @property
    def unk_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return 1

    def encode(self, text: str) -> list[int]:
        return [self._stoi.get(w, 0) for w in self.SPLIT.findall(text.lower())]

    def decode(self, ids: Sequence[int]) -> str:
        _check_ids(ids, self.vocab_size)
        out = ""
        for i in ids:
            w = self._itos[int(i)]
            if not w:
                continue
            out += w if not out or not (w[0].isalnum() or w[0] == "_") else " " + w
        return out

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "version": FORMAT_VERSION,
                           "vocab": [*SPECIAL_TOKENS, *self.words]}, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict) -> WordTokenizer:
        vocab = d["vocab"]
        if not isinstance(vocab, list) or tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError("vocab must be a list starting with <unk>, <eos>")
        return cls(vocab[len(SPECIAL_TOKENS):])


def unknown_words(tokenizer: Tokenizer, text: str) -> list[str]:
    """The words (and marks) of ``text``, as written and each once, that ``tokenizer`` cannot
    read: their ids hold its unknown id. Any tokenizer kind; one without an unknown token of its
    own (its unknown id is its end id: byte-level BPE, which reads every word) reports none."""
    if tokenizer.unk_id == tokenizer.eos_id:
        return []
    return [w for w in dict.fromkeys(WordTokenizer.SPLIT.findall(text))
            if tokenizer.unk_id in tokenizer.encode(w)]


def end_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """The ids that end a generated text: the end-of-text id, and every other end token the
    tokenizer declares (an imported chat model's end-of-turn token, ``HFTokenizer.ends``)."""
    return getattr(tokenizer, "end_ids", None) or frozenset((tokenizer.eos_id,))


_FROM_DICT: dict[str, Callable[[dict], Tokenizer]] = {
    CharTokenizer.kind: CharTokenizer.from_dict,
    BPETokenizer.kind: BPETokenizer.from_dict,
    HFTokenizer.kind: HFTokenizer.from_dict,
    WordTokenizer.kind: WordTokenizer.from_dict,
}


TrainedKind = Literal["char", "bpe", "word"]


def train_tokenizer(kind: TrainedKind, texts: Iterable[str], vocab_size: int = 2048) -> Tokenizer:
    """Train a tokenizer of ``kind`` on ``texts``. ``vocab_size`` bounds BPE and words: a
    character vocabulary is exactly the characters seen (capping it would turn rare Han
    characters to ``<unk>`` without the user asking)."""
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size=vocab_size)
    if kind == "word":
        return WordTokenizer.train(texts, vocab_size=vocab_size)
    raise InvalidInput(f"unknown tokenizer kind {kind!r}; use 'char', 'bpe' or 'word'")


def tokenizer_from_json(s: str) -> Tokenizer:
    """Rebuild a tokenizer from ``to_json`` output; raises CorruptArtifact if it is not one."""
    try:
        d = json.loads(s)
        if isinstance(d, dict) and "kind" not in d and "model" in d:
            # an encoder's own Hugging Face tokenizer.json, as ``EncoderTokenizer.to_json`` writes
            # it (the captions of a text-to-image model with a pretrained text encoder)
            from genloop.tokenizers.encoder import EncoderTokenizer

            return EncoderTokenizer.from_str(s)
        kind = d["kind"]
        if kind not in _FROM_DICT:
            raise ValueError(f"unknown tokenizer kind {kind!r}")
        return _FROM_DICT[kind](d)
    except CorruptArtifact:
        raise
    except Exception as e:  # any malformed content is one kind of failure for the user
        raise CorruptArtifact(f"tokenizer JSON is not valid: {type(e).__name__}: {e}") from e


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer saved by ``save_tokenizer``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise NotFound(f"no tokenizer file at {path}") from e
    except UnicodeDecodeError as e:
        raise CorruptArtifact(f"tokenizer file {path} is not UTF-8 text (byte {e.start})") from e
    try:
        return tokenizer_from_json(text)
    except CorruptArtifact as e:
        raise CorruptArtifact(f"tokenizer file {path} is corrupt: {e}") from e


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike[str]) -> None:
    """Write ``tok`` as JSON atomically: a crash leaves the old file or the new one, never half."""
    atomic_write_text(path, tok.to_json())


__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "EOS",
    "HFTokenizer",
    "SPECIAL_TOKENS",
    "Tokenizer",
    "TrainedKind",
    "UNK",
    "WordTokenizer",
    "end_ids",
    "load_tokenizer",
    "save_tokenizer",
    "tokenizer_from_json",
    "train_tokenizer",
    "unknown_words",
]
