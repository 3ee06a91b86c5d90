"""The word tokenizer and ``unknown_words`` (every tokenizer kind)."""

from __future__ import annotations

import pytest

from genloop.errors import CorruptArtifact, InvalidInput
from genloop.tokenizers import (
    WordTokenizer,
    load_tokenizer,
    save_tokenizer,
    tokenizer_from_json,
    train_tokenizer,
    unknown_words,
)

CAPTIONS = ["a small red circle at the top left", "a large blue square in the centre",
            "a red circle, small, at the top left", "a blue square left of a red circle"]


def test_word_layout_roundtrip_and_punctuation():
    tok = train_tokenizer("word", CAPTIONS)
    assert isinstance(tok, WordTokenizer) and (tok.unk_id, tok.eos_id) == (0, 1)
    assert tok.words[0] == "a"  # most frequent first
    assert tok.vocab_size == 2 + len({w for c in CAPTIONS for w in c.replace(",", " , ").split()})
    for text in CAPTIONS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
    assert len(tok.encode("a small red circle at the top left")) == 8  # one token a word
    assert tok.encode("A Small RED circle.") == tok.encode("a small red circle") + [0]  # "." unseen
    assert tok.decode(tok.encode("a red circle, small")) == "a red circle, small"
    assert tok.decode([tok.eos_id, *tok.encode("red"), tok.unk_id]) == "red"
    assert tok.encode("") == []
    with pytest.raises(InvalidInput, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_word_vocab_size_keeps_the_most_frequent():
    tok = train_tokenizer("word", CAPTIONS, vocab_size=5)
    assert tok.vocab_size == 5 and tok.words == ["a", "circle", "left"]  # 5, 3, 3 (left before red)
    assert tok.encode("a crimson circle") == [2, 0, 3]


def test_word_saves_as_json_and_refuses_a_bad_vocab(tmp_path):
    tok = train_tokenizer("word", CAPTIONS)
    save_tokenizer(tok, tmp_path / "tok.json")
    again = load_tokenizer(tmp_path / "tok.json")
    assert isinstance(again, WordTokenizer) and again.words == tok.words
    assert again.encode(CAPTIONS[2]) == tok.encode(CAPTIONS[2])
    with pytest.raises(CorruptArtifact, match="starting with <unk>"):
        tokenizer_from_json('{"kind": "word", "version": 1, "vocab": ["a", "b"]}')
    with pytest.raises(CorruptArtifact, match="distinct lower-case"):
        tokenizer_from_json('{"kind": "word", "version": 1, "vocab": ["<unk>", "<eos>", "A"]}')
    with pytest.raises(CorruptArtifact, match="distinct lower-case"):
        tokenizer_from_json('{"kind": "word", "version": 1, "vocab": ["<unk>", "<eos>", "two words"]}')


def test_unknown_words_for_every_kind():
    word = train_tokenizer("word", CAPTIONS)
    assert unknown_words(word, "A tiny Crimson circle at the top left, crimson!") == [
        "tiny", "Crimson", "crimson", "!"]
    assert unknown_words(word, "a red circle") == []
    char = train_tokenizer("char", CAPTIONS)
    assert unknown_words(char, "a red zebra circle") == ["zebra"]  # z is unseen
    bpe = train_tokenizer("bpe", CAPTIONS * 5, vocab_size=300)
    assert unknown_words(bpe, "a zebra 😀") == []  # byte-level BPE reads anything
