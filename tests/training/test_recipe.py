"""Recipes: YAML, --set overrides, errors that name the key, built-ins, the hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from genloop.errors import RecipeError
from genloop.training.recipe import builtin_recipes, load_recipe

YAML = """\
name: poems
data:
  source: poems.txt
  tokenizer: char
model:
  family: gpt
  preset: tiny
  config:
    block_size: 32
train:
  steps: 40
  lr: 2.0e-3
eval:
  prompt: "The "
"""


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(YAML)
    return p


def test_yaml_load(recipe_file: Path) -> None:
    r = load_recipe(recipe_file)
    assert r.name == "poems"
    assert r.data.source == "poems.txt"
    assert r.train.steps == 40 and r.train.lr == pytest.approx(2e-3)
    assert r.train.batch_size == 12  # defaults fill what the file leaves out
    assert r.model_config_for({"vocab_size": 50}).block_size == 32
    assert r.eval.prompt == "The "
    assert load_recipe(r.frozen()) == r  # the resolved recipe round-trips


@pytest.mark.parametrize(("assignment", "get", "expected"), [
    ("train.steps=7", lambda r: r.train.steps, 7),
    ("train.lr=0.0005", lambda r: r.train.lr, 0.0005),
    ("train.lr=3e-4", lambda r: r.train.lr, 3e-4),
    ("train.tensorboard=false", lambda r: r.train.tensorboard, False),
    ("train.compile=true", lambda r: r.train.compile, True),
    ("train.betas=[0.8, 0.95]", lambda r: r.train.betas, (0.8, 0.95)),
    ("model.config.n_embd=32", lambda r: r.model_config_for({"vocab_size": 50}).n_embd, 32),
    ("model.config.block_size=16", lambda r: r.model_config_for({"vocab_size": 50}).block_size, 16),
    ("model.preset=small", lambda r: r.model_config_for({"vocab_size": 50}).n_layer, 4),
    ("name=other", lambda r: r.name, "other"),
    ("eval.prompt=ROMEO:", lambda r: r.eval.prompt, "ROMEO:"),  # text, not a YAML mapping
    ("eval.prompt=# title", lambda r: r.eval.prompt, "# title"),  # text, not a YAML comment
    ("train.min_lr=null", lambda r: r.train.min_lr, None),
])
def test_overrides(recipe_file: Path, assignment: str, get, expected) -> None:
    value = get(load_recipe(recipe_file, [assignment]))
    assert value == expected and type(value) is type(expected)


def test_overrides_apply_in_order_and_create_sections() -> None:
    r = load_recipe(None, ["data.source=a.txt", "train.steps=5", "train.steps=6"])
    assert r.data.source == "a.txt" and r.train.steps == 6


@pytest.mark.parametrize("key", [
    "stepz", "train.stepz", "data.sourcee", "eval.foo", "model.foo", "model.config.n_embdd",
])
def test_unknown_key_is_named(recipe_file: Path, key: str) -> None:
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe_file, [f"{key}=1"])
    assert str(e.value) == f"{key}: unknown key"


def test_unknown_key_in_yaml_file_is_named(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(YAML.replace("  lr: 2.0e-3", "  learning_rate: 2.0e-3"))
    with pytest.raises(RecipeError, match=r"train\.learning_rate: unknown key"):
        load_recipe(p)


@pytest.mark.parametrize("assignment", [
    "train.steps=abc", "train.lr=fast", "train.tensorboard=maybe", "model.config.n_layer=abc",
    "train.steps=0", "train.precision=fp8",
])
def test_wrong_type_names_the_key(recipe_file: Path, assignment: str) -> None:
    key = assignment.split("=")[0]
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe_file, [assignment])
    assert str(e.value).startswith(key + ":")
    assert "\n" not in str(e.value)


def test_unknown_preset_and_family_are_named(recipe_file: Path) -> None:
    with pytest.raises(RecipeError, match="gigantic.*tiny"):  # names the known ones too
        load_recipe(recipe_file, ["model.preset=gigantic"])
    with pytest.raises(RecipeError, match="transformerxl.*gpt"):
        load_recipe(recipe_file, ["model.family=transformerxl"])


@pytest.mark.parametrize("bad", ["train.steps", "=3", "train..steps=3"])
def test_malformed_override(recipe_file: Path, bad: str) -> None:
    with pytest.raises(RecipeError):
        load_recipe(recipe_file, [bad])


def test_setting_below_a_value_is_an_error(recipe_file: Path) -> None:
    with pytest.raises(RecipeError, match="train.steps"):
        load_recipe(recipe_file, ["train.steps.x=1"])


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("train: {steps: [\n")
    with pytest.raises(RecipeError, match="YAML"):
        load_recipe(tmp_path / "broken.yaml")


def test_builtin_recipes_exist() -> None:
    assert {"quickstart", "shakespeare-char"} <= set(builtin_recipes())


@pytest.mark.parametrize("name", sorted(builtin_recipes()))
def test_builtin_recipe_loads(name: str) -> None:
    r = load_recipe(name)
    assert r.name and r.data.source
    if r.data.kind == "text":
        assert r.model_config_for({"vocab_size": 100}).block_size >= 1
    elif r.data.kind == "pairs":  # text models on records: their eval section is the pairs one
        assert r.model_config_for({"vocab_size": 100}).block_size >= 1 and r.eval.kind == "pairs"
    elif r.data.kind == "image_text":  # text ↔ image: shapes and the vocabulary from the data
        config = r.model_config_for({"channels": 3, "image_size": 32, "num_classes": 5,
                                     "vocab_size": 50})
        assert config.image_size == 32 and r.eval.kind == "image_text"
    else:  # image recipes take their shapes from the data; their eval section is the image one
        config = r.model_config_for({"channels": 1, "image_size": 28, "num_classes": 10})
        assert config.image_size == 28 and r.eval.kind == "images"
    assert load_recipe(builtin_recipes()[name]) == r  # by name or by path


def test_hash_stable_and_sensitive(recipe_file: Path, tmp_path: Path) -> None:
    a = load_recipe(recipe_file)
    assert a.hash() == load_recipe(recipe_file).hash()
    assert len(a.hash()) == 64
    # the same recipe written differently (key order, defaults spelled out) hashes the same
    reordered = tmp_path / "reordered.yaml"
    reordered.write_text("train: {lr: 0.002, steps: 40, batch_size: 12}\n"
                         "eval: {prompt: 'The '}\n"
                         "model: {config: {block_size: 32}, preset: tiny}\n"
                         "data: {tokenizer: char, source: poems.txt}\nname: poems\n")
    assert load_recipe(reordered).hash() == a.hash()
    assert load_recipe(a.frozen()).hash() == a.hash()
    for change in ["train.seed=1", "train.lr=0.0021", "model.config.block_size=33",
                   "data.source=other.txt", "eval.prompt=X", "name=poems2"]:
        assert load_recipe(recipe_file, [change]).hash() != a.hash(), change
