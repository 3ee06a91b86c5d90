"""What extending genloop costs, shown by extensions registered from here, the test suite.

- a family: one file (here: ``UNIGRAM`` below) and one line in ``models/registry.py``'s FAMILIES;
- an objective: one function and one line in ``training/objectives.py``'s OBJECTIVES;
- a data kind: one piece per layer it reaches (here all four in this file) and one line in each
  layer's registry: ``data/kinds.py`` KINDS, ``training/kinds.py`` BATCHES,
  ``evaluation/kinds.py`` EVALUATIONS, ``generation/kinds.py`` GENERATES.
Each toy then trains through the real loop, registers, and generates through the real faces'
core — nothing else in genloop was told about them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import genloop
from genloop.data.folder import read_folder, stored, write_folder
from genloop.data.kinds import KINDS, DataKind
from genloop.data.text import TextDataConfig, TextDataset
from genloop.errors import RecipeError
from genloop.evaluation import text as text_evaluation
from genloop.evaluation.kinds import EVALUATIONS, Evaluation
from genloop.generation.kinds import GENERATES, TEXT
from genloop.models.family import Family, SequenceBatch, TextModelConfig, TokenRequest
from genloop.models.registry import FAMILIES
from genloop.models.sampling import sample_next
from genloop.tokenizers import CharTokenizer
from genloop.training.batches import TextBatches
from genloop.training.kinds import BATCHES
from genloop.training.objectives import OBJECTIVES, Objective

from .conftest import tiny_recipe_dict

pytestmark = pytest.mark.usefixtures("one_thread")

# --- a toy family: a unigram language model (one logit per token, no context) ---------------


class Unigram(torch.nn.Module):
    def __init__(self, config: TextModelConfig):
        super().__init__()
        self.config = config
        self.logits = torch.nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*idx.shape, -1)  # (B, T, V)


def unigram_loss(model: Unigram, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    x, y = batch
    return {"loss": F.cross_entropy(model(x).flatten(0, 1), y.flatten())}


def unigram_log_probs(model: Unigram, batch: SequenceBatch) -> torch.Tensor:
    logp = model(batch.inputs).log_softmax(-1).gather(-1, batch.targets[..., None]).squeeze(-1)
    return torch.where(batch.mask, logp, 0.0).sum(dim=1)


@torch.no_grad()
def unigram_sample(model: Unigram, request: TokenRequest, generator: Any) -> Iterator[torch.Tensor]:
    logits = model.logits.expand(request.prompt_ids.size(0), -1)
    for _ in range(request.max_new_tokens):
        yield sample_next(logits, generator, temperature=request.temperature, top_k=request.top_k)


UNIGRAM = Family(
    name="unigram", kinds=("text", "shouting"), conditioning="none", config=TextModelConfig,
    presets={"tiny": {"block_size": 32}}, build=Unigram, loss=unigram_loss,
    log_probs=unigram_log_probs, sample=unigram_sample, streaming=True,
    description="one logit per token",
)


@pytest.fixture
def with_unigram(monkeypatch):
    monkeypatch.setitem(FAMILIES, "unigram", UNIGRAM)  # the one registry line


def test_a_new_family_is_one_file_and_one_registry_line(with_unigram, workspace, corpus):
    result = genloop.train(tiny_recipe_dict(corpus, name="uni", family="unigram", steps=40,
                                            lr=0.1, warmup_steps=1))
    assert result.model_ref == "uni@1"
    model = genloop.load("uni")
    assert model.family is UNIGRAM and model.metrics["val_loss"] < np.log(model.tokenizer.vocab_size)
    a = model.generate("The ", seed=3, max_new_tokens=20, num_samples=2)
    b = model.generate("The ", seed=3, max_new_tokens=20, num_samples=2)
    assert [o.text for o in a] == [o.text for o in b] and len(a[0].text) > 0
    assert "".join(model.stream("The ", seed=4, max_new_tokens=10)) == \
        model.generate("The ", seed=4, max_new_tokens=10)[0].text


# --- a toy objective: likelihood plus an L2 penalty on the weights ----------------------------


def likelihood_l2(family: Family, model: torch.nn.Module, batch: Any,
                  reference: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    l2 = sum((p.float() ** 2).sum() for p in model.parameters())
    return {"loss": family.loss(model, batch)["loss"] + 1e-2 * l2, "l2": l2.detach()}


def test_a_new_objective_is_one_function_and_one_registry_line(with_unigram, monkeypatch, workspace,
                                                               corpus):
    monkeypatch.setitem(OBJECTIVES, "likelihood_l2",
                        Objective(likelihood_l2, "likelihood + 0.01·Σw²"))  # the one line
    plain = genloop.train(tiny_recipe_dict(corpus, name="plain", family="unigram", steps=40, lr=0.1))
    penalised = genloop.train(tiny_recipe_dict(corpus, name="l2", family="unigram", steps=40, lr=0.1,
                                               objective="likelihood_l2"))
    norm = {r.model_ref: float(genloop.load(r.model_ref).network.logits.detach().norm())
            for r in (plain, penalised)}
    assert norm["l2@1"] < 0.9 * norm["plain@1"]  # the penalty shrank the weights
    card = genloop.load("l2").card
    assert "objective: likelihood_l2" in card


# --- a toy data kind: "shouting" — a text corpus, upper-cased ---------------------------------


class ShoutingDataConfig(TextDataConfig):
    kind: Literal["shouting"] = "shouting"  # type: ignore[assignment]

    def prepare(self, progress: Callable[[str], None] | None = None, tokenizer: Any = None) -> TextDataset:
        text = TextDataConfig(**self.model_dump(exclude={"kind"})).prepare(progress)  # the documents
        train = text.tokenizer.decode(np.asarray(text.train).tolist()).upper()
        val = text.tokenizer.decode(np.asarray(text.val).tolist()).upper()
        tok = CharTokenizer.train([train])
        digest = f"{text.hash[:48]}5b0a7"  # the corpus, shouted
        folder = stored("shouting", digest) or write_folder(
            {"kind": "shouting", "name": "shouting", "hash": digest, "source": self.source},
            {"train_ids": np.asarray(tok.encode(train), np.uint16),
             "val_ids": np.asarray(tok.encode(val), np.uint16)}, tok)
        return load_shouting(folder.path)


def load_shouting(path: str | os.PathLike[str]) -> TextDataset:
    f = read_folder(path, "shouting")
    return TextDataset(f.name, f.hash, f.path, f.tokenizer, f.arrays["train_ids"], f.arrays["val_ids"],
                       f.meta)


@pytest.fixture
def with_shouting(monkeypatch, with_unigram):
    # one line in each layer's registry: data, training, evaluation, generation
    monkeypatch.setitem(KINDS, "shouting", DataKind("shouting", ShoutingDataConfig, load_shouting,
                                                    "an upper-cased text corpus"))
    monkeypatch.setitem(BATCHES, "shouting", TextBatches)
    monkeypatch.setitem(EVALUATIONS, "shouting", Evaluation(text_evaluation.EvalConfig,
                                                            text_evaluation.evaluate))
    monkeypatch.setitem(GENERATES, "shouting", TEXT)


def test_a_new_data_kind_is_one_piece_per_layer_and_one_line_each(with_shouting, workspace, corpus):
    recipe = tiny_recipe_dict(corpus, name="loud", family="unigram", steps=40, lr=0.1)
    recipe["data"]["kind"] = "shouting"
    result = genloop.train(recipe)
    model = genloop.load(result.model_ref)
    assert model.family is UNIGRAM
    text = "".join(o.text for o in model.generate("", seed=1, max_new_tokens=200, num_samples=4))
    letters = [c for c in text if c.isalpha()]
    assert letters and all(c.isupper() for c in letters)  # it learnt the shouted corpus
    assert "`shouting`: an upper-cased text corpus" in model.card
    with pytest.raises(RecipeError, match="is shouting data"):
        recipe["model"]["family"] = "gpt"
        genloop.train(recipe)
