"""image_text datasets: the shapes attributes and held-out split, references, and captioned files
(a folder with captions.jsonl, a COCO captions file)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genloop.data.image_text import ImageTextDataConfig, load_image_text_dataset
from genloop.data.scenes import attribute_ids, heldout, parse, references, schema
from genloop.errors import InvalidInput
from genloop.tokenizers import WordTokenizer


@pytest.mark.parametrize("source,kind,width", [("shapes", "single", 4), ("shapes-pairs", "pairs", 5)])
def test_shapes_store_attributes_heldout_and_references(workspace, source, kind, width):
    ds = ImageTextDataConfig(source=source, max_images=300).prepare()
    assert isinstance(ds.tokenizer, WordTokenizer)  # the default: one token a word
    assert ds.schema == schema(kind) and ds.meta["attributes"] == schema(kind)
    assert ds.attributes is not None and ds.test_heldout is not None
    assert ds.attributes["train"].shape == (300, width) and ds.attributes["train"].dtype == np.int64
    assert ds.attributes["test"].shape == (1_000, width) and ds.test_heldout.shape == (1_000,)
    assert ds.test_heldout.sum() == 500 and ds.test_heldout.dtype == bool
    for split in ("train", "test"):
        for i in range(0, len(ds.captions[split]), 97):
            scene = parse(ds.captions[split][i])
            assert ds.attributes[split][i].tolist() == attribute_ids(scene)
            assert ds.references(split, i) == references(scene)
            if split == "test":
                assert bool(ds.test_heldout[i]) == heldout(scene)
    assert not any(heldout(parse(c)) for c in ds.captions["train"])
    # a caption is a handful of word tokens, decoded back exactly
    assert ds.tokenizer.decode(ds.train_captions[0].tolist()) == ds.captions["train"][0]
    assert len(ds.train_captions[0]) == len(ds.captions["train"][0].split())
    again = load_image_text_dataset(ds.path)
    assert again.hash == ds.hash and again.schema == ds.schema and again.captions == ds.captions
    assert np.array_equal(again.attributes["test"], ds.attributes["test"])
    assert np.array_equal(again.test_heldout, ds.test_heldout)
    assert again.references("test", 3) == ds.references("test", 3)


def _images(folder, n, size=8):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"im{i}.png")


def test_a_folder_with_captions_jsonl(workspace, tmp_path):
    root = tmp_path / "photos"
    _images(root / "sub", 10)
    (root / "extra.png").write_bytes((root / "sub" / "im0.png").read_bytes())
    rows = [{"file": f"sub/im{i}.png", "caption": f"Photo number {i}."} for i in range(6)]
    rows += [{"file": f"sub/im{i}.png", "captions": [f"picture {i}", f"image {i} again"]}
             for i in range(6, 10)]
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    ds = ImageTextDataConfig(source=str(root), test_fraction=0.2).prepare()
    assert ds.name == "photos" and len(ds.train) + len(ds.test) == 10 and len(ds.test) == 2
    assert ds.schema is None and ds.attributes is None and ds.test_heldout is None
    assert ds.meta["skipped"] == ["extra.png"]
    by_caption = {r.get("caption", (r.get("captions") or [""])[0]): r for r in rows}
    for split in ("train", "test"):
        for i, c in enumerate(ds.captions[split]):
            row = by_caption[c]
            assert ds.references(split, i) == ([row["caption"]] if "caption" in row else row["captions"])
    again = load_image_text_dataset(ds.path)
    assert again.hash == ds.hash
    assert again.references("train", 0) == ds.references("train", 0)


def test_a_coco_captions_file(workspace, tmp_path):
    _images(tmp_path / "coco" / "val", 6)
    doc = {"images": [{"id": 10 + i, "file_name": f"val/im{i}.png"} for i in range(6)],
           "annotations": [{"image_id": 10 + i, "caption": f"a caption {i} {k}"}
                           for i in range(5) for k in range(3)]}  # image 15 has none: left out
    path = tmp_path / "coco" / "captions_val.json"
    path.write_text(json.dumps(doc))
    ds = ImageTextDataConfig(source=str(path), test_fraction=0.2).prepare()
    assert ds.name == "captions_val" and len(ds.train) + len(ds.test) == 5
    for split in ("train", "test"):
        for i, c in enumerate(ds.captions[split]):
            n = c.split()[2]
            assert c == f"a caption {n} 0"  # the first caption trains
            assert ds.references(split, i) == [f"a caption {n} {k}" for k in range(3)]


@pytest.mark.parametrize("line,message", [
    ("not json", r"captions.jsonl:2: not valid JSON"),
    ('{"file": "sub/im0.png"}', r"captions.jsonl:2: give"),
    ('{"file": "sub/im1.png", "caption": ""}', r"captions.jsonl:2: a caption must be a non-empty"),
    ('{"file": "../x.png", "caption": "c"}', r"captions.jsonl:2: '../x.png' is outside"),
    ('{"file": "sub/none.png", "caption": "c"}', r"captions.jsonl:2: no image file 'sub/none.png'"),
    ('{"file": "sub/im0.png", "caption": "c"}', r"captions.jsonl:2: 'sub/im0.png' is listed twice"),
    ('{"file": "bad.png", "caption": "c"}', r"captions.jsonl:2: .*bad.png"),
])
def test_bad_captions_files_name_the_line(workspace, tmp_path, line, message):
    root = tmp_path / "photos"
    _images(root / "sub", 3)
    (root / "bad.png").write_bytes(b"not an image at all")
    (root / "x.png").write_bytes(b"")
    first = json.dumps({"file": "sub/im0.png", "caption": "c"})
    (root / "captions.jsonl").write_text(first + "\n" + line + "\n")
    with pytest.raises(InvalidInput, match=message):
        ImageTextDataConfig(source=str(root)).prepare()


def test_bad_coco_files_name_the_entry(workspace, tmp_path):
    _images(tmp_path / "c", 2)
    path = tmp_path / "c" / "caps.json"
    for doc, message in [
        ({"images": []}, "has \"images\" and \"annotations\" lists"),
        ({"images": [{"id": 1}], "annotations": []}, r"images\[0\]: an image needs"),
        ({"images": [{"id": 1, "file_name": "im0.png"}], "annotations": [{"image_id": 2, "caption": "c"}]},
         r"annotations\[0\]: no image has id 2"),
        ({"images": [{"id": 1, "file_name": "im0.png"}], "annotations": []}, "no image has a caption"),
    ]:
        path.write_text(json.dumps(doc))
        with pytest.raises(InvalidInput, match=message):
            ImageTextDataConfig(source=str(path)).prepare()
    path.write_text("{not json")
    with pytest.raises(InvalidInput, match="is not a JSON file"):
        ImageTextDataConfig(source=str(path)).prepare()


def test_shapes_captions_is_the_training_phrasings(workspace):
    from genloop.data.scenes import paraphrases
    from genloop.data.text import TextDataConfig

    ds = TextDataConfig(source="shapes-captions", tokenizer="word").prepare()
    tok = ds.tokenizer
    eos = tok.eos_id
    ids = ds.train.tolist()
    lines, start = [], 0
    for i, t in enumerate(ids):
        if t == eos:
            lines.append(tok.decode(ids[start:i]))
            start = i + 1
    assert len(lines) > 10_000 and tok.unk_id not in ids
    scenes_ = [parse(line) for line in lines]
    assert all(s is not None for s in scenes_)  # every line a phrasing of a scene
    assert not any(heldout(s) for s in scenes_)  # of a training scene
    assert {s.kind for s in scenes_} == {"single", "pairs"}
    some = scenes_[:300]
    assert not {p for s in some for p in paraphrases(s)} & set(lines)  # never a paraphrase
    assert any(line.startswith("there is") for line in lines)  # not just the canonical captions
