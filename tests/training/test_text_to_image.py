"""Text → image on the one loop: image_text batches (captions padded and masked), a tiny
text-diffusion trained, registered with its tokenizer, drawn from a sentence (unknown words
reported and recorded), replayed from its record; bad prompts refused."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from genloop.data.image_text import ImageTextDataConfig
from genloop.errors import InvalidInput
from genloop.generation.service import ImageModel, load, replay
from genloop.store import Store
from genloop.training.kinds import batches_for
from genloop.training.loop import train
from genloop.training.recipe import load_recipe

from ..conftest import tiny_image_recipe_dict  # noqa: TID252

DATA = {"kind": "image_text", "source": "shapes", "max_images": 300, "image_size": 16}
ENCODER = {"hidden": 16, "layers": 1, "heads": 2, "max_tokens": 16}  # word captions: ~9 tokens


def _recipe(steps: int = 12, **config: Any) -> dict[str, Any]:
    recipe = tiny_image_recipe_dict("text-diffusion", name="tiny-t2i", steps=steps)
    recipe["data"] = dict(DATA)
    recipe["model"] = {"family": "text-diffusion", "preset": "tiny",
                       "config": {"text_encoder": ENCODER, **config}}
    return recipe


def test_image_text_batches_pad_captions_and_are_pure_functions_of_the_step(workspace):
    dataset = ImageTextDataConfig(**{k: v for k, v in DATA.items() if k != "kind"}).prepare()
    batches = batches_for("image_text", dataset)
    fill = batches.fill()
    assert fill["vocab_size"] == dataset.tokenizer.vocab_size and fill["image_size"] == 16
    config = load_recipe(_recipe()).model_config_for(fill)
    a = batches.train_batch(config, 3, 0, seed=0, rank=0, batch=8, device=torch.device("cpu"))
    b = batches.train_batch(config, 3, 0, seed=0, rank=0, batch=8, device=torch.device("cpu"))
    assert torch.equal(a.captions, b.captions) and torch.equal(a.images, b.images)
    assert a.images.shape == (8, 3, 16, 16) and a.captions.shape == a.caption_mask.shape
    tok = dataset.tokenizer
    for ids, mask in zip(a.captions, a.caption_mask, strict=True):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # real tokens first, then padding
        assert (ids[n:] == tok.eos_id).all()
        assert tok.decode(ids[:n].tolist()).startswith("a ")
    vals = list(batches.val_batches(config, 2, 8, seed=0, device=torch.device("cpu")))
    assert len(vals) == 2 and all(v.captions.shape[1] == a.captions.shape[1] for v in vals)
    # an encoder that reads fewer tokens than the longest caption is refused, naming the field
    short = load_recipe(_recipe(text_encoder={**ENCODER, "max_tokens": 4})).model_config_for(fill)
    with pytest.raises(Exception, match="text_encoder.max_tokens"):
        batches.check(short)
    # a class-conditional family takes only the fill fields its config declares
    diffusion = tiny_image_recipe_dict("diffusion")
    diffusion["data"] = dict(DATA)
    assert load_recipe(diffusion).model_config_for(fill).num_classes == fill["num_classes"]


def test_text_diffusion_trains_registers_and_draws_from_a_sentence(workspace):
    result = train(_recipe())
    assert result.model_ref == "tiny-t2i@1"
    model = load("tiny-t2i")
    assert isinstance(model, ImageModel) and model.tokenizer is not None
    prompt = "a small red circle at the top left"
    a = model.generate(prompt=prompt, num_samples=3, seed=4, steps=3)
    b = model.generate(prompt=prompt, num_samples=3, seed=4, steps=3)
    assert [r.content_hash for r in a.records] == [r.content_hash for r in b.records]
    assert a.output.unknown_words == [] and a.records[0].request["prompt"] == prompt
    other = model.generate(prompt="a large blue square on the right", num_samples=3, seed=4, steps=3)
    assert [r.content_hash for r in other.records] != [r.content_hash for r in a.records]
    # a word the tokenizer never saw is read as <unk>, reported and recorded; never a crash
    odd = model.generate(prompt="a small red circle, quickly!", num_samples=1, seed=1, steps=3)
    assert "quickly" in odd.output.unknown_words
    assert odd.records[0].request["unknown_words"] == odd.output.unknown_words
    # replay runs the recorded prompt again, from the record alone
    again = replay(a.records[1].id)
    assert again.matches
    for params, message in [({"prompt": ""}, "prompt: empty"),
                            ({"prompt": "a " * 40}, "prompt: 40 tokens, this model reads at most 16"),
                            ({"prompt": prompt, "class_label": 1}, "class_label: .*sentence"),
                            ({}, "prompt: .*give one")]:
        with pytest.raises(InvalidInput, match=message):
            model.generate(num_samples=1, seed=1, steps=2, **params)
    with pytest.raises(InvalidInput, match="max_length|at most 1000"):
        model.generate(prompt="x" * 1001, num_samples=1)
    assert len(Store().list_generations("tiny-t2i")) == 3 + 3 + 3 + 1  # refused ones: none


def test_a_class_conditional_model_refuses_a_sentence(workspace):
    train(tiny_image_recipe_dict("diffusion", steps=4))
    model = load("tiny-diffusion")
    with pytest.raises(InvalidInput, match="prompt: a diffusion model is class-conditional"):
        model.generate(prompt="a red circle", num_samples=1, steps=2)
