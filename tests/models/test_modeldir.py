"""ModelDir: a version's directory written and read through one type."""

from __future__ import annotations

import pytest
import torch

from genloop.errors import CorruptArtifact
from genloop.models.modeldir import ModelDir
from genloop.models.registry import get_family
from genloop.tokenizers import CharTokenizer


def test_every_part_round_trips(tmp_path):
    gpt = get_family("gpt")
    config = gpt.make_config("tiny", vocab_size=12, block_size=16)
    model = gpt.build(config).eval()
    tok = CharTokenizer.train(["abcdefghij"])
    d = ModelDir(tmp_path)
    d.write_network(gpt, config, model, ema=model)
    d.write_tokenizer(tok)
    d.write_labels(["cat", "dog"])
    d.write_chat_template({"user": "Q", "assistant": "A"})
    d.write_card("# card")
    d.write_record(recipe_yaml="name: x\n", metrics={"val_loss": 1.5},
                   lineage={"dataset_hash": "abc", "parent": None}, samples=["hello"])
    family, again_config, again = d.load()
    assert family is gpt and again_config == config and not again.training
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(again(x)[0], model(x)[0])
    fresh = gpt.build(config)
    d.load_weights_into(fresh, ema=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                  model.state_dict().values(), strict=True))
    assert d.tokenizer().to_json() == tok.to_json()
    assert d.labels() == ["cat", "dog"] and d.card() == "# card"
    assert d.chat_template() == {"user": "Q", "assistant": "A"}
    assert d.lineage() == {"dataset_hash": "abc", "parent": None}


def test_absent_parts_and_corrupt_files(tmp_path):
    d = ModelDir(tmp_path)
    assert d.tokenizer() is None and d.labels() is None and d.chat_template() is None
    assert d.card() == ""
    with pytest.raises(CorruptArtifact, match="lineage.json"):
        d.lineage()
    d.labels_file.write_text("{not json")
    with pytest.raises(CorruptArtifact, match="labels.json: unreadable"):
        d.labels()
    with pytest.raises(CorruptArtifact, match="config.json"):
        d.load()
