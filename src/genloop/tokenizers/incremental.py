"""Decoding a growing list of ids one token at a time, at the cost of that token.

A sequence being generated is decoded after every token (to stream its text and find stop
strings); ``tokenizer.decode`` of the whole list each time costs a pass over every id so far.
``IncrementalDecoder.add`` returns exactly ``tokenizer.decode(ids)`` for the ids added so far,
where the tokenizer allows working it out from the last text:

- ``char``: a token's text is its character ("" for the special ids), whatever is around it;
- ``word``: a word is joined with a space unless it is the first text or a punctuation mark
  (``WordTokenizer.decode``), which only asks whether there is text before it;
- byte-level BPE (``bpe``, and ``hf`` with a ``ByteLevel`` decoder): the text is the bytes of the
  tokens, concatenated and read as UTF-8 with U+FFFD for what is not; a reading that ends on a
  whole character is final whatever bytes follow, so once the text of the ids so far does not end
  in U+FFFD, later tokens are decoded from there on alone and appended;
- any other tokenizer (an imported model's SentencePiece-style decoder strips a leading space of
  the first token, so a token's text depends on its neighbours): the whole list, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from genloop.errors import InvalidInput
from genloop.tokenizers import BPETokenizer, CharTokenizer, HFTokenizer, Tokenizer, WordTokenizer


class IncrementalDecoder:
    """``add(token)`` → ``tokenizer.decode`` of every id added so far (``ids``)."""

    def __init__(self, tokenizer: Tokenizer, ids: list[int] | None = None):
        self.tokenizer = tokenizer
        self._size = tokenizer.vocab_size
        self.ids: list[int] = [] if ids is None else ids  # appended to: the caller's list, if given
        self.text = tokenizer.decode(self.ids) if self.ids else ""  # decode(ids)
        self._add = self._way(tokenizer)
        self._final = 0  # BPE: ids[:_final] decode to _final_text, which ends on a whole character
        self._final_text = ""

    def _way(self, tokenizer: Tokenizer) -> Callable[[int], str]:
        if type(tokenizer) is CharTokenizer:  # exactly these classes: a subclass may decode otherwise
            itos = tokenizer._itos
            return lambda token: self.text + itos[token]
        if type(tokenizer) is WordTokenizer:
            words = tokenizer._itos
            return lambda token: self._word(words[token])
        if type(tokenizer) in (BPETokenizer, HFTokenizer) and _byte_level(
                cast(BPETokenizer | HFTokenizer, tokenizer)):
            return self._bytes
        return self._whole

    def add(self, token: int) -> str:
        token = int(token)
        if not 0 <= token < self._size:  # as decode's check says it
            raise InvalidInput(f"token id {token} is outside the vocabulary (size {self._size})")
        self.ids.append(token)
        self.text = self._add(token)
        return self.text

    def _word(self, w: str) -> str:
        if not w:
            return self.text
        if not self.text or not (w[0].isalnum() or w[0] == "_"):
            return self.text + w
        return self.text + " " + w

    def _bytes(self, _token: int) -> str:
        text = self._final_text + self.tokenizer.decode(self.ids[self._final :])
        if not text.endswith("\ufffd"):
            self._final, self._final_text = len(self.ids), text
        return text

    def _whole(self, _token: int) -> str:
        return self.tokenizer.decode(self.ids)


def _byte_level(tokenizer: BPETokenizer | HFTokenizer) -> bool:
    """Whether the Hugging Face tokenizer inside decodes with the plain ``ByteLevel`` decoder
    (its tokens' bytes, concatenated, read as UTF-8)."""
    from tokenizers import decoders

    return isinstance(tokenizer._tok.decoder, decoders.ByteLevel)
