"""IncrementalDecoder and TextRow: decoding token by token gives exactly what decoding the whole
list gives, on every built-in tokenizer kind, whatever the ids (invalid UTF-8, specials)."""

from __future__ import annotations

import random

import pytest

from genloop.errors import InvalidInput
from genloop.generation.text import TextRow
from genloop.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    HFTokenizer,
    Tokenizer,
    WordTokenizer,
    end_ids,
)
from genloop.tokenizers.incremental import IncrementalDecoder

TEXTS = ["Hello, world. héllo wörld — 你好，世界！ naïve café 🙂 def f(x): return x**2\n",
         "The quick brown fox, jumps over the lazy dog; snake_case words_here 12 345.",
         "日本語のテキストと English mixed ☃ ∑ ≠ ∞ emoji 🎉🎉 tabs\tand\nnewlines"] * 20


def _hf(decoder: str) -> HFTokenizer:
    from tokenizers import Tokenizer as Raw
    from tokenizers import decoders, models, pre_tokenizers, trainers

    raw = Raw(models.BPE(unk_token="<unk>"))
    if decoder == "bytelevel":
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        raw.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # SentencePiece-like: "▁" for spaces, the first token's leading space stripped
        raw.pre_tokenizer = pre_tokenizers.Metaspace()
        raw.decoder = decoders.Metaspace()
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<eos>", "<eot>"],
                                  initial_alphabet=alphabet, show_progress=False)
    raw.train_from_iterator(TEXTS, trainer=trainer)
    raw.add_tokens(["<tool>"])  # an added token that is not special: decoded as its text
    return HFTokenizer(raw, "<eos>", unk="<unk>", ends=["<eot>"])


def tokenizers() -> dict[str, Tokenizer]:
    return {"char": CharTokenizer.train(TEXTS), "word": WordTokenizer.train(TEXTS),
            "bpe": BPETokenizer.train(TEXTS, vocab_size=400), "hf-bytelevel": _hf("bytelevel"),
            "hf-metaspace": _hf("metaspace")}


@pytest.fixture(scope="module")
def toks() -> dict[str, Tokenizer]:
    return tokenizers()


KINDS = ["char", "word", "bpe", "hf-bytelevel", "hf-metaspace"]


def _sequences(tok: Tokenizer, rng: random.Random) -> list[list[int]]:
    """Random ids (much of it invalid UTF-8 for byte-level BPE, specials included) and the
    encodings of real text, each cut at random."""
    real = [tok.encode(t) for t in TEXTS[:3]]
    noise = [[rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 60))] for _ in range(40)]
    mixed = [r[: rng.randrange(len(r))] + n[:5] + r for r, n in zip(real, noise, strict=False)]
    return real + noise + mixed


@pytest.mark.parametrize("kind", KINDS)
def test_incremental_decoding_equals_decoding_the_whole_list(toks, kind):
    tok, rng = toks[kind], random.Random(kind)
    for ids in _sequences(tok, rng):
        decoder = IncrementalDecoder(tok)
        for i, token in enumerate(ids):
            assert decoder.add(token) == tok.decode(ids[: i + 1]), (kind, ids[: i + 1])
        assert decoder.ids == ids


@pytest.mark.parametrize("kind", KINDS)
def test_incremental_decoder_refuses_an_id_outside_the_vocabulary(toks, kind):
    decoder = IncrementalDecoder(toks[kind])
    with pytest.raises(InvalidInput, match="outside the vocabulary"):
        decoder.add(toks[kind].vocab_size)
    with pytest.raises(InvalidInput, match="outside the vocabulary"):
        decoder.add(-1)


class _WholeRow:
    """TextRow as it was: the whole list decoded after every token (the reference)."""

    def __init__(self, stops: list[str]):
        self.stops, self.ids, self.text, self.sent, self.done = stops, [], "", 0, None

    def flush(self) -> str:
        new = self.text[self.sent :]
        self.sent = max(self.sent, len(self.text))
        return new

    def add(self, token: int, tokenizer: Tokenizer) -> str:
        if token == tokenizer.eos_id or token in end_ids(tokenizer):
            self.done = "stop"
            return self.flush()
        self.ids.append(token)
        full = tokenizer.decode(self.ids)
        if full.endswith("\ufffd"):
            return ""
        cuts = [full.find(s, max(0, len(self.text) - len(s) + 1)) for s in self.stops]
        cuts = [c for c in cuts if c != -1]
        if cuts:
            self.text = full[: min(cuts)]
            self.done = "stop"
            return self.flush()
        self.text = full
        hold = max((k for s in self.stops for k in range(1, len(s)) if full.endswith(s[:k])),
                   default=0)
        new = full[self.sent : max(self.sent, len(full) - hold)]
        self.sent += len(new)
        return new


@pytest.mark.parametrize("kind", KINDS)
def test_text_row_streams_and_stops_as_decoding_the_whole_list_did(toks, kind):
    tok, rng = toks[kind], random.Random("row" + kind)
    stop_sets = [[], ["o"], ["wor", "l"], [", ", "\n", "ox"], ["好，", "🙂"], ["the lazy"]]
    for ids in _sequences(tok, rng):
        for stops in stop_sets:
            row, ref = TextRow("p", stops), _WholeRow(stops)
            for token in ids:
                assert row.add(token, tok) == ref.add(token, tok)
                assert (row.text, row.sent, row.done, row.ids) == (ref.text, ref.sent, ref.done,
                                                                   ref.ids)
                if row.done:
                    break
            assert row.flush() == ref.flush()
