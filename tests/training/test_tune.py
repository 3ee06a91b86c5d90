"""Tuning a registered model: the recipe ``tune_recipe`` writes (parent, name, the parent's model
section, tuning defaults), its one-line refusals, and real tunes of a tiny gpt with sft, dpo and
kto that register ``name@2`` with ``name@1`` as parent and move the objective."""

from __future__ import annotations

import json
import math
import random

import pytest

import genloop
from genloop.data.pairs import PairsDataConfig
from genloop.errors import RecipeError
from genloop.evaluation.pairs import evaluate_pairs
from genloop.models.modeldir import ModelDir
from genloop.training.loop import Progress
from genloop.training.tune import data_section, tune, tune_recipe

from ..conftest import _OBJECTS, _SUBJECTS, _VERBS, tiny_recipe_dict  # noqa: TID252

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def parent(workspace, corpus) -> str:
    return genloop.train(tiny_recipe_dict(corpus, name="poet", steps=40)).model_ref


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    """One small file per objective: the liked completion is a real sentence, the disliked one
    the same characters scrambled."""
    rng = random.Random(5)
    good = [(rng.choice(_SUBJECTS), f" {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}.") for _ in range(120)]
    bad = ["".join(rng.sample(c, len(c))) for _, c in good]
    return {
        "sft": _write(tmp_path / "sft.jsonl", [{"prompt": p, "completion": c} for p, c in good]),
        "dpo": _write(tmp_path / "dpo.jsonl", [{"prompt": p, "chosen": c, "rejected": b}
                                                for (p, c), b in zip(good, bad, strict=True)]),
        "kto": _write(tmp_path / "kto.jsonl",
                      [{"prompt": p, "completion": c if i % 2 else b, "label": bool(i % 2)}
                       for i, ((p, c), b) in enumerate(zip(good, bad, strict=True))]),
    }


def test_the_tune_recipe_fine_tunes_the_newest_version_under_its_name(parent, files):
    assert parent == "poet@1"
    recipe = tune_recipe("poet", data_section("sft", files["sft"]), "sft", epochs=2)
    base = ModelDir(genloop.load(parent).directory.path)
    assert recipe.parent == "poet@1" and recipe.name == "poet"
    assert recipe.model.model_dump() == genloop.load_recipe(str(base.recipe_file)).model.model_dump()
    assert recipe.train.objective == "sft" and recipe.train.lr == pytest.approx(1e-3 / 10)
    records = len(PairsDataConfig(source=files["sft"]).prepare(tokenizer=base.tokenizer()).train)
    assert recipe.train.steps == math.ceil(2 * records / 8)  # the parent's batch of 8
    assert recipe.train.eval_every == recipe.train.checkpoint_every == max(1, recipe.train.steps // 10)
    assert recipe.train.ema_decay is None and recipe.data.kind == "pairs"
    dpo = tune_recipe("poet@1", data_section("dpo", files["dpo"]), "dpo", steps=400, beta=0.3,
                      lr=1e-4, batch_size=4, seed=7, name="poet-dpo")
    assert (dpo.name, dpo.train.steps, dpo.train.beta, dpo.train.lr, dpo.train.batch_size,
            dpo.train.seed) == ("poet-dpo", 400, 0.3, 1e-4, 4, 7)
    assert dpo.train.eval_every == 40 and dpo.data.form == "paired"
    assert dpo.frozen()["train"]["beta"] == 0.3 and "beta" not in recipe.frozen()["train"]


def test_a_tune_the_objective_or_data_cannot_take_is_a_one_line_error(parent, files):
    cases = [
        ("sft", "sft", {"beta": 0.2}, "beta is a setting of dpo and kto"),
        ("kto", "dpo", {}, "'dpo' tunes on paired preferences; data.form is 'unpaired'"),
        ("dpo", "kto", {}, "'kto' tunes on unpaired preferences; data.form is 'paired'"),
        ("sft", "kto", {}, "data.kind is 'pairs'"),
        ("sft", "likelihood", {}, "cannot tune a model"),
        ("sft", "sft", {"steps": 5, "epochs": 1}, "not both"),
    ]
    for data, objective, kw, message in cases:
        with pytest.raises(RecipeError, match=message) as e:
            tune_recipe("poet", data_section(data, files[data]), objective, **kw)
        assert "\n" not in str(e.value)
    from genloop.errors import NotFound

    with pytest.raises(NotFound):
        tune_recipe("nobody", data_section("sft", files["sft"]), "sft")


@pytest.mark.parametrize("objective", ["sft", "dpo", "kto"])
def test_a_tune_registers_the_next_version_and_moves_its_objective(parent, files, objective):
    seen: list[Progress] = []
    result = tune(parent, data_section(objective, files[objective]), objective, steps=20, lr=3e-3,
                  on_progress=seen.append)
    assert result.model_ref == "poet@2"
    tuned = genloop.load("poet")
    assert ModelDir(tuned.directory.path).lineage()["parent"] == "poet@1"
    assert "## Tuning" in tuned.card and f"objective | `{objective}`" in tuned.card
    log = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [row for row in log if "val/loss" in row]
    if objective == "sft":
        base = genloop.load(parent)
        data = PairsDataConfig(source=files["sft"]).prepare(tokenizer=base.tokenizer)
        before = evaluate_pairs(base.family, base.network, data)["val_loss"]
        assert tuned.metrics["val_loss"] < 0.8 * before, (before, tuned.metrics["val_loss"])
        return
    # at the start the model is its parent: the loss is −log σ(0) = ln 2 (dpo), 1 − σ(0) = ½ (kto)
    start = math.log(2) if objective == "dpo" else 0.5
    assert val[-1]["val/loss"] < start - 0.05, val
    assert val[-1]["val/reward_accuracy"] > 0.6 and val[-1]["val/reward_margin"] > 0
    assert "train/reward_accuracy" in log[-1] or any("train/reward_accuracy" in r for r in log)
    if objective == "kto":
        assert all(row["val/kl"] >= 0 for row in val)
    evals = [p for p in seen if p.phase == "eval" and p.val_loss is not None]
    assert evals and "reward_accuracy" in evals[-1].metrics


def test_the_tuning_section_shows_the_datasets_origin():
    """The dataset meta's ``origin`` (how feedback became records) reaches the card, whether
    the meta holds it at the top or in its config."""
    from genloop.training.card import tuning_lines

    data = {"kind": "preferences", "form": "unpaired", "source": "f.jsonl"}
    recipe = genloop.load_recipe({"name": "poet", "parent": "poet@1", "data": data, "train": {
        "objective": "kto", "beta": 0.2, "undesirable_weight": 1.5}})
    origin = {"source_model": "poet@1", "threshold": 4, "counts": {"thumbs_up": 7, "ratings": 12}}
    meta = {"counts": {"records": {"train": 17, "val": 2}}, "origin": origin}
    lineage = {"parent": "poet@1", "dataset_hash": "ab" * 32}
    for given in (meta, {"counts": meta["counts"], "config": {"origin": origin}}):
        text = "\n".join(tuning_lines(recipe, given, lineage))
        assert "| parent | `poet@1` |" in text and "ab" * 32 in text
        assert "| objective | `kto`, beta 0.2, desirable_weight 1, undesirable_weight 1.5 |" in text
        assert "| records | 17 train, 2 validation |" in text
        assert "| threshold | 4 |" in text and "| source model | poet@1 |" in text
        assert '"thumbs_up": 7' in text
    assert "threshold" not in "\n".join(tuning_lines(recipe, {}, lineage))  # no origin, no rows
