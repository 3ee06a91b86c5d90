"""Every objective's recipe on an imported model (a tiny GPT-2 layout, random weights): likelihood
on a text corpus (``genloop train`` with the imported version as parent), DPO and KTO on
preferences (``genloop tune``): each registers the next version and moves the model the way its
objective asks. A few steps each, so a few seconds per objective."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import genloop
from genloop.generation.reward import mean_logprobs
from genloop.hub.imports import import_model
from genloop.models.modeldir import ModelDir
from genloop.store import Store
from genloop.training.tune import data_section, tune

from ..conftest import run_cli  # noqa: TID252
from .conftest import TEXT, save_model

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [("ROMEO:", " But soft, what light", " thy window refuse east"),
         ("JULIET:", " O Romeo, Romeo", " the sun deny art"),
         ("ROMEO: It is", " the east", " Romeo wherefore"),
         ("JULIET: Deny", " thy father", " breaks yonder")]
TRAIN = {"batch_size": 4, "warmup_steps": 0, "eval_batches": 1, "log_every": 1,
         "tensorboard": False, "threads": 1}


@pytest.fixture
def base(tmp_path: Path, workspace: Path) -> str:
    return import_model(save_model(tmp_path / "gpt2", "gpt2", chat=False), "base").ref


def _preferences(tmp_path: Path) -> Path:
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n"
                            for p, c, r in PAIRS * 4), encoding="utf-8")
    return path


def _margin(ref: str) -> float:
    """Mean over PAIRS of log π(chosen) − log π(rejected) per token, under ``ref`` (the records
    it was tuned on: what the objective asks is that it moves towards the chosen)."""
    model = genloop.load(ref)
    prompts = [p for p, _, _ in PAIRS]
    chosen = mean_logprobs(model.family, model.network, model.tokenizer, prompts,
                           [c for _, c, _ in PAIRS])
    rejected = mean_logprobs(model.family, model.network, model.tokenizer, prompts,
                             [r for _, _, r in PAIRS])
    return sum(chosen) / len(PAIRS) - sum(rejected) / len(PAIRS)


def test_likelihood_on_a_corpus_from_an_imported_parent(base: str, tmp_path: Path):
    corpus = tmp_path / "romeo.jsonl"  # documents: each sentence of TEXT, a few times over
    sentences = [s.strip() + "." for s in TEXT.split(".") if s.strip()]
    corpus.write_text("".join(json.dumps({"text": f"{s} ({i})"}) + "\n"
                              for i, s in enumerate(sentences)), encoding="utf-8")
    frozen = yaml.safe_load(ModelDir(Path(Store().resolve(base).path)).recipe_file.read_text())
    recipe = {"name": "adapted", "parent": base, "data": {"source": str(corpus), "val_fraction": 0.25},
              "model": frozen["model"], "eval": {"num_samples": 1, "sample_tokens": 8,
                                                 "full_validation": False},
              "train": {**TRAIN, "steps": 12, "lr": 3e-3, "eval_every": 12,
                        "checkpoint_every": 12}}
    assert genloop.train(recipe).model_ref == "adapted@1"  # what `genloop train RECIPE` runs
    tuned, parent = genloop.load("adapted"), genloop.load(base)
    assert Store().resolve("adapted@1").parent == base and tuned.family.name == "hf"
    ids = torch.tensor([parent.tokenizer.encode(TEXT)[:33]])
    with torch.no_grad():
        before = parent.family.loss(parent.network, (ids[:, :-1], ids[:, 1:]))["loss"]
        after = tuned.family.loss(tuned.network, (ids[:, :-1], ids[:, 1:]))["loss"]
    assert float(after) < float(before) - 0.5, (float(before), float(after))


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_preference_objectives_tune_an_imported_model(base: str, tmp_path: Path, objective: str):
    prefs = _preferences(tmp_path)
    if objective == "dpo":
        data = prefs
    else:  # KTO: each chosen completion is desirable, each rejected one undesirable
        data = tmp_path / "kto.jsonl"
        data.write_text("".join(json.dumps({"prompt": p, "completion": c, "label": good}) + "\n"
                                for p, chosen, rejected in PAIRS * 4
                                for c, good in ((chosen, True), (rejected, False))),
                        encoding="utf-8")
    result = tune(base, data_section(objective, data), objective, steps=8, lr=3e-3, beta=0.5,
                  batch_size=4)
    assert result.model_ref == "base@2" and Store().resolve("base@2").parent == base
    assert genloop.load("base@2").family.name == "hf"
    before, after = _margin(base), _margin("base@2")
    assert after > before + 0.25, (objective, before, after)


def test_the_tune_command_runs_kto_on_an_imported_model(base: str, tmp_path: Path,
                                                       workspace: Path):
    data = tmp_path / "liked.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c, "label": True}) + "\n"
                            + json.dumps({"prompt": p, "completion": r, "label": False}) + "\n"
                            for p, c, r in PAIRS), encoding="utf-8")
    r = run_cli(["tune", "base", "--data", str(data), "--objective", "kto", "--steps", "2"],
                workspace)
    assert r.returncode == 0, r.stderr
    assert Store().resolve("base@2").parent == base
