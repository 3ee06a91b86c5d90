"""Text datasets: every source type, cleaning, deterministic split and hash, errors, atomicity,
and the built-ins from the shared mirror."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from genloop.data.text import (
    TextDataConfig,
    iter_documents,
    load_text_dataset,
    prepare_text,
)
from genloop.errors import InvalidInput

# the datasets mirror: GENLOOP_DATA_MIRROR (CI sets it), else ../shared/data beside the repository
MIRROR = Path(os.environ.get("GENLOOP_DATA_MIRROR")
              or Path(__file__).resolve().parents[3] / "shared" / "data")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENLOOP_CACHE", raising=False)
    monkeypatch.delenv("GENLOOP_DATA_MIRROR", raising=False)
    return tmp_path / "home"


@pytest.fixture
def mirror(monkeypatch):
    if not MIRROR.is_dir():
        pytest.skip(f"shared data mirror {MIRROR} is not on this machine")
    monkeypatch.setenv("GENLOOP_DATA_MIRROR", str(MIRROR))


def _paragraph_corpus(n: int = 60) -> str:
    # Distinct paragraphs so the hash split has enough documents to fill both sides.
    return "\n\n".join(
        f"Paragraph {i}: the cat sat on mat number {i}.\nSecond line {i}." for i in range(n)
    )


def _datasets(home: Path) -> list[Path]:
    root = home / "datasets"
    return sorted(p for p in root.rglob("*") if p.is_dir()) if root.exists() else []


def test_txt_paragraphs_dedupe_split_and_files(tmp_path, home):
    text = (
        _paragraph_corpus()
        + "\n\n  \n\nParagraph 3: the cat sat on mat number 3.\nSecond line 3.\n"
    )
    src = tmp_path / "corpus.txt"
    src.write_text(text, encoding="utf-8")
    ds = prepare_text(TextDataConfig(source=str(src)))
    counts = ds.meta["counts"]
    assert ds.name == "corpus"
    assert counts["duplicates_removed"] == 1
    assert counts["documents"]["train"] + counts["documents"]["val"] == 60
    assert counts["documents"]["val"] > 0
    assert ds.path == home / "datasets" / "corpus" / ds.hash[:16]
    assert sorted(p.name for p in ds.path.iterdir()) == [  # the folder every kind shares
        "dataset.json",
        "tokenizer.json",
        "train_ids.npy",
        "val_ids.npy",
    ]
    assert isinstance(ds.train, np.memmap) and ds.train.dtype == np.uint16
    # Each document is followed by eos; decoding between eos marks gives the documents back.
    train_docs, val_docs = iter_documents(TextDataConfig(source=str(src)))
    assert int((ds.train == ds.tokenizer.eos_id).sum()) == len(train_docs)
    first = ds.train[: int(np.argmax(ds.train == ds.tokenizer.eos_id))]
    assert ds.tokenizer.decode(first.tolist()) == train_docs[0]
    # Reopening from disk gives the same dataset.
    again = load_text_dataset(ds.path)
    assert again.hash == ds.hash and np.array_equal(again.val, ds.val)


def test_split_and_hash_are_deterministic_and_content_sensitive(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text(_paragraph_corpus(), encoding="utf-8")
    cfg = TextDataConfig(source=str(a), name="a")
    first = prepare_text(cfg)
    assert iter_documents(cfg) == iter_documents(cfg)
    # Same content under another path and name: same hash (content, not location).
    b = tmp_path / "b.txt"
    b.write_text(_paragraph_corpus(), encoding="utf-8")
    assert prepare_text(TextDataConfig(source=str(b))).hash == first.hash
    # One changed character: a different dataset.
    b.write_text(_paragraph_corpus().replace("number 7.", "number 7!"), encoding="utf-8")
    assert prepare_text(TextDataConfig(source=str(b))).hash != first.hash
    # A changed preprocessing setting: a different dataset.
    assert prepare_text(cfg.model_copy(update={"dedupe": False})).hash != first.hash


def test_folder_one_document_per_txt_file_recursive(tmp_path):
    folder = tmp_path / "poems"
    (folder / "sub").mkdir(parents=True)
    for i in range(40):
        (folder / ("sub" if i % 2 else ".") / f"{i:02d}.txt").write_text(
            f"poem {i}\n\nstill poem {i}", encoding="utf-8"
        )
    (folder / "notes.md").write_text("ignored", encoding="utf-8")
    train, val = iter_documents(TextDataConfig(source=str(folder)))
    assert len(train) + len(val) == 40
    assert "poem 3\n\nstill poem 3" in train + val
    ds = prepare_text(TextDataConfig(source=str(folder)))
    assert ds.name == "poems"


def test_jsonl_field_and_list_values_with_chinese(tmp_path):
    src = tmp_path / "poems.jsonl"
    rows = [{"body": [f"第{i}首，", "春眠不覺曉。"]} for i in range(50)] + [{"body": "plain 文字"}]
    src.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    train, val = iter_documents(TextDataConfig(source=str(src), field="body"))
    assert "第7首，春眠不覺曉。" in train + val
    assert len(train) + len(val) == 51


def test_bpe_dataset_roundtrips_documents(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text(_paragraph_corpus(), encoding="utf-8")
    cfg = TextDataConfig(source=str(src), tokenizer="bpe", vocab_size=300)
    ds = prepare_text(cfg)
    assert ds.tokenizer.kind == "bpe"
    _, val_docs = iter_documents(cfg)
    eos = ds.tokenizer.eos_id
    ends = np.flatnonzero(np.asarray(ds.val) == eos)
    assert ds.tokenizer.decode(ds.val[: ends[0]].tolist()) == val_docs[0]


def test_nfkc_normalisation(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("\n\n".join(f"ｆｕｌｌｗｉｄｔｈ {i}" for i in range(40)), encoding="utf-8")
    train, val = iter_documents(TextDataConfig(source=str(src), normalize="NFKC"))
    assert "fullwidth 1" in train + val


@pytest.mark.parametrize(
    ("content", "suffix", "match"),
    [
        (b" \n\n \t\n", ".txt", "empty"),
        (b"hello\x00world", ".txt", "NUL byte at offset 5"),
        (b"hello \xff\xfe", ".txt", "not UTF-8 text: invalid byte at offset 6"),
        (b'{"text": "a"}\n{"body": "b"}\n', ".jsonl", "line 2 has no field 'text'"),
        (b"a,b\n", ".csv", "unsupported extension '.csv'"),
        (b"only one paragraph here", ".txt", "too small: its 1 document"),
    ],
)
def test_bad_corpora_raise_one_line_and_leave_no_dataset(tmp_path, home, content, suffix, match):
    src = tmp_path / f"bad{suffix}"
    src.write_bytes(content)
    with pytest.raises(InvalidInput, match=match) as err:
        prepare_text(TextDataConfig(source=str(src)))
    assert str(src) in str(err.value) and "\n" not in str(err.value)
    assert _datasets(home) == []


def test_missing_source(tmp_path, home):
    with pytest.raises(InvalidInput, match="does not exist"):
        prepare_text(TextDataConfig(source=str(tmp_path / "nope.txt")))
    assert _datasets(home) == []


def test_failed_write_leaves_no_half_dataset(tmp_path, home, monkeypatch):
    src = tmp_path / "c.txt"
    src.write_text(_paragraph_corpus(), encoding="utf-8")
    import genloop.data.folder as folder_mod

    def boom(tok, path):
        raise OSError("disk full")

    monkeypatch.setattr(folder_mod, "save_tokenizer", boom)  # a real failure point mid-write
    with pytest.raises(OSError, match="disk full"):
        prepare_text(TextDataConfig(source=str(src)))
    assert [p.name for p in _datasets(home)] == ["c"]  # only the empty name folder


def test_config_is_strict():
    with pytest.raises(ValidationError):
        TextDataConfig(source="x.txt", vocab=100)
    with pytest.raises(ValidationError):
        TextDataConfig(source="x.txt", val_fraction=0.6)
    with pytest.raises(ValidationError):
        TextDataConfig(source="x.txt", name="../escape")


def test_python_docs_is_offline():
    train, val = iter_documents(TextDataConfig(source="python-docs"))
    assert len(train) > len(val) > 0


def test_tinyshakespeare_uses_the_nanogpt_split(mirror):
    ds = prepare_text(TextDataConfig(source="tinyshakespeare"))
    assert (len(ds.train), len(ds.val)) == (1_003_854, 111_540)
    assert ds.meta["counts"]["characters"] == {"train": 1_003_854, "val": 111_540}
    assert ds.tokenizer.vocab_size == 67  # 65 characters + <unk>, <eos>
    assert ds.tokenizer.eos_id not in np.asarray(ds.train[:10000])
    assert ds.tokenizer.decode(ds.train[:14].tolist()) == "First Citizen:"


def test_tang_poems_unseen_val_chars_map_to_unk(mirror):
    ds = prepare_text(TextDataConfig(source="tang-poems"))
    counts = ds.meta["counts"]
    assert counts["documents"] == {"train": 30_850, "val": 1_701}
    unk = ds.tokenizer.unk_id
    assert int((np.asarray(ds.val) == unk).sum()) > 0
    assert int((np.asarray(ds.train) == unk).sum()) == 0
    assert int((np.asarray(ds.val) == ds.tokenizer.eos_id).sum()) == 1_701
