"""The tang-poems builder (SOURCE.md steps 1-5) on small hand-made chinese-poetry files, and the
whole fetch → build → check path over a real local HTTP server.

The real inputs (58 files of chinese-poetry at commit 99ebbef) cannot be fetched from CI, so the
end-to-end check against the published sha256s is not run here; what is checked against the
published files (from the shared mirror) is the writer and the split: re-writing their rows
reproduces their bytes, and every row sits in its split's buckets.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import os
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from genloop.data import tang_poems as tp
from genloop.data.download import fetch_builtin
from genloop.data.sources import SOURCES, TANG_POEMS, Built, Input
from genloop.errors import DownloadError

MIRROR = Path(os.environ.get("GENLOOP_DATA_MIRROR")
              or Path(__file__).resolve().parents[3] / "shared" / "data")

# A pool of distinct Han characters for filler poems that share nothing with each other.
POOL = [chr(c) for c in range(0x4E00, 0x4E00 + 6000) if chr(c) != "囗"]


def _filler(rng: np.random.Generator, width: int, lines: int) -> list[str]:
    picks = rng.choice(len(POOL), size=width * lines, replace=False)
    verses = ["".join(POOL[i] for i in picks[k * width:(k + 1) * width]) for k in range(lines)]
    return [verses[i] + "，" + verses[i + 1] + "。" for i in range(0, lines, 2)]


def _entry(title: str, paragraphs: list[str], author: str = "某甲", **extra) -> dict:
    return {"author": author, "paragraphs": paragraphs, "title": title,
            "id": hashlib.sha256((title + "".join(paragraphs)).encode()).hexdigest()[:12], **extra}


# Named poems, each exercising one rule. LU is a 五言律诗 whose lines 3..6 JUE_NEAR echoes.
LU = ["白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。", "孤城遙望斷，遠樹暗迷愁。",
      "落葉隨風起，寒鴉繞樹投。"]
# Lines 3..6 of LU (couplet offset 2) with positions 1 and 3 of every line changed: 60% of the
# characters identical in place, not one trigram shared.
JUE_NEAR = ["欲甲窮乙里，更丙一丁樓。", "孤戊遙己斷，遠庚暗辛愁。"]
# Lines 2..5 of LU (offset 1, not a couplet offset), changed the same way: not a near-duplicate.
JUE_ODD = ["黃壬入癸流，欲子千丑目。", "更寅一卯樓，孤辰遙巳斷。"]
# Lines 2..5 of LU unchanged: every trigram shared, but at an odd offset (so by trigrams only).
TRIGRAM_NEAR = ["黃河入海流，欲窮千里目。", "更上一層樓，孤城遙望斷。"]


def _corpus(root: Path) -> dict:
    """Write a source tree and return what each rule should do to it."""
    rng = np.random.default_rng(7)
    named = [
        _entry("登樓", LU),
        _entry("題[一]山寺", [p + "  " for p in _filler(rng, 5, 4)]),  # footnote; trailing blanks
        _entry("[玄]宗廟", ["".join(_filler(rng, 7, 8))]),  # supplied char; one long paragraph
        _entry("注", ["秋風吹渭水（一作河），落葉滿長安。", "此地別燕丹，壯士髮衝冠。"]),  # note
        _entry("缺", ["□□吹渭水，落葉滿長安。", "此地別燕丹，壯士髮衝冠。"]),  # box
        _entry("囗", ["囗風吹渭水，落葉滿長安。", "此地別燕丹，壯士髮衝冠。"]),  # lost char
        _entry("外", ["𠀀風吹渭水，落葉滿長安。", "此地別燕丹，壯士髮衝冠。"]),  # outside the BMP
        _entry("六言", ["秋風吹渭水濱，落葉滿長安城。", "此地別燕丹去，壯士髮衝冠來。"]),
        _entry("雜言", ["秋風吹渭水，落葉滿長安城。", "此地別燕丹，壯士髮衝冠。"]),
        _entry("排律", _filler(rng, 5, 12)),
        _entry("句", ["秋風吹渭水，落葉滿長安。"]),
        _entry("無標點", ["秋風吹渭水，落葉滿長安。", "此地別燕丹，壯士髮衝冠"]),
        _entry("", _filler(rng, 5, 4)),  # no title
        _entry("無名", _filler(rng, 5, 4), author=" "),  # no author
        _entry("選", _filler(rng, 7, 4), tags=["唐诗三百首", "七言绝句"]),  # tagged
        _entry("行宮", ["寥落古行宮，宮花寂寞紅。", "白頭宮女在，閑坐說玄宗。"]),  # in list 1
        _entry("鹿柴", ["空山不見人，但聞人語響。", "返景入深林，復照青苔上。"]),  # in list 2
        _entry("重出", ["白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。", "孤城遙望斷，遠樹暗迷愁。",
                       "落葉隨風起，寒鴉繞樹投。"], author="某乙"),  # exact duplicate of 登樓
        _entry("摘句", JUE_NEAR),  # near-duplicate by the overlay test
        _entry("異文", TRIGRAM_NEAR),  # near-duplicate by the trigram test
        _entry("奇位", JUE_ODD),  # not a near-duplicate: odd offset
    ]
    fillers = [_entry(f"雜詩{i}", _filler(rng, 5 if i % 2 else 7, 4 if i % 3 else 8))
               for i in range(80)]
    files = {name: [] for name in tp.POEM_FILES}
    files[tp.POEM_FILES[0]] = named[:10]
    files[tp.POEM_FILES[1]] = named[10:] + fillers[:40]
    files[tp.POEM_FILES[-1]] = fillers[40:]
    for name, entries in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(entries, ensure_ascii=False, indent=2), "utf-8")
    # The two anthology lists, in their own (different) layouts; simplified script in the second.
    (root / tp.ANTHOLOGY_FILES[0]).write_text(json.dumps([
        {"author": "元稹", "title": "行宮", "tags": ["唐诗三百首"],
         "paragraphs": ["寥落古行宮，宮花寂寞紅。", "白頭宮女在，閒坐說玄宗。"]},
    ], ensure_ascii=False), "utf-8")
    (root / tp.ANTHOLOGY_FILES[1]).parent.mkdir(parents=True, exist_ok=True)
    (root / tp.ANTHOLOGY_FILES[1]).write_text(json.dumps({"title": "唐诗三百首", "content": [
        {"type": "五言绝句", "content": [{"chapter": "鹿柴", "author": "王维", "paragraphs": [
            "空山不见人，但闻人语响。(语 一作：话)", "返景入深林，复照青苔上。"]}]},
    ]}, ensure_ascii=False), "utf-8")
    return {"entries": named + fillers}


@pytest.fixture
def sources(tmp_path):
    root = tmp_path / "src"
    info = _corpus(root)
    return root, info


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_every_rule_of_the_build(sources, tmp_path):
    root, info = sources
    counts = tp.build(root, tmp_path / "out")
    assert counts == tp.Counts(
        read=len(info["entries"]), not_regular=8, no_title_or_author=2, lost_character=1,
        anthology=3, exact_duplicates=1, near_duplicates=2, kept=counts.kept,
        train=counts.train, valid=counts.valid, withheld=counts.withheld)
    assert counts.kept == len(info["entries"]) - 17 == counts.train + counts.valid + counts.withheld
    train, valid = _rows(tmp_path / "out" / "train.jsonl"), _rows(tmp_path / "out" / "valid.jsonl")
    assert valid and counts.withheld, "the hand-made corpus should reach every bucket range"
    titles = [r["title"] for r in train + valid]
    # Step 2: filters (notes, boxes, 囗, non-BMP, other shapes, no title or author) ...
    for dropped in ("注", "缺", "囗", "外", "六言", "雜言", "排律", "句", "無標點", "", "無名"):
        assert dropped not in titles
    # Step 3: tagged, or matching either anthology list (variant 閒/閑; simplified script + note).
    # Step 4: the first in file order stays; the exact and both near-duplicates go.
    for dropped in ("選", "行宮", "鹿柴", "重出", "摘句", "異文"):
        assert dropped not in titles
    # ... and the survivors written as the rules say: blanks stripped, titles cleaned, one long
    # paragraph regrouped into couplets; each in the split of its bucket (95..99: withheld).
    by_title = {e["title"]: e for e in info["entries"]}
    expected = {
        "題[一]山寺": ("題山寺", "五言绝句"), "[玄]宗廟": ("玄宗廟", "七言律诗"),
        "登樓": ("登樓", "五言律诗"), "奇位": ("奇位", "五言绝句"),
    }
    for source_title, (title, form) in expected.items():
        row = tp.regular_poem(by_title[source_title]).row()
        assert (row["title"], row["form"]) == (title, form)
        assert all(len(p) in (12, 16) for p in row["paragraphs"])
        b = tp.bucket(row)
        assert (row in train) == (b < 90) and (row in valid) == (90 <= b < 95)
    # Step 5: buckets and format of every row.
    assert all(tp.bucket(r) < 90 for r in train) and all(90 <= tp.bucket(r) < 95 for r in valid)
    for r in train + valid:
        assert list(r) == ["id", "title", "author", "paragraphs", "form"]
        width = len(r["paragraphs"][0]) // 2 - 1
        assert r["form"] == {(5, 4): "五言绝句", (7, 4): "七言绝句", (5, 8): "五言律诗",
                             (7, 8): "七言律诗"}[(width, 2 * len(r["paragraphs"]))]
        assert all(p[width] in "，。？！；" and p[-1] in "，。？！；" for p in r["paragraphs"])


def test_titles_and_verses_rules():
    assert tp.clean_title("題[一]山寺[二]") == "題山寺"
    assert tp.clean_title("[玄]宗廟") == "玄宗廟"
    marks = tp.regular_poem(_entry("t", ["秋風吹渭水，落葉滿長安？ ", " 此地別燕丹！壯士髮衝冠；"]))
    assert marks is not None and marks.marks == ["，", "？", "！", "；"]
    assert tp.loose_verses(["空山不见人，但闻人语响。(语 一作：话)", "[返]景入深林"]) == [
        "空山不见人", "但闻人语响", "返景入深林"]


def test_the_build_is_deterministic(sources, tmp_path):
    root, _ = sources
    tp.build(root, tmp_path / "a")
    tp.build(root, tmp_path / "b")
    for name in tp.OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_the_pair_test_states_both_rules():
    lu = [v for p in LU for v in p.replace("。", "，").split("，") if v]
    tri = [v for p in TRIGRAM_NEAR for v in p.replace("。", "，").split("，") if v]
    assert tp.trigrams(tri) <= tp.trigrams(lu) and tp.near_duplicate(tri, lu)
    near = [v for p in JUE_NEAR for v in p.replace("。", "，").split("，") if v]
    odd = [v for p in JUE_ODD for v in p.replace("。", "，").split("，") if v]
    assert not tp.trigrams(near) & tp.trigrams(lu)
    assert tp.near_duplicate(near, lu) and tp.near_duplicate(lu, near)
    assert not tp.near_duplicate(odd, lu)
    # Half is enough, less is not (3 of 6 trigrams and 5 of 10 characters; then 2 and 4).
    assert tp.near_duplicate(["甲乙丙丁戊", "己庚辛壬癸"], ["甲乙丙丁戊", "子丑寅卯辰"])
    assert not tp.near_duplicate(["甲乙丙丁戊", "己庚辛壬癸"], ["甲乙丙丁子", "丑寅卯辰巳"])
    # Characters in place count only between lines of the same length.
    assert tp.near_duplicate(["甲子丙丑戊"] * 4, ["甲寅丙卯戊"] * 4)
    assert not tp.near_duplicate(["甲子丙丑戊"] * 4, ["甲寅丙卯戊己庚"] * 4)


def test_the_index_agrees_with_the_pair_test():
    """NearDuplicates.match == any(near_duplicate(q, p) for p added), on poems built to collide."""
    rng = np.random.default_rng(3)
    alphabet = [chr(0x4E00 + i) for i in range(12)]  # few characters: many partial matches
    poems = []
    for _ in range(300):
        width = int(rng.choice([5, 7]))
        lines = int(rng.choice([2, 4, 6, 8]))
        poems.append(["".join(rng.choice(alphabet, width)) for _ in range(lines)])
    index = tp.NearDuplicates()
    added: list[list[str]] = []
    hits = 0
    for poem in poems:
        expected = any(tp.near_duplicate(poem, p) for p in added)
        assert index.match(poem) == expected
        hits += expected
        if not expected or rng.random() < 0.3:
            index.add(poem)
            added.append(poem)
    assert 0 < hits < len(poems)


# --- against the published files (shared mirror) --------------------------------------------------


@pytest.mark.skipif(not (MIRROR / "tang_poems").is_dir(), reason="no shared data mirror here")
def test_writer_and_split_reproduce_the_published_files():
    for name in tp.OUTPUTS:
        raw = (MIRROR / "tang_poems" / name).read_bytes()
        rows = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
        # Each published row is a regular poem whose row() is itself ...
        again = [tp.regular_poem(r).row() for r in rows]
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in again).encode()
        # ... and writing them gives the recorded bytes.
        assert hashlib.sha256(text).hexdigest() == TANG_POEMS.file(name).sha256
        low, high = (0, 90) if name == "train.jsonl" else (90, 95)
        assert all(low <= tp.bucket(r) < high for r in rows)


# --- fetch -> build -> check, over HTTP ---------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def served(sources):
    root, _ = sources
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENLOOP_CACHE", raising=False)
    monkeypatch.delenv("GENLOOP_DATA_MIRROR", raising=False)
    return tmp_path / "home"


def _local_source(base: str, hashes: dict[str, str]):
    """TANG_POEMS with its inputs served from ``base`` (same paths, URL-quoted as in the table)."""
    inputs = tuple(Input(i.path, f"{base}/{quote(i.path)}") for i in TANG_POEMS.inputs)
    files = tuple(Built(f.path, hashes[Path(f.path).name]) for f in TANG_POEMS.files)
    return dataclasses.replace(TANG_POEMS, inputs=inputs, files=files)


def test_fetch_builds_checks_and_caches(served, home, tmp_path):
    root, base = served
    tp.build(root, tmp_path / "expected")
    hashes = {n: hashlib.sha256((tmp_path / "expected" / n).read_bytes()).hexdigest()
              for n in tp.OUTPUTS}
    src = _local_source(base, hashes)
    path = fetch_builtin("tang-poems", "valid.jsonl", source=src)
    assert path == home / "cache" / "tang_poems" / "valid.jsonl"
    assert path.read_bytes() == (tmp_path / "expected" / "valid.jsonl").read_bytes()
    assert sorted(p.name for p in (home / "cache").iterdir()) == ["tang_poems"]  # no build dir
    assert sorted(p.name for p in (home / "cache" / "tang_poems").iterdir()) == sorted(tp.OUTPUTS)
    # The second file was built by the same run: served from the cache, no network needed.
    offline = dataclasses.replace(src, inputs=(Input("x", "http://127.0.0.1:9/none"),))
    assert fetch_builtin("tang-poems", "train.jsonl", source=offline).read_bytes() == (
        tmp_path / "expected" / "train.jsonl").read_bytes()


def test_a_build_with_another_hash_is_refused_and_nothing_cached(served, home, tmp_path):
    root, base = served
    tp.build(root, tmp_path / "expected")
    good = hashlib.sha256((tmp_path / "expected" / "train.jsonl").read_bytes()).hexdigest()
    src = _local_source(base, {"train.jsonl": good, "valid.jsonl": "0" * 64})
    with pytest.raises(DownloadError) as err:
        fetch_builtin("tang-poems", "train.jsonl", source=src)
    msg = str(err.value)
    assert "\n" not in msg and "tang_poems/valid.jsonl" in msg and "0" * 64 in msg
    got = hashlib.sha256((tmp_path / "expected" / "valid.jsonl").read_bytes()).hexdigest()
    assert got in msg
    assert not (home / "cache").exists() or list((home / "cache").iterdir()) == []


def test_a_missing_input_is_a_one_line_error_and_nothing_cached(served, home, tmp_path):
    root, base = served
    (root / tp.ANTHOLOGY_FILES[1]).unlink()
    src = _local_source(base, {"train.jsonl": "0" * 64, "valid.jsonl": "0" * 64})
    with pytest.raises(DownloadError, match="could not download .*tangshisanbaishou") as err:
        fetch_builtin("tang-poems", "train.jsonl", source=src)
    assert "\n" not in str(err.value) and "GENLOOP_DATA_MIRROR" in str(err.value)
    assert list((home / "cache").iterdir()) == []


def test_the_table_entry_builds_from_the_pinned_commit():
    assert SOURCES["tang-poems"] is TANG_POEMS and TANG_POEMS.build is tp.build
    assert len(TANG_POEMS.inputs) == 60
    commit = "99ebbef7e1345c0985c44b9fd96a3f9e776f117b"
    assert all(i.url.startswith(f"https://raw.githubusercontent.com/chinese-poetry/chinese-poetry/"
                                f"{commit}/") for i in TANG_POEMS.inputs)
    assert TANG_POEMS.inputs[-1].url.endswith("/%E8%92%99%E5%AD%A6/tangshisanbaishou.json")
