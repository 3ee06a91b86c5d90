"""The text-diffusion family: the prompt steers the sample, guidance is the GLIDE mix of two
estimates, per-image generators make each image its own seed's, and prompts are read (tokenized,
checked) by one function."""

from __future__ import annotations

import pytest
import torch

from genloop.errors import InvalidInput, RecipeError
from genloop.models.family import ImageRequest, ImageTextBatch
from genloop.models.registry import FAMILIES
from genloop.models.text_diffusion import empty_prompts
from genloop.models.text_encoder import tokenize_prompts
from genloop.tokenizers import CharTokenizer, unknown_words

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILY = FAMILIES["text-diffusion"]


def _model(seed: int = 0, **overrides):
    config = FAMILY.make_config("tiny", image_size=8, channels=1, vocab_size=20, **overrides)
    torch.manual_seed(seed)
    model = FAMILY.build(config).eval()
    with torch.no_grad():  # untrained fusion gates are open but outputs small: make text matter
        for p in model.parameters():
            if p.ndim > 1:
                p.mul_(3.0)
    return model


def _prompts(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.ones(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), True
    return ids, mask


def _draw(model, ids=None, mask=None, seed=5, generators=None, **kw):
    n = 2 if ids is None else ids.shape[0]
    req = ImageRequest(num_samples=n, steps=3, prompt_ids=ids, prompt_mask=mask, **kw)
    return FAMILY.sample(model, req, generators or torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fusion", ["cross_attention", "concat", "film"])
def test_the_prompt_steers_the_sample_with_every_fusion(fusion):
    model = _model(fusion=fusion)
    a = _draw(model, *_prompts([[2, 3, 4], [2, 3, 4]]))
    b = _draw(model, *_prompts([[5, 6], [5, 6]]))
    assert a.shape == (2, 1, 8, 8) and a.min() >= -1 and a.max() <= 1
    assert not torch.allclose(a, b)
    # padding is not read: the same prompt padded wider draws the same images
    ids, mask = _prompts([[2, 3, 4], [2, 3, 4, 7, 8]])
    wide = _draw(model, ids, mask)
    torch.testing.assert_close(wide[0], a[0], atol=1e-5, rtol=0)


def test_no_prompt_is_the_empty_caption_and_guidance_mixes_two_estimates():
    model = _model()
    ids, mask = _prompts([[2, 3, 4], [9, 10]])
    empty = _draw(model, *empty_prompts(2))
    none = _draw(model)
    torch.testing.assert_close(none, empty)
    plain = _draw(model, ids, mask, guidance_scale=1.0)
    guided = _draw(model, ids, mask, guidance_scale=3.0)
    assert not torch.allclose(plain, guided)
    # s = 0 is the unconditional estimate alone: the empty caption's image, whatever the prompt
    zero = _draw(model, ids, mask, guidance_scale=0.0)
    torch.testing.assert_close(zero, empty, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp_2m"])
def test_each_image_is_its_own_generators_as_a_batch_of_one(sampler):
    model = _model()
    ids, mask = _prompts([[2, 3, 4], [9, 10], [5]])
    gens = [torch.Generator().manual_seed(s) for s in (11, 12, 13)]
    batch = _draw(model, ids, mask, generators=gens, sampler=sampler, guidance_scale=2.0)
    for i, s in enumerate((11, 12, 13)):
        alone = _draw(model, ids[i : i + 1, : int(mask[i].sum())], mask[i : i + 1, : int(mask[i].sum())],
                      generators=[torch.Generator().manual_seed(s)], sampler=sampler, guidance_scale=2.0)
        torch.testing.assert_close(batch[i], alone[0], atol=1e-5, rtol=0)


def test_loss_drops_captions_with_p_uncond():
    """With p_uncond = 1 every caption is dropped: the loss is the empty caption's, whatever
    the captions say; with 0 the captions count."""
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    ids, mask = _prompts([[2, 3], [4, 5, 6], [7], [8, 9]])

    def batch(captions):
        return ImageTextBatch(images, torch.zeros(4, dtype=torch.long), torch.Generator().manual_seed(1),
                              captions=captions, caption_mask=mask)

    dropped = _model(p_uncond=1.0)
    other = (ids + 5) % 20
    assert FAMILY.loss(dropped, batch(ids))["loss"] == FAMILY.loss(dropped, batch(other))["loss"]
    kept = _model(p_uncond=0.0)
    assert FAMILY.loss(kept, batch(ids))["loss"] != FAMILY.loss(kept, batch(other))["loss"]


def test_config_checks_name_the_problem():
    with pytest.raises(RecipeError, match="fusion_levels"):
        FAMILY.make_config("tiny", image_size=8, fusion_levels=(5,))
    with pytest.raises(RecipeError, match="vocab"):
        FAMILY.build(FAMILY.make_config("tiny", image_size=8))
    assert FAMILY.make_config("small", image_size=32).fused_levels == (1, 2)


def test_tokenize_prompts_pads_masks_and_refuses_empty_or_long_prompts():
    tok = CharTokenizer(sorted(set("a red circle")))
    ids, mask = tokenize_prompts(tok, ["a red", "circle"], max_tokens=10)
    assert ids.shape == mask.shape == (2, 6)
    assert mask.sum(dim=1).tolist() == [5, 6]
    assert ids[0, 5] == tok.eos_id and ids[0, :5].tolist() == tok.encode("a red")
    with pytest.raises(InvalidInput, match="^prompt: empty$"):
        tokenize_prompts(tok, ["  "], max_tokens=10)
    with pytest.raises(InvalidInput, match="^prompt: 12 tokens, this model reads at most 10$"):
        tokenize_prompts(tok, ["a red circle"], max_tokens=10)
    with pytest.raises(InvalidInput, match="^prompt.1: empty$"):
        tokenize_prompts(tok, ["a", ""], max_tokens=10)
    # unknown characters are read as <unk> and reported, never a crash
    ids, _ = tokenize_prompts(tok, ["a blue circle"], max_tokens=20)
    assert tok.unk_id in ids[0].tolist()
    assert unknown_words(tok, "a blue circle") == ["blue"]
