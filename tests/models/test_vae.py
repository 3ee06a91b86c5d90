"""The vae family: its pure math (KL, bounds), shapes, determinism and the importance-weighted bound."""

from __future__ import annotations

import math

import pytest
import torch

from genloop.errors import InvalidInput, RecipeError
from genloop.models.family import ImageBatch, ImageRequest
from genloop.models.vae import (
    FAMILY,
    binarize,
    gaussian_kl,
    gaussian_nll,
    importance_nll,
    log_normal,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only fight


def _model(seed: int = 0, **overrides):
    config = FAMILY.make_config("tiny", **{"image_size": 8, **overrides})
    torch.manual_seed(seed)
    return FAMILY.build(config)


def _batch(config, n: int = 8, seed: int = 0, gen_seed: int = 1) -> ImageBatch:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, config.channels, config.image_size, config.image_size, generator=g) * 2 - 1
    labels = torch.randint(0, max(config.num_classes, 1), (n,), generator=g)
    return ImageBatch(images, labels, torch.Generator().manual_seed(gen_seed))


# --- pure math ---------------------------------------------------------------------------------


def test_kl_of_standard_normal_is_zero_and_matches_closed_form():
    assert torch.equal(gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)
    assert (gaussian_kl(mu, logvar) > 0).all()


def test_log_normal_and_gaussian_nll_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    z, mu, logvar = (torch.randn(3, 4, generator=g) for _ in range(3))
    expected = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(log_normal(z, mu, logvar), expected)
    x, mean = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    log_scale = torch.tensor([-1.0, 0.0, 0.5])
    dist = torch.distributions.Normal(mean, log_scale.exp().view(1, 3, 1, 1))
    torch.testing.assert_close(gaussian_nll(mean, log_scale, x), -dist.log_prob(x).flatten(1).sum(1))


def test_binarize_uses_the_generator_and_the_pixel_probability():
    images = torch.tensor([-1.0, 1.0, 0.0]).repeat(4000)  # p = 0, 1, 0.5
    a = binarize(images, torch.Generator().manual_seed(5))
    b = binarize(images, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    a = a.view(-1, 3)
    assert a[:, 0].sum() == 0 and a[:, 1].sum() == 4000
    assert abs(a[:, 2].mean().item() - 0.5) < 0.03


# --- network shapes ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("conditional", [False, True])
def test_shapes(size: int, channels: int, conditional: bool):
    model = _model(image_size=size, channels=channels, conditional=conditional, num_classes=10)
    batch = _batch(model.config, n=3)
    mu, logvar = model(batch.images, batch.labels)
    assert mu.shape == logvar.shape == (3, model.config.latent_dim)
    assert model.decode(mu, batch.labels).shape == (3, channels, size, size)
    out = FAMILY.loss(model, batch)
    assert set(out) == {"loss", "recon", "kl", "elbo"} and all(v.ndim == 0 for v in out.values())
    assert torch.isfinite(out["loss"])
    assert importance_nll(model, batch, 3).shape == (3,)
    x = FAMILY.sample(model, ImageRequest(num_samples=2), torch.Generator().manual_seed(0))
    assert x.shape == (2, channels, size, size) and x.min() >= -1 and x.max() <= 1
    assert FAMILY.latent_shape(model.config) == (model.config.latent_dim,)


def test_unsupported_size_and_unlabelled_conditional_are_recipe_errors():
    with pytest.raises(RecipeError, match="8, 16, 28, 32"):
        _model(image_size=24)
    with pytest.raises(RecipeError, match="num_classes"):
        _model(conditional=True, num_classes=0)


def test_conditional_decoder_depends_on_the_label():
    model = _model(conditional=True, num_classes=4)
    z = torch.zeros(2, model.config.latent_dim)
    out = model.decode(z, torch.tensor([0, 3]))
    assert not torch.allclose(out[0], out[1])


# --- objective ---------------------------------------------------------------------------------


def test_loss_terms_add_up_and_beta_weights_the_kl():
    model = _model()
    out = FAMILY.loss(model, _batch(model.config))
    torch.testing.assert_close(out["loss"], out["recon"] + out["kl"])
    torch.testing.assert_close(out["elbo"], -(out["recon"] + out["kl"]))
    model.config.beta = 4.0
    out4 = FAMILY.loss(model, _batch(model.config))  # same seeds: same draws
    torch.testing.assert_close(out4["loss"], out["recon"] + 4.0 * out["kl"])


def test_same_generator_seed_same_loss_whatever_the_global_seed():
    model = _model()
    torch.manual_seed(0)
    a = FAMILY.loss(model, _batch(model.config, gen_seed=3))["loss"]
    torch.manual_seed(99)  # the global RNG must play no part
    b = FAMILY.loss(model, _batch(model.config, gen_seed=3))["loss"]
    c = FAMILY.loss(model, _batch(model.config, gen_seed=4))["loss"]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # another binarisation and eps


def _fit(decoder: str, steps: int = 80) -> tuple[torch.nn.Module, ImageBatch, list[float]]:
    """The tiny model trained on 16 fixed binary 16×16 images; every step a fresh generator."""
    model = _model(decoder=decoder, image_size=16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(16, 1, 16, 16, generator=g) > 0.7).float() * 2 - 1
    labels = torch.zeros(16, dtype=torch.long)
    losses = []
    for step in range(steps):
        out = FAMILY.loss(model, ImageBatch(images, labels, torch.Generator().manual_seed(step)))
        losses.append(out["loss"].item())
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
    return model, ImageBatch(images, labels, torch.Generator().manual_seed(0)), losses


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian"])
def test_loss_falls_on_a_fixed_batch(decoder: str):
    _, _, losses = _fit(decoder)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    if decoder == "bernoulli":  # logits near 0: about ln 2 per pixel
        assert first == pytest.approx(256 * math.log(2), rel=0.1)
    assert last < 0.85 * first, losses


def test_loss_under_bf16_autocast_stays_fp32_and_close():
    model = _model(image_size=16)
    ref = FAMILY.loss(model, _batch(model.config))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = FAMILY.loss(model, _batch(model.config))
    assert all(v.dtype == torch.float32 for v in out.values())
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=0.05)


# --- importance-weighted bound -----------------------------------------------------------------


@pytest.mark.parametrize("conditional", [False, True])
def test_one_importance_sample_is_the_negative_elbo_of_the_same_draws(conditional: bool):
    model = _model(conditional=conditional, num_classes=5)
    batch = _batch(model.config, n=6, gen_seed=11)
    got = importance_nll(model, batch, 1)
    # the same draws by hand, in the documented order: binarisation, then eps (B, D)
    g = torch.Generator().manual_seed(11)
    labels = batch.labels if conditional else None
    with torch.no_grad():
        x = binarize(batch.images, g)
        mu, logvar = model(x, labels)
        z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=g)
        recon = model.recon_nll(model.decode(z, labels), x)
        kl_one_sample = log_normal(z, mu, logvar) - log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
    torch.testing.assert_close(got, recon + kl_one_sample)
    # and loss() draws the same binarisation and eps: its recon term is the same numbers
    out = FAMILY.loss(model, _batch(model.config, n=6, gen_seed=11))
    torch.testing.assert_close(out["recon"], recon.mean())


def test_one_sample_estimate_averages_to_the_analytic_negative_elbo():
    model = _model()
    batch = _batch(model.config, n=4)
    draws = torch.stack([importance_nll(model, ImageBatch(batch.images, batch.labels,
                                                          torch.Generator().manual_seed(s)), 1)
                         for s in range(300)]).mean()
    elbos = torch.stack([FAMILY.loss(model, ImageBatch(batch.images, batch.labels,
                                                       torch.Generator().manual_seed(s)))["elbo"]
                         for s in range(300)]).mean()
    assert draws.item() == pytest.approx(-elbos.item(), rel=0.01)


def test_more_importance_samples_give_a_tighter_bound():
    model, batch, _ = _fit("bernoulli")  # trained: z carries information, so the bound has a gap
    model.eval()

    def mean_nll(k: int, seeds: range) -> float:
        return torch.stack([
            importance_nll(model, ImageBatch(batch.images, batch.labels, torch.Generator().manual_seed(s)), k)
            for s in seeds
        ]).mean().item()

    one, many = mean_nll(1, range(20)), mean_nll(50, range(5))
    assert many < one - 0.5, (many, one)


def test_bound_is_exact_when_the_posterior_is_the_prior_and_z_is_ignored():
    # q(z|x) = p(z) and p(x|z) = p(x): every importance weight is p(x), so every k gives -log p(x)
    model = _model()
    with torch.no_grad():
        model.encoder.out.weight.zero_()
        model.encoder.out.bias.zero_()
        model.decoder.fc[0].weight.zero_()
    batch = _batch(model.config, n=4)
    x = binarize(batch.images, torch.Generator().manual_seed(1))  # the draw importance_nll makes first
    with torch.no_grad():
        exact = model.recon_nll(model.decode(torch.zeros(4, model.config.latent_dim)), x)
    for k in (1, 7, 100):
        got = importance_nll(model, _batch(model.config, n=4), k)
        torch.testing.assert_close(got, exact)


def test_chunking_does_not_change_the_estimate():
    model = _model()
    batch = _batch(model.config, n=4)
    def again() -> ImageBatch:
        return ImageBatch(batch.images, batch.labels, torch.Generator().manual_seed(2))

    whole = importance_nll(model, again(), 30)
    pieces = importance_nll(model, again(), 30, chunk_images=8)  # 2 samples · 4 images at a time
    torch.testing.assert_close(whole, pieces)
    with pytest.raises(InvalidInput):
        importance_nll(model, batch, 0)


# --- sampling ----------------------------------------------------------------------------------


def test_seeded_sample_is_deterministic():
    model = _model(conditional=True, num_classes=3)
    draw = lambda seed: FAMILY.sample(model, ImageRequest(num_samples=4), torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_sample_uses_given_latents_and_labels():
    model = _model(conditional=True, num_classes=3)
    z = torch.randn(2, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2])
    req = ImageRequest(num_samples=2, latents=z, labels=labels)
    a = FAMILY.sample(model, req, torch.Generator().manual_seed(1))
    b = FAMILY.sample(model, req, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)  # nothing left to draw
    with torch.no_grad():
        torch.testing.assert_close(a, torch.sigmoid(model.decode(z, labels)) * 2 - 1)
    with pytest.raises(InvalidInput, match="latents"):
        FAMILY.sample(model, ImageRequest(num_samples=3, latents=z), torch.Generator())
    with pytest.raises(InvalidInput, match="labels"):
        FAMILY.sample(model, ImageRequest(num_samples=2, labels=torch.tensor([0, 3])), torch.Generator())


def test_config_roundtrip_and_presets():
    for preset in FAMILY.presets:
        config = FAMILY.make_config(preset, decoder="gaussian", beta=2.0)
        assert FAMILY.config.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(RecipeError):
        FAMILY.make_config("huge")
