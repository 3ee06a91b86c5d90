"""The record kinds (pairs, preferences) and image_text, stored through the one dataset folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genloop.data.folder import read_folder
from genloop.data.image_text import ImageTextDataConfig, load_image_text_dataset
from genloop.data.kinds import KINDS, get_kind
from genloop.data.pairs import PairsDataConfig, load_pairs_dataset
from genloop.data.preferences import PreferencesDataConfig, load_preferences_dataset
from genloop.errors import InvalidInput, RecipeError
from genloop.tokenizers import CharTokenizer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def qa_rows(n=60):
    return [{"q": f"what is {i} plus {i}?", "a": f"{2 * i}"} for i in range(n)]


def test_pairs_store_prompt_and_completion_with_eos_and_reuse(tmp_path, workspace):
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows())
    config = PairsDataConfig(source=str(src), prompt_field="q", completion_field="a")
    ds = config.prepare()
    assert ds.meta["kind"] == "pairs" and ds.name == "qa"
    assert len(ds.train) + len(ds.val) == 60 and len(ds.val) > 0
    tok = ds.tokenizer
    prompts, completions = ds.train.fields["prompt"], ds.train.fields["completion"]
    for i in range(len(ds.train)):
        p, c = tok.decode(prompts[i].tolist()), completions[i].tolist()
        assert c[-1] == tok.eos_id  # a completion ends where the model should stop
        n = int(p.split()[2])
        assert tok.decode(c[:-1]) == str(2 * n)
    again = load_pairs_dataset(ds.path)
    assert again.hash == ds.hash and config.prepare().path == ds.path  # reused, not rewritten
    assert sorted(p.name for p in ds.path.iterdir())[0] == "dataset.json"


def test_pairs_with_a_given_tokenizer_are_another_dataset(tmp_path, workspace):
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows())
    config = PairsDataConfig(source=str(src), prompt_field="q", completion_field="a")
    own = config.prepare()
    parent = CharTokenizer.train(["what is plus? 0123456789 abcdefghijklmnopqrstuvwxyz"])
    given = config.prepare(tokenizer=parent)
    assert given.hash != own.hash
    assert given.tokenizer.to_json() == parent.to_json()


@pytest.mark.parametrize("line,message", [
    ("not json", "line 2 is not valid JSON"),
    ('{"q": "x"}', "line 2 has no field 'a'"),
    ('{"q": "x", "a": 3}', "line 2 field 'a' is int"),
    ("[1, 2]", "line 2 is not a JSON object"),
])
def test_bad_records_name_the_line_and_write_nothing(tmp_path, workspace, line, message):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"q": "a", "a": "b"}) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=message):
        PairsDataConfig(source=str(src), prompt_field="q", completion_field="a").prepare()
    assert not (workspace / "datasets").exists() or not any((workspace / "datasets").rglob("*.npy"))


def test_preferences_paired_and_unpaired(tmp_path, workspace):
    paired = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(40)])
    ds = PreferencesDataConfig(source=str(paired)).prepare()
    assert ds.paired and set(ds.train.fields) == {"prompt", "chosen", "rejected"}
    assert ds.tokenizer.decode(ds.train.fields["chosen"][0].tolist()[:-1]).startswith("good")
    unpaired = write_jsonl(tmp_path / "kto.jsonl", [
        {"prompt": f"p{i}", "completion": f"c{i}", "label": i % 3 == 0} for i in range(40)])
    kto = PreferencesDataConfig(source=str(unpaired), form="unpaired").prepare()
    assert not kto.paired
    labels = np.concatenate([kto.train.labels, kto.val.labels])
    assert labels.dtype == np.int8 and labels.sum() == 14
    assert load_preferences_dataset(kto.path).hash == kto.hash
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": "c", "label": "yes"}])
    with pytest.raises(InvalidInput, match="'label' must be true or false"):
        PreferencesDataConfig(source=str(bad), form="unpaired").prepare()


def test_image_text_tokenizes_the_captions_of_shapes(workspace):
    ds = ImageTextDataConfig(source="shapes", max_images=200).prepare()
    assert ds.kind == "image_text" and len(ds.train) == 200
    assert len(ds.train_captions) == 200 and len(ds.test_captions) == len(ds.test)
    assert ds.tokenizer.decode(ds.train_captions[0].tolist()) == ds.captions["train"][0]
    again = load_image_text_dataset(ds.path)
    assert again.captions == ds.captions and again.hash == ds.hash
    assert np.array_equal(again.train, ds.train)


def test_image_text_needs_captions(workspace):
    with pytest.raises(InvalidInput, match="has no captions"):
        ImageTextDataConfig(source="digits").prepare()


def test_folder_refuses_another_kind_and_a_tampered_array(tmp_path, workspace):
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows())
    ds = PairsDataConfig(source=str(src), prompt_field="q", completion_field="a").prepare()
    from genloop.errors import CorruptArtifact, NotFound

    with pytest.raises(NotFound, match="not 'text'"):
        read_folder(ds.path, "text")
    np.save(ds.path / "train_prompt_ids.npy", np.zeros(3, dtype=np.uint16))
    with pytest.raises(CorruptArtifact, match="train_prompt_ids.npy"):
        read_folder(ds.path)


def test_every_kind_is_registered_with_its_data_section():
    for name, kind in KINDS.items():
        assert kind.name == name
        assert kind.config.model_fields["kind"].default == name
    with pytest.raises(RecipeError, match="unknown data kind 'video'"):
        get_kind("video")
