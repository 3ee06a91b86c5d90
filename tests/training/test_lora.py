"""LoRA on the one loop: a tiny gpt tuned with adapters registers an adapter-only version (the
adapters' tensors, the base ref and its weights' sha256) that loads over its base wherever a
version loads, trains only the adapters, merges into a full version with equal outputs, tunes
with sft and dpo, resumes bit-identically; bad input is one line and registers nothing."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

import genloop
from genloop.errors import CorruptArtifact, InvalidInput, RecipeError
from genloop.hub.adapters import merge_version
from genloop.models.modeldir import ModelDir
from genloop.store import Store
from genloop.training.loop import train
from genloop.training.recipe import load_recipe
from genloop.training.tune import data_section, tune

from ..conftest import _OBJECTS, _SUBJECTS, _VERBS, tiny_recipe_dict  # noqa: TID252

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def base(workspace, corpus) -> str:
    return genloop.train(tiny_recipe_dict(corpus, name="poet", steps=40)).model_ref


def lora_recipe(corpus, parent: str, steps: int = 20, **lora) -> dict:
    recipe = tiny_recipe_dict(corpus, name="poet", steps=steps, lr=3e-3)
    recipe["parent"] = parent
    recipe["train"]["lora"] = {"rank": 4, **lora}
    return recipe


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return out[0] if isinstance(out, tuple) else out


def test_a_lora_run_trains_only_the_adapters_and_registers_them_alone(base, corpus):
    base_dir = genloop.load(base).directory
    before = load_file(str(base_dir.weights_file))
    result = train(lora_recipe(corpus, base))
    assert result.model_ref == "poet@2"
    version = Store().resolve("poet@2")
    directory = ModelDir(version.path)
    assert version.parent == base
    assert directory.adapter_file.is_file() and not directory.weights_file.exists()
    meta = json.loads(directory.adapter_meta_file.read_text())
    assert meta["base"] == base and meta["base_sha256"] == base_dir.weights_sha256()
    assert meta["lora"] == {"rank": 4, "alpha": 8.0, "dropout": 0.0,
                            "target_modules": ["qkv", "proj", "fc"]}
    adapter = load_file(str(directory.adapter_file))
    n_embd, n_layer = 64, 2  # the tiny preset
    per_layer = 4 * ((n_embd + 3 * n_embd) + (n_embd + n_embd) + (n_embd + 4 * n_embd)
                     + (4 * n_embd + n_embd))  # r × (in + out) for qkv, attn.proj, fc, mlp.proj
    assert sum(t.numel() for t in adapter.values()) == n_layer * per_layer
    assert result.metrics["trainable_parameters"] == n_layer * per_layer
    assert any(k.endswith("lora_B.default.weight") and t.abs().sum() > 0 for k, t in adapter.items())
    # the base is untouched, and the adapter changed the model
    assert all(torch.equal(t, load_file(str(base_dir.weights_file))[k]) for k, t in before.items())
    tuned, parent = genloop.load("poet@2"), genloop.load(base)
    ids = torch.randint(0, tuned.config.vocab_size, (2, 16))
    assert not torch.allclose(logits(tuned.network, ids), logits(parent.network, ids))
    # the frozen recipe keeps the section; a recipe without one keeps its old hash
    assert load_recipe(str(directory.recipe_file)).train.lora.rank == 4
    plain = tiny_recipe_dict(corpus)
    assert load_recipe(plain).hash() == load_recipe(
        {**plain, "train": {**plain["train"], "lora": None}}).hash()
    assert "lora" not in load_recipe(plain).frozen()["train"]
    assert "| LoRA | rank 4, alpha 8" in directory.card()


def test_modules_to_save_train_whole_beside_the_adapters_and_are_stored_with_them(base, corpus):
    result = train(lora_recipe(corpus, base, modules_to_save=["wte", "ln_f"]))
    directory = ModelDir(Store().resolve(result.model_ref).path)
    adapter = load_file(str(directory.adapter_file))
    base_net = genloop.load(base).network
    # the embedding (tied to the head: stored once) and the final norm, trained and stored whole
    assert not torch.equal(adapter["wte.weight"], base_net.wte.weight.detach())
    assert "ln_f.weight" in adapter and "head.weight" not in adapter
    lora_only = sum(t.numel() for k, t in adapter.items() if "lora_" in k)
    assert result.metrics["trainable_parameters"] == (
        lora_only + base_net.wte.weight.numel() + base_net.ln_f.weight.numel())
    tuned = genloop.load(result.model_ref)
    assert torch.equal(tuned.network.wte.weight, adapter["wte.weight"])
    assert tuned.network.head.weight is tuned.network.wte.weight  # still tied after loading
    merged = merge_version(result.model_ref, "poet-merged").ref
    ids = torch.randint(0, tuned.config.vocab_size, (2, 16))
    assert torch.allclose(logits(genloop.load(merged).network, ids), logits(tuned.network, ids),
                          atol=1e-5)
    with pytest.raises(RecipeError, match="modules_to_save: gpt has no module 'embedding'"):
        train(lora_recipe(corpus, base, modules_to_save=["embedding"]))


def test_an_adapter_version_generates_and_merges_into_a_full_version_with_equal_outputs(base, corpus):
    train(lora_recipe(corpus, base))
    adapter = genloop.load("poet@2")
    text = adapter.generate("The cat", seed=3, max_new_tokens=24)[0].text
    merged = merge_version("poet@2", "poet-merged")
    assert merged.ref == "poet-merged@1" and merged.parent == "poet@2"
    directory = ModelDir(merged.path)
    assert directory.weights_file.is_file() and not directory.is_adapter
    assert directory.lineage()["merged_from"] == "poet@2"
    loaded = genloop.load("poet-merged@1")
    ids = torch.randint(0, loaded.config.vocab_size, (4, 32))
    with torch.no_grad():
        assert torch.allclose(logits(loaded.network, ids), logits(adapter.network, ids), atol=1e-5)
    assert loaded.generate("The cat", seed=3, max_new_tokens=24)[0].text == text
    assert "merged into full weights" in directory.card()
    with pytest.raises(InvalidInput, match="holds full weights, not an adapter"):
        merge_version("poet-merged@1")


def test_lora_bad_input_is_one_line_and_registers_nothing(base, corpus):
    store = Store()
    with pytest.raises(RecipeError) as e:
        train(lora_recipe(corpus, base, target_modules=["qkv", "q_proj"]))
    assert str(e.value) == ("train.lora.target_modules: gpt has no adaptable module 'q_proj' "
                            "(its modules: wte, wpe, qkv, proj, fc, head)")
    with pytest.raises(RecipeError, match="train.lora tunes a registered version"):
        recipe = lora_recipe(corpus, base)
        del recipe["parent"]
        train(recipe)
    with pytest.raises(RecipeError, match="rank"):
        load_recipe(lora_recipe(corpus, base, rank=0))
    assert [v.ref for v in store.list_models()] == [base]
    # an adapter applied to other weights than its base's: refused on load and on merge
    train(lora_recipe(corpus, base))
    base_dir = ModelDir(store.resolve(base).path)
    tensors = load_file(str(base_dir.weights_file))
    tensors = {k: t + 0.01 for k, t in tensors.items()}
    from safetensors.torch import save_file

    save_file(tensors, str(base_dir.weights_file))
    with pytest.raises(CorruptArtifact, match="adapter of poet@1 applied to a different base"):
        genloop.load("poet@2")
    with pytest.raises(CorruptArtifact, match="applied to a different base"):
        merge_version("poet@2")
    assert sorted(v.ref for v in store.list_models()) == [base, "poet@2"]
    # an adapter directory read on its own names its base instead of loading half a model
    with pytest.raises(CorruptArtifact, match="an adapter of poet@1; load it through the store"):
        ModelDir(store.resolve("poet@2").path).load()


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_sft_and_dpo_tune_with_lora_and_a_lora_of_a_lora_stacks(base, tmp_path):
    rng = random.Random(5)
    good = [(rng.choice(_SUBJECTS), f" {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}.") for _ in range(60)]
    bad = ["".join(rng.sample(c, len(c))) for _, c in good]
    sft = _write(tmp_path / "sft.jsonl", [{"prompt": p, "completion": c} for p, c in good])
    dpo = _write(tmp_path / "dpo.jsonl", [{"prompt": p, "chosen": c, "rejected": b}
                                          for (p, c), b in zip(good, bad, strict=True)])
    first = tune(base, data_section("sft", sft), "sft", steps=12, lora={"rank": 4})
    assert first.model_ref == "poet@2" and ModelDir(Store().resolve("poet@2").path).is_adapter
    second = tune("poet@2", data_section("dpo", dpo), "dpo", steps=12, lora={"rank": 2})
    assert second.model_ref == "poet@3" and second.metrics["preference_accuracy"] >= 0.0
    meta = ModelDir(Store().resolve("poet@3").path).adapter()
    assert meta is not None and meta["base"] == "poet@2"  # an adapter over an adapter
    assert meta["base_sha256"] == ModelDir(Store().resolve("poet@2").path).weights_sha256()
    assert genloop.load("poet@3").generate("The cat", seed=1, max_new_tokens=8)[0].text is not None
    merged = merge_version("poet@3")  # folds both adapters in: the chain becomes one network
    ids = torch.randint(0, 20, (2, 16))
    with torch.no_grad():
        assert torch.allclose(logits(genloop.load(merged.ref).network, ids),
                              logits(genloop.load("poet@3").network, ids), atol=1e-5)


def test_a_resumed_lora_run_ends_where_an_uninterrupted_one_does(base, corpus):
    from genloop.training.loop import Progress, StopTraining

    whole = train(lora_recipe(corpus, base, steps=12) | {"name": "whole"})

    def stop_at_six(p: Progress) -> None:
        if p.phase == "checkpoint" and p.step == 6:
            raise StopTraining

    recipe = lora_recipe(corpus, base, steps=12) | {"name": "halves"}
    recipe["train"]["checkpoint_every"] = 6
    with pytest.raises(StopTraining):
        train(recipe, on_progress=stop_at_six)
    run = Store().list_runs()[0]
    resumed = train(None, resume=run.id)
    a = load_file(str(ModelDir(Store().resolve(whole.model_ref).path).adapter_file))
    b = load_file(str(ModelDir(Store().resolve(resumed.model_ref).path).adapter_file))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
