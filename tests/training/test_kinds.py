"""The record kinds on the one loop: supervised fine-tuning on ``pairs`` and DPO on
``preferences``, each from a parent model whose tokenizer the data is prepared with."""

from __future__ import annotations

import json
import random

import pytest

import genloop
from genloop.data.pairs import PairsDataConfig
from genloop.data.preferences import PreferencesDataConfig
from genloop.evaluation.pairs import evaluate_pairs
from genloop.evaluation.preferences import evaluate_preferences
from genloop.models.modeldir import ModelDir

from ..conftest import _OBJECTS, _SUBJECTS, _VERBS, tiny_recipe_dict  # noqa: TID252

pytestmark = pytest.mark.usefixtures("one_thread")


def _sentences(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(rng.choice(_SUBJECTS), f" {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}.") for _ in range(n)]


@pytest.fixture
def parent(workspace, corpus) -> str:
    return genloop.train(tiny_recipe_dict(corpus, name="base", steps=60)).model_ref


def _tune_recipe(name: str, data: dict, parent: str, steps: int = 40, **train) -> dict:
    recipe = tiny_recipe_dict("unused", name=name, steps=steps, lr=3e-3, warmup_steps=2, **train)
    recipe.update(data=data, parent=parent, eval={})
    return recipe


def test_pairs_fine_tune_learns_the_completions_of_its_parent(parent, tmp_path):
    rows = [{"prompt": p, "completion": c} for p, c in _sentences(300, seed=1)]
    # the completions always end the same way: a tuned model must learn it from the pairs
    rows = [{**r, "completion": r["completion"] + " Yes."} for r in rows]
    src = tmp_path / "sft.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = genloop.train(_tune_recipe("sft", {"kind": "pairs", "source": str(src)}, parent))
    assert result.model_ref == "sft@1"
    tuned, base = genloop.load("sft"), genloop.load(parent)
    assert ModelDir(tuned.directory.path).lineage()["parent"] == parent
    assert tuned.tokenizer.to_json() == base.tokenizer.to_json()  # data tokenized as the parent
    data = PairsDataConfig(source=str(src)).prepare(tokenizer=base.tokenizer)
    before = evaluate_pairs(base.family, base.network, data)["val_loss"]
    after = evaluate_pairs(tuned.family, tuned.network, data)["val_loss"]
    assert tuned.metrics["val_loss"] == pytest.approx(after, rel=1e-4)  # the card's figure
    assert after < 0.8 * before, (before, after)
    out = tuned.generate(rows[0]["prompt"], seed=0, temperature=0.0, max_new_tokens=40)[0]
    assert out.text.rstrip().endswith("Yes.") or out.finish_reason == "stop"


def test_dpo_prefers_the_chosen_completions_over_its_parent(parent, tmp_path):
    rng = random.Random(2)
    rows = []
    for p, c in _sentences(300, seed=3):
        scrambled = "".join(rng.sample(c, len(c)))
        rows.append({"prompt": p, "chosen": c, "rejected": scrambled})
    src = tmp_path / "prefs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    # the recipe names no objective: preferences train with DPO against the frozen parent
    result = genloop.train(_tune_recipe("dpo", {"kind": "preferences", "source": str(src)}, parent,
                                        steps=30))
    tuned, base = genloop.load(result.model_ref), genloop.load(parent)
    data = PreferencesDataConfig(source=str(src)).prepare(tokenizer=base.tokenizer)
    before = evaluate_preferences(base.family, base.network, data)
    after = evaluate_preferences(tuned.family, tuned.network, data)
    assert tuned.metrics["preference_accuracy"] == pytest.approx(after["preference_accuracy"])
    assert after["preference_margin_nats"] > before["preference_margin_nats"] + 1.0
    assert after["preference_accuracy"] >= before["preference_accuracy"]
    assert "objective" not in tuned.card or "dpo" in tuned.card


def test_dpo_needs_a_parent(workspace, tmp_path):
    src = tmp_path / "prefs.jsonl"
    src.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n", encoding="utf-8")
    recipe = tiny_recipe_dict(str(src), name="orphan")
    recipe.update(data={"kind": "preferences", "source": str(src)}, eval={})
    from genloop.errors import RecipeError

    with pytest.raises(RecipeError, match="set parent"):
        genloop.train(recipe)
