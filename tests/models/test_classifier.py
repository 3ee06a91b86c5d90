"""The classifier family: the CNN whose features and probabilities score generated images."""

from __future__ import annotations

import math

import pytest
import torch

from genloop.errors import InvalidInput
from genloop.models.classifier import FAMILY, predict, random_shift
from genloop.models.family import ImageBatch, ImageRequest
from genloop.models.io import load_weights, save_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only fight


def _build(seed: int = 0, **overrides):
    config = FAMILY.make_config("tiny", **{"num_classes": 4, "image_size": 8, **overrides})
    torch.manual_seed(seed)
    return config, FAMILY.build(config)


def quadrant_images(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A trivially separable task: class c lights up quadrant c of a noisy dark image."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    images = -1 + 0.3 * torch.rand(n, 1, size, size, generator=generator)
    h = size // 2
    for c in range(4):
        r, q = divmod(c, 2)
        images[labels == c, :, r * h:(r + 1) * h, q * h:(q + 1) * h] += 1.4
    return images.clamp(-1, 1), labels


def test_config_roundtrip_and_presets():
    for preset in FAMILY.presets:
        config = FAMILY.make_config(preset, num_classes=10, channels=3, image_size=32)
        assert FAMILY.config.model_validate(config.model_dump()) == config
        assert FAMILY.config.model_validate_json(config.model_dump_json()) == config
    # image_text too: the FID extractor of a text-conditioned model trains on its captioned data
    assert FAMILY.kinds == ("images", "image_text") and FAMILY.generative is False
    assert set(FAMILY.exempt) <= {"config_roundtrip", "save_load", "loss_falls", "seeded_sample", "kv_cache"}


@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(size: int, channels: int):
    config, model = _build(image_size=size, channels=channels, num_classes=10)
    x = torch.rand(3, channels, size, size) * 2 - 1
    assert model(x).shape == (3, 10)
    assert model.features(x).shape == (3, config.feature_dim)
    assert (model.features(x) >= 0).all()  # post-ReLU activations


def test_build_refuses_unlabelled_data():
    with pytest.raises(InvalidInput, match="num_classes"):
        FAMILY.build(FAMILY.make_config("tiny"))


def test_loss_falls_on_a_fixed_batch():
    _, model = _build()
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(16, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 4, (16,), generator=g)
    batch = ImageBatch(images, labels, g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = FAMILY.loss(model, batch)
        assert set(out) == {"loss", "accuracy"} and not out["accuracy"].requires_grad
        losses.append(out["loss"].item())
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
    assert losses[0] == pytest.approx(math.log(4), rel=0.3)
    assert losses[-1] < 0.5 * losses[0], losses
    assert FAMILY.loss(model, batch)["accuracy"].item() == 1.0


def test_random_shift_translates_each_image_reproducibly():
    images = torch.full((64, 2, 9, 9), -1.0)
    images[:, :, 4, 4] = 1.0  # one bright pixel in the middle
    a = random_shift(images, 2, torch.Generator().manual_seed(3))
    assert torch.equal(a, random_shift(images, 2, torch.Generator().manual_seed(3)))
    assert a.shape == images.shape
    assert torch.equal(a[:, 0], a[:, 1])  # channels move together
    rows, cols = (a[:, 0] == 1).nonzero()[:, 1], (a[:, 0] == 1).nonzero()[:, 2]
    assert ((a[:, 0] == 1).sum(dim=(1, 2)) == 1).all()  # the pixel moved, nothing was lost
    assert rows.min() == 2 and rows.max() == 6 and cols.min() == 2 and cols.max() == 6  # every offset drawn
    # shift 0 is the identity
    assert torch.equal(random_shift(images, 0, torch.Generator()), images)


def test_shift_augments_only_in_training():
    _, model = _build(shift=2)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 4, (8,), generator=g)
    batch = ImageBatch(images, labels, g)
    model.eval()
    with torch.no_grad():
        assert FAMILY.loss(model, batch)["loss"] == FAMILY.loss(model, batch)["loss"]
        model.train()
        batch.generator.manual_seed(1)
        first = FAMILY.loss(model, batch)["loss"]
        batch.generator.manual_seed(1)
        assert FAMILY.loss(model, batch)["loss"] == first  # deterministic from the generator
        batch.generator.manual_seed(2)
        assert FAMILY.loss(model, batch)["loss"] != first


def test_sample_refuses():
    _, model = _build()
    with pytest.raises(InvalidInput, match="does not generate"):
        FAMILY.sample(model, ImageRequest(num_samples=2), torch.Generator())


def test_predict_is_deterministic_batch_size_independent_and_restores_the_mode():
    config, model = _build(image_size=28, num_classes=10)
    images = torch.rand(37, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    model.train()
    features, probs = predict(model, images, batch_size=37)
    assert model.training
    assert features.shape == (37, config.feature_dim) and probs.shape == (37, 10)
    assert torch.allclose(probs.sum(dim=1), torch.ones(37))
    again, probs_again = predict(model, images, batch_size=37)
    assert torch.equal(features, again) and torch.equal(probs, probs_again)
    small_f, small_p = predict(model, images, batch_size=5)
    assert torch.allclose(features, small_f, atol=1e-5) and torch.allclose(probs, small_p, atol=1e-6)
    one_f, _ = predict(model, images[:1], batch_size=5)
    assert torch.allclose(one_f, features[:1], atol=1e-5)  # eval mode: no batch statistics
    with pytest.raises(InvalidInput, match="expects images"):
        predict(model, torch.zeros(2, 3, 28, 28), batch_size=4)


def test_save_load_keeps_the_normalisation_statistics(tmp_path):
    _, model = _build(seed=0)
    _, other = _build(seed=1)
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    model.train()
    with torch.no_grad():
        model(x)  # move the running statistics away from their initial values
    save_weights(model, tmp_path / "w.safetensors")
    load_weights(other, tmp_path / "w.safetensors")
    assert torch.equal(predict(model, x)[1], predict(other, x)[1])


def test_tiny_preset_learns_a_separable_task():
    _, model = _build(seed=0, image_size=16)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        images, labels = quadrant_images(32, 16, g)
        loss = FAMILY.loss(model, ImageBatch(images, labels, g))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    images, labels = quadrant_images(200, 16, torch.Generator().manual_seed(99))
    _, probs = predict(model, images, batch_size=64)
    assert (probs.argmax(dim=1) == labels).float().mean().item() > 0.95
