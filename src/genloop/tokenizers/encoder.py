"""An imported encoder's own tokenizer: Hugging Face's ``tokenizer.json``, read by ``tokenizers``.

An encoder (BERT family) was pretrained with its tokenizer and its special tokens ([CLS] ...
[SEP] around each text, [PAD] between rows), so genloop keeps that file as it came, with the
truncation its sentence-transformers config asks for (``max_seq_length``) and no padding of its
own: ``encode_batch`` pads the rows of one batch to the longest and returns the attention mask.
It satisfies the ``Tokenizer`` protocol (``encode`` counts a text's tokens, special ones
included: what the encoder reads), so a loaded embedder is a text model like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genloop.errors import CorruptArtifact, InvalidInput


class EncoderTokenizer:
    kind = "encoder"

    def __init__(self, hf_tokenizer: Any, max_length: int | None = None):
        """``max_length``: tokens per text, special ones included (None: the truncation the
        file itself holds, as genloop saved it)."""
        self._tok = hf_tokenizer
        if max_length is None:
            max_length = (hf_tokenizer.truncation or {}).get("max_length")
        if max_length is None:
            raise CorruptArtifact("an encoder tokenizer without its truncation length")
        self.max_length = int(max_length)
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=self.max_length)
        self.pad_id = self._first_id("[PAD]", "<pad>")
        self._unk = self._first_id("[UNK]", "<unk>")
        self._eos = self._first_id("[SEP]", "</s>", "<eos>")

    def _first_id(self, *tokens: str) -> int:
        for t in tokens:
            if (i := self._tok.token_to_id(t)) is not None:
                return int(i)
        return 0

    @classmethod
    def from_str(cls, text: str, max_length: int | None = None) -> EncoderTokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            hf = HFTokenizer.from_str(text)
        except Exception as e:  # the Rust side raises plain Exceptions on malformed JSON
            raise CorruptArtifact(f"not a Hugging Face tokenizer.json ({type(e).__name__}: {e})") from None
        return cls(hf, max_length)

    @classmethod
    def load(cls, path: Path, max_length: int | None = None) -> EncoderTokenizer:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CorruptArtifact(f"{path}: unreadable tokenizer ({e})") from None
        try:
            return cls.from_str(text, max_length)
        except CorruptArtifact as e:
            raise CorruptArtifact(f"{path}: {e}") from None

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def unk_id(self) -> int:
        return self._unk

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        for i in ids:
            if not 0 <= int(i) < self.vocab_size:
                raise InvalidInput(f"token id {int(i)} is outside the vocabulary (size {self.vocab_size})")
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=True))

    def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask): (B, T) int64 and bool, each text with its special tokens, cut to
        ``max_length``, right-padded with [PAD] to the longest row of the batch."""
        rows = [e.ids for e in self._tok.encode_batch(list(texts))]
        width = max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, True
        return ids, mask

    def to_json(self) -> str:
        """Hugging Face's tokenizer.json, with this tokenizer's truncation and no padding."""
        return str(self._tok.to_str())
