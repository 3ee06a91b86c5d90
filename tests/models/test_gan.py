"""The gan family: loss formulas, gradient penalty, the two-player update, sampling, sizes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genloop.errors import InvalidInput, RecipeError
from genloop.models.family import ImageBatch, ImageRequest
from genloop.models.gan import FAMILY, LOSSES, gradient_penalty

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only fight


def _model(seed: int = 0, **overrides):
    config = FAMILY.make_config("tiny", **{"image_size": 8, "channels": 1, **overrides})
    torch.manual_seed(seed)
    return FAMILY.build(config)


def _batch(model, seed: int = 0, n: int = 8) -> ImageBatch:
    cfg = model.config
    g = torch.Generator().manual_seed(100 + seed)
    images = torch.rand(n, cfg.channels, cfg.image_size, cfg.image_size, generator=g) * 2 - 1
    labels = torch.randint(0, max(cfg.num_classes, 1), (n,), generator=g)
    return ImageBatch(images, labels, torch.Generator().manual_seed(seed))


def _optimizer(model) -> torch.optim.Optimizer:
    # weight decay on: a parameter the step must leave alone would still move if it were stepped
    return torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=0.1)


# ----------------------------------------------------------------------------- losses

REAL = torch.tensor([2.0, -0.5, 0.3])
FAKE = torch.tensor([-1.0, 0.7, 1.5])


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _mean(xs) -> float:
    return sum(xs) / len(xs)


BCE_D = (_mean([-math.log(_sig(r)) for r in REAL.tolist()])
         + _mean([-math.log(1 - _sig(f)) for f in FAKE.tolist()]))

EXPECTED = {  # (d_loss, g_loss) written from the papers' formulas, element by element
    "minimax": (
        BCE_D,
        _mean([math.log(1 - _sig(f)) for f in FAKE.tolist()]),
    ),
    "non_saturating": (
        BCE_D,
        _mean([-math.log(_sig(f)) for f in FAKE.tolist()]),
    ),
    "least_squares": (
        0.5 * _mean([(r - 1) ** 2 for r in REAL.tolist()]) + 0.5 * _mean([f**2 for f in FAKE.tolist()]),
        0.5 * _mean([(f - 1) ** 2 for f in FAKE.tolist()]),
    ),
    "wgan_gp": (_mean(FAKE.tolist()) - _mean(REAL.tolist()), -_mean(FAKE.tolist())),
    "hinge": (
        _mean([max(0, 1 - r) for r in REAL.tolist()]) + _mean([max(0, 1 + f) for f in FAKE.tolist()]),
        -_mean(FAKE.tolist()),
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_formulas(name):
    d_fn, g_fn = LOSSES[name]
    assert d_fn(REAL, FAKE).item() == pytest.approx(EXPECTED[name][0], rel=1e-5)
    assert g_fn(FAKE).item() == pytest.approx(EXPECTED[name][1], rel=1e-5)


def test_every_configurable_loss_has_formulas():
    assert set(LOSSES) == set(EXPECTED) == set(FAMILY.config.model_fields["loss"].annotation.__args__)


def test_bce_losses_are_stable_for_large_logits():
    d_fn, g_fn = LOSSES["non_saturating"]
    big = torch.tensor([200.0, -200.0])
    assert torch.isfinite(d_fn(big, -big)) and torch.isfinite(g_fn(big)) and torch.isfinite(g_fn(-big))
    assert g_fn(torch.tensor([-200.0])).item() == pytest.approx(200.0)


# ----------------------------------------------------------------------------- gradient penalty


def test_gradient_penalty_of_linear_critic_is_analytic():
    # D(x) = <w, x>: ∇D = w everywhere, so the penalty is (‖w‖ - 1)² whatever ε is
    w = torch.tensor([3.0, -1.0, 2.0], requires_grad=True)
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    gp = gradient_penalty(lambda x: x @ w, real, fake, g)
    norm = math.sqrt(14.0)
    assert gp.item() == pytest.approx((norm - 1) ** 2, rel=1e-6)
    # differentiable in the critic's weights (create_graph): d/dw (‖w‖-1)² = 2(‖w‖-1) w/‖w‖
    gp.backward()
    assert torch.allclose(w.grad, 2 * (norm - 1) * w.detach() / norm, rtol=1e-5)


def test_gradient_penalty_runs_in_fp32_under_bf16_autocast():
    w = torch.randn(16, 1, generator=torch.Generator().manual_seed(1))
    seen = []

    def critic(x):
        seen.append(x.dtype)
        return F.linear(x, w.t()).squeeze(1)  # F.linear would run in bf16 under autocast

    real, fake = torch.randn(4, 16), torch.randn(4, 16).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    assert gp.dtype == torch.float32 and seen == [torch.float32]
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)


# ----------------------------------------------------------------------------- sizes and building


@pytest.mark.parametrize("size", [8, 16, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_supported_sizes_generate_and_score(size, channels):
    model = _model(image_size=size, channels=channels)
    x = model(torch.randn(2, model.config.latent_dim))
    assert x.shape == (2, channels, size, size)
    assert model.discriminator(x).shape == (2,)


def test_unsupported_size_is_a_recipe_error_naming_the_sizes():
    config = FAMILY.make_config("tiny", image_size=20)
    with pytest.raises(RecipeError, match="image_size must be one of .*28.*32"):
        FAMILY.build(config)


def test_conditional_without_classes_is_a_recipe_error():
    with pytest.raises(RecipeError, match="num_classes"):
        _model(conditional=True, num_classes=0)


def test_discriminator_normalisation_follows_the_loss():
    def has_batch_norm(model):
        return any(isinstance(m, torch.nn.BatchNorm2d) for m in model.discriminator.modules())

    assert not has_batch_norm(_model(loss="wgan_gp", spectral_norm=False))
    assert has_batch_norm(_model(loss="non_saturating", spectral_norm=False))
    sn = _model(loss="hinge", spectral_norm=True)
    assert not has_batch_norm(sn)
    assert torch.nn.utils.parametrize.is_parametrized(sn.discriminator.head, "weight")


# ----------------------------------------------------------------------------- the update


class RecordingAdamW(torch.optim.AdamW):
    """AdamW that keeps a copy of every parameter after each step."""

    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.snapshots: list[list[torch.Tensor]] = []

    def step(self, closure=None):
        out = super().step(closure)
        self.snapshots.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
        return out


@pytest.mark.parametrize("loss", ["hinge", "wgan_gp", "non_saturating"])
def test_train_step_moves_one_player_per_phase(loss):
    model = _model(loss=loss, spectral_norm=loss == "hinge", conditional=True, num_classes=3, n_critic=2)
    params = [p for g in [model.parameters()] for p in g]
    is_d = [any(p is q for q in model.discriminator.parameters()) for p in params]
    before = [p.detach().clone() for p in params]
    opt = RecordingAdamW(params, lr=1e-2, betas=(0.5, 0.999), weight_decay=0.1)
    out = FAMILY.train_step(model, _batch(model), opt, 1.0)
    assert len(opt.snapshots) == 3  # two critic steps, one generator step
    states = [before, *opt.snapshots]
    for phase, player in enumerate(["d", "d", "g"]):
        changed = [not torch.equal(a, b) for a, b in zip(states[phase], states[phase + 1], strict=True)]
        moved_d = [c for c, d in zip(changed, is_d, strict=True) if d]
        moved_g = [c for c, d in zip(changed, is_d, strict=True) if not d]
        if player == "d":
            assert any(moved_d) and not any(moved_g), phase
        else:
            assert any(moved_g) and not any(moved_d), phase
    assert all(p.grad is None for p in params)
    assert set(out) >= {"loss", "d_loss", "g_loss", "wasserstein"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert out["loss"] == pytest.approx(out["d_loss"] + out["g_loss"])
    assert ("gp" in out) == (loss == "wgan_gp")


def test_train_step_is_determined_by_the_batch_generator():
    def run(seed):
        model = _model(conditional=True, num_classes=3)
        out = FAMILY.train_step(model, _batch(model, seed=seed), _optimizer(model), 0.0)
        return out, [p.detach().clone() for p in model.parameters()]

    (a, pa), (b, pb), (c, _) = run(0), run(0), run(1)
    assert a == b
    assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert a != c


def test_train_step_under_bf16_autocast_gives_finite_floats():
    model = _model(loss="wgan_gp", spectral_norm=False, conditional=True, num_classes=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = FAMILY.train_step(model, _batch(model), _optimizer(model), 1.0)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())


def test_loss_reports_both_players_without_updating():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    out = FAMILY.loss(model, _batch(model))
    assert set(out) == {"loss", "d_loss", "g_loss"}
    assert out["loss"].ndim == 0 and math.isfinite(out["loss"].item())
    assert torch.allclose(out["loss"], out["d_loss"] + out["g_loss"])
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


# ----------------------------------------------------------------------------- sampling


def _sample(model, seed, **kw):
    return FAMILY.sample(model, ImageRequest(**{"num_samples": 4, **kw}), torch.Generator().manual_seed(seed))


def test_sample_shape_range_and_seed():
    model = _model(image_size=16, channels=3)
    a, b, c = _sample(model, 0), _sample(model, 0), _sample(model, 1)
    assert a.shape == (4, 3, 16, 16) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.training  # sample switches to eval mode and back


def test_sample_uses_given_latents():
    model = _model()
    z = torch.randn(4, *FAMILY.latent_shape(model.config))
    assert torch.equal(_sample(model, 0, latents=z), _sample(model, 1, latents=z))
    with pytest.raises(InvalidInput, match="latents"):
        _sample(model, 0, latents=torch.randn(3, model.config.latent_dim))


def test_conditional_sample_respects_labels():
    model = _model(conditional=True, num_classes=5)
    z = torch.randn(4, model.config.latent_dim)
    zeros = _sample(model, 0, latents=z, labels=torch.zeros(4, dtype=torch.long))
    threes = _sample(model, 0, latents=z, labels=torch.full((4,), 3))
    assert zeros.shape == (4, 1, 8, 8)
    assert not torch.equal(zeros, threes)  # same z, other class: another image
    assert torch.equal(_sample(model, 7), _sample(model, 7))  # labels drawn from the generator
    with pytest.raises(InvalidInput, match="labels"):
        _sample(model, 0, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(InvalidInput, match="labels"):
        _sample(model, 0, labels=torch.full((4,), 5))
