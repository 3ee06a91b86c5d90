"""Tokenizers: round-trips (Chinese included), unknown characters, JSON save/load."""

from __future__ import annotations

import pytest

from genloop.errors import CorruptArtifact, InvalidInput
from genloop.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    load_tokenizer,
    save_tokenizer,
    tokenizer_from_json,
    train_tokenizer,
)

TEXTS = ["To be, or not to be: that is the question.", "床前明月光，疑是地上霜。", "naïve café"]
BPE_CORPUS = [
    "the quick brown fox jumps over the lazy dog. " * 20,
    "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。" * 10,
]


def test_char_layout_and_roundtrip_with_chinese():
    tok = train_tokenizer("char", TEXTS)
    assert isinstance(tok, CharTokenizer)
    assert (tok.unk_id, tok.eos_id) == (0, 1)
    assert tok.vocab_size == 2 + len(set("".join(TEXTS)))
    assert tok.chars == sorted(tok.chars)
    for text in TEXTS:
        ids = tok.encode(text)
        assert len(ids) == len(text)
        assert tok.decode(ids) == text


def test_char_unknown_characters_map_to_unk_and_specials_decode_empty():
    tok = train_tokenizer("char", ["abc"])
    assert tok.encode("a😀b霜") == [2, 0, 3, 0]
    assert tok.decode([2, tok.eos_id, 3, tok.unk_id]) == "ab"
    assert tok.encode("") == []


def test_char_decode_rejects_out_of_range_id():
    tok = train_tokenizer("char", ["abc"])
    with pytest.raises(InvalidInput, match="outside the vocabulary"):
        tok.decode([99])


def test_bpe_roundtrips_any_string():
    tok = train_tokenizer("bpe", BPE_CORPUS, vocab_size=300)
    assert isinstance(tok, BPETokenizer)
    assert (tok.unk_id, tok.eos_id) == (0, 1)
    assert tok.vocab_size <= 300
    # Unseen script, emoji, whitespace runs and text that spells a special token all round-trip.
    for text in ["the lazy fox", "  leading\n\ttabs  ", "Ωμέγα 😀 ñ", "a <eos> b <unk>", "", "霜"]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.decode([tok.eos_id]) == ""
    # BPE actually merges: frequent words take fewer tokens than bytes.
    assert len(tok.encode("the quick brown fox")) < len(b"the quick brown fox")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_load_json_gives_identical_encoding(tmp_path, kind):
    tok = train_tokenizer(kind, BPE_CORPUS + TEXTS, vocab_size=300)
    path = tmp_path / "sub" / "tokenizer.json"
    save_tokenizer(tok, path)
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    loaded = load_tokenizer(path)
    assert loaded.kind == kind
    assert loaded.vocab_size == tok.vocab_size
    sample = "the fox 春眠 question?"
    assert loaded.encode(sample) == tok.encode(sample)
    assert tokenizer_from_json(tok.to_json()).to_json() == tok.to_json()


def test_corrupt_json_names_the_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"kind": "char", "vocab": [', encoding="utf-8")
    with pytest.raises(CorruptArtifact, match="tokenizer.json"):
        load_tokenizer(path)
    path.write_text('{"kind": "wordpiece"}', encoding="utf-8")
    with pytest.raises(CorruptArtifact, match="wordpiece"):
        load_tokenizer(path)
