"""The captioner family: teacher forcing, the decoder's cache, per-image seeding, beam search, and
that both encoders and every fusion learn to say which image is which."""

from __future__ import annotations

import math

import pytest
import torch

from genloop.models.captioner import FAMILY, beam_search, teacher_forcing
from genloop.models.family import CaptionRequest, ImageTextBatch
from genloop.models.fusion import FUSIONS

pytestmark = pytest.mark.usefixtures("one_thread")

V = 16


def _config(**kw):
    return FAMILY.make_config("tiny", image_size=8, channels=1, vocab_size=V, block_size=12, **kw)


def _model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return FAMILY.build(_config(**kw)).eval()


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_teacher_forcing_starts_and_ends_with_eos():
    captions = torch.tensor([[5, 6, 7], [8, 1, 1]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    inputs, targets, counted = teacher_forcing(captions, mask, eos=1, block=16)
    assert inputs.tolist() == [[1, 5, 6, 7], [1, 8, 1, 1]]
    assert targets.tolist() == [[5, 6, 7, 1], [8, 1, 1, 1]]
    assert counted.tolist() == [[True] * 4, [True, True, False, False]]
    # a caption longer than the context loses its end
    inputs, targets, counted = teacher_forcing(captions, mask, eos=1, block=2)
    assert inputs.tolist() == [[1, 5], [1, 8]] and targets.tolist() == [[5, 6], [8, 1]]


def test_config_refuses_sizes_that_do_not_fit():
    with pytest.raises(ValueError, match="patch_size"):
        FAMILY.make_config("tiny", image_size=10, encoder="patch", patch_size=4)
    with pytest.raises(ValueError, match="multiple of 4"):
        FAMILY.make_config("tiny", image_size=10)


def test_cache_gives_the_tokens_of_recomputing():
    model = _model()
    with torch.no_grad():  # large weights: tokens then depend on the context
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.5)
    for temperature in (0.0, 1.0):
        got = [FAMILY.sample(model, CaptionRequest(images=_images(), max_new_tokens=20,
                                                   temperature=temperature, use_cache=cache),
                             [torch.Generator().manual_seed(i) for i in range(4)])
               for cache in (True, False)]
        assert got[0] == got[1]
        assert all(len(row) <= 12 for row in got[0])  # never past the context


def test_an_image_captions_the_same_alone_as_in_a_batch():
    model = _model()
    images = _images(4)
    req = dict(max_new_tokens=10, temperature=1.0, top_p=0.9)
    batch = FAMILY.sample(model, CaptionRequest(images=images, **req),
                          [torch.Generator().manual_seed(40 + i) for i in range(4)])
    alone = FAMILY.sample(model, CaptionRequest(images=images[2:3], **req),
                          [torch.Generator().manual_seed(42)])
    assert alone[0] == batch[2]


def test_sample_refuses_images_of_another_shape():
    with pytest.raises(ValueError, match=r"reads \(B, 1, 8, 8\)"):
        FAMILY.sample(_model(), CaptionRequest(images=torch.zeros(1, 3, 8, 8)), torch.Generator())


def _log_prob(model, image: torch.Tensor, tokens: list[int]) -> float:
    """log p(tokens + <eos> | image) under the model."""
    ids = torch.tensor([[1, *tokens]])
    with torch.no_grad():
        logp = torch.log_softmax(model(image[None], ids).float(), dim=-1)[0]
    return float(sum(logp[i, t] for i, t in enumerate([*tokens, 1])))


def test_beam_search_finds_captions_at_least_as_likely_as_greedy():
    model = _model(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.3)
    better = 0
    for i, image in enumerate(_images(6, seed=5)):
        greedy = FAMILY.sample(model, CaptionRequest(images=image[None], max_new_tokens=12),
                               torch.Generator())[0]
        beam = beam_search(model, image, num_beams=4, max_new_tokens=12)
        assert beam == FAMILY.sample(model, CaptionRequest(images=image[None], max_new_tokens=12,
                                                           num_beams=4), torch.Generator())[0]
        ended = len(greedy) < 12 and len(beam) < 12  # both finished with <eos>: comparable
        if ended:
            g, b = _log_prob(model, image, greedy), _log_prob(model, image, beam)
            assert b / (len(beam) + 1) >= g / (len(greedy) + 1) - 1e-5, i
            better += b > g + 1e-6
            assert math.isfinite(b)
    assert beam_search(model, _images(1)[0], num_beams=1, max_new_tokens=12) == FAMILY.sample(
        model, CaptionRequest(images=_images(1), max_new_tokens=12), torch.Generator())[0]


@pytest.mark.parametrize("encoder,fusion", [("conv", f) for f in FUSIONS] + [("patch", "cross_attention")])
def test_it_learns_which_caption_goes_with_which_image(encoder, fusion):
    """Four images, four captions that differ in their middle token: after training, greedy
    decoding (and beam search) says each image's own caption."""
    torch.manual_seed(0)
    model = FAMILY.build(_config(encoder=encoder, fusion=fusion, patch_size=4))
    images = torch.zeros(4, 1, 8, 8)
    for i in range(4):  # one bright quadrant each: where the image is lit
        r, c = divmod(i, 2)
        images[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 1.0
    images = images * 2 - 1
    captions = torch.tensor([[2, 3, 10 + i, 4, 1] for i in range(4)])
    mask = captions != 1
    batch = ImageTextBatch(images, torch.zeros(4, dtype=torch.long), torch.Generator(),
                           captions=captions, caption_mask=mask)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        out = FAMILY.loss(model, batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    model.eval()
    want = [[2, 3, 10 + i, 4] for i in range(4)]
    assert FAMILY.sample(model, CaptionRequest(images=images), torch.Generator()) == want
    assert FAMILY.sample(model, CaptionRequest(images=images, num_beams=3), torch.Generator()) == want
    assert float(FAMILY.loss(model, batch)["exact_caption"]) == 1.0
