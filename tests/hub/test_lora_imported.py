"""LoRA on imported Hugging Face models (tiny GPT-2 and Llama layouts, random weights): a DPO
tune with adapters on the layout's default targets (GPT-2's Conv1D c_attn, c_proj, c_fc; Llama's
q/k/v/o and MLP projections) registers an adapter-only version that generates, moves the model
as DPO asks, and merges into a full ``hf`` version with equal logits; a GPT-2 target on a Llama
is one line, nothing registered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import genloop
from genloop.errors import RecipeError
from genloop.generation.reward import mean_logprobs
from genloop.hub.adapters import merge_version
from genloop.hub.imports import import_model
from genloop.models.modeldir import ModelDir
from genloop.store import Store
from genloop.training.tune import data_section, tune

from .conftest import save_model

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [("ROMEO:", " But soft, what light", " thy window refuse east"),
         ("JULIET:", " O Romeo, Romeo", " the sun deny art"),
         ("ROMEO: It is", " the east", " Romeo wherefore"),
         ("JULIET: Deny", " thy father", " breaks yonder")]
TARGETS = {"gpt2": ["c_attn", "c_proj", "c_fc"],
           "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def _margin(ref: str) -> float:
    model = genloop.load(ref)
    prompts = [p for p, _, _ in PAIRS]
    chosen = mean_logprobs(model.family, model.network, model.tokenizer, prompts,
                           [c for _, c, _ in PAIRS])
    rejected = mean_logprobs(model.family, model.network, model.tokenizer, prompts,
                             [r for _, _, r in PAIRS])
    return (sum(chosen) - sum(rejected)) / len(PAIRS)


@pytest.mark.parametrize("layout", ["gpt2", "llama"])
def test_lora_tunes_an_imported_model_and_merges(layout: str, tmp_path: Path, workspace: Path):
    base = import_model(save_model(tmp_path / layout, layout, chat=False), "base").ref
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n"
                             for p, c, r in PAIRS * 4), encoding="utf-8")
    result = tune(base, data_section("dpo", prefs), "dpo", steps=16, lr=1e-2, beta=0.5,
                  batch_size=4, lora={"rank": 4})
    assert result.model_ref == "base@2"
    directory = ModelDir(Path(Store().resolve("base@2").path))
    meta = directory.adapter()
    assert meta is not None and meta["base"] == base and not directory.weights_file.exists()
    assert meta["lora"]["target_modules"] == TARGETS[layout]
    assert 0 < result.metrics["trainable_parameters"] < 0.2 * result.metrics["parameters"]
    tuned = genloop.load("base@2")
    assert tuned.family.name == "hf"
    assert _margin("base@2") > _margin(base) + 0.15  # towards the chosen
    text = tuned.generate("ROMEO:", seed=4, max_new_tokens=8)[0].text
    merged = merge_version("base@2")
    assert merged.ref == "base@3" and merged.parent == "base@2"
    full = genloop.load("base@3")
    ids = torch.tensor([tuned.tokenizer.encode("ROMEO: But soft, what light")])
    with torch.no_grad():
        a = tuned.family.loss(tuned.network, (ids[:, :-1], ids[:, 1:]))["loss"]
        b = full.family.loss(full.network, (ids[:, :-1], ids[:, 1:]))["loss"]
    assert abs(float(a) - float(b)) < 1e-5
    assert full.generate("ROMEO:", seed=4, max_new_tokens=8)[0].text == text


def test_a_target_the_imported_layout_lacks_is_one_line(tmp_path: Path, workspace: Path):
    base = import_model(save_model(tmp_path / "llama", "llama", chat=False), "base").ref
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n"
                             for p, c, r in PAIRS), encoding="utf-8")
    with pytest.raises(RecipeError) as e:
        tune(base, data_section("dpo", prefs), "dpo", steps=2,
             lora={"rank": 4, "target_modules": ["c_attn"]})
    assert str(e.value).startswith("train.lora.target_modules: hf has no adaptable module 'c_attn' "
                                   "(its modules: ")
    assert "q_proj" in str(e.value) and "\n" not in str(e.value)
    assert [v.ref for v in Store().list_models()] == [base]
