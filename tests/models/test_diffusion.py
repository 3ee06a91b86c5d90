"""The diffusion family's sampling loop, pinned: the same seed gives the same small sample.

Values were recorded before the noise scheduler moved to ``models/schedulers.py`` (they were
bit-identical after); the tolerance covers float differences between CPUs, not a changed sampler.
"""

from __future__ import annotations

import pytest
import torch

from genloop.models.family import ImageRequest
from genloop.models.registry import FAMILIES

pytestmark = pytest.mark.usefixtures("one_thread")

PINNED = {
    # (conditional, sampler, guidance): first 4 pixels of row 0 of both samples, sum, mean |x|
    (False, "ddim", 1.0): ([1.0, 1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0], -10.951, 0.98718),
    (True, "ddpm", 2.0): ([1.0, 1.0, -0.97241, 1.0, 0.96409, -0.34296, 1.0, 1.0], 19.7237, 0.84078),
}


@pytest.mark.parametrize("conditional, sampler, guidance", list(PINNED))
def test_seeded_sample_is_pinned(conditional, sampler, guidance):
    family = FAMILIES["diffusion"]
    config = family.make_config("tiny", image_size=8, channels=1, num_classes=3, conditional=conditional)
    torch.manual_seed(0)  # the weights; the sample draws only from its generator
    model = family.build(config).eval()
    request = ImageRequest(num_samples=2, labels=torch.tensor([0, 2]) if conditional else None, steps=4,
                           sampler=sampler, guidance_scale=guidance)
    x = family.sample(model, request, torch.Generator().manual_seed(5))
    pixels, total, mean_abs = PINNED[(conditional, sampler, guidance)]
    assert x.shape == (2, 1, 8, 8)
    assert x[:, 0, 0, :4].flatten().tolist() == pytest.approx(pixels, abs=1e-4)
    assert x.sum().item() == pytest.approx(total, abs=1e-3)
    assert x.abs().mean().item() == pytest.approx(mean_abs, abs=1e-4)
