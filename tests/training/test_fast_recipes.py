"""The time-to-quality recipes (shakespeare-fast, tang-poems-fast): built-in, valid, and they take
the overrides bench/time_to_quality.py puts on them."""

from __future__ import annotations

import pytest
import torch

from genloop.models.registry import get_family
from genloop.training.recipe import builtin_recipes, load_recipe

FAST = {"shakespeare-fast": ("tinyshakespeare", "shakespeare-char"),
        "tang-poems-fast": ("tang-poems", "tang-poems")}


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_recipe_is_builtin_and_builds(name: str) -> None:
    source, plain = FAST[name]
    assert name in builtin_recipes()
    r = load_recipe(name)
    assert (r.name, r.data.source, r.data.tokenizer, r.model.family) == (name, source, "char", "gpt")
    config = r.model_config_for({"vocab_size": 7000})
    with torch.device("meta"):  # the network it describes builds (no memory, no weights)
        model = get_family("gpt").build(config)
    assert sum(p.numel() for p in model.parameters()) > 0
    # its own recipe, not a renamed copy of the plain one
    assert r.hash() != load_recipe(plain, [f"name={name}"]).hash()


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_recipe_takes_the_bench_overrides(name: str) -> None:
    from bench.time_to_quality import BENCH_SET

    r = load_recipe(name, [*BENCH_SET, "train.steps=1234", "train.time_limit_s=420.5"])
    assert (r.train.steps, r.train.time_limit_s, r.train.tensorboard) == (1234, 420.5, False)
    with pytest.raises(Exception, match="train.steps"):
        load_recipe(name, ["train.steps=0"])
