"""Properties of the diffusion noise schedulers in ``genloop.models.schedulers`` (small tensors)."""

from __future__ import annotations

import pytest
import torch

from genloop.errors import InvalidInput, RecipeError
from genloop.models.schedulers import BETA_SCHEDULES, NoiseScheduler, betas_for, scheduler_for


@pytest.mark.parametrize("schedule", sorted(BETA_SCHEDULES))
@pytest.mark.parametrize("timesteps", [50, 100, 1000])  # linear breaks below 50: β_T > 1
def test_alpha_bar_falls_from_one_towards_zero(schedule, timesteps):
    ab = NoiseScheduler(schedule, timesteps).alphas_cumprod
    assert ab.dtype == torch.float64 and ab.shape == (timesteps,)
    assert (ab > 0).all() and (ab < 1).all() and (ab[1:] < ab[:-1]).all()
    assert ab[-1] < 0.05  # almost pure noise at T


def test_linear_betas_are_ho_et_al():
    b = betas_for("linear", 1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(betas_for("linear", 100), torch.linspace(1e-3, 0.2, 100, dtype=torch.float64))


def test_unknown_schedule_is_named():
    with pytest.raises(RecipeError, match="unknown noise schedule 'sigmoid'"):
        betas_for("sigmoid", 100)


@pytest.mark.parametrize("steps", [1, 2, 4, 7, 50, 100])
def test_set_timesteps_runs_down_from_t_minus_one_to_zero(steps):
    s = NoiseScheduler("linear", 100)
    s.set_timesteps(steps)
    ts = s.timesteps.tolist()
    assert len(ts) == steps and ts[0] == 99 and all(a > b for a, b in zip(ts, ts[1:], strict=False))
    assert steps == 1 or ts[-1] == 0
    assert s.previous(ts[-1]) == -1 and (steps == 1 or s.previous(ts[0]) == ts[1])


@pytest.mark.parametrize("steps", [0, 101])
def test_set_timesteps_out_of_range(steps):
    with pytest.raises(InvalidInput, match=r"steps must be between 1 and 100"):
        NoiseScheduler("cosine", 100).set_timesteps(steps)


def test_add_noise_is_eq_4():
    s = NoiseScheduler("cosine", 100)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(3, 1, 4, 4, generator=g) * 2 - 1, torch.randn(3, 1, 4, 4, generator=g)
    t = torch.tensor([0, 50, 99])
    ab = s.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(s.add_noise(x0, noise, t), ab.sqrt() * x0 + (1 - ab).sqrt() * noise)


@pytest.mark.parametrize("schedule", sorted(BETA_SCHEDULES))
def test_ddim_step_with_the_true_noise_lands_on_the_forward_process(schedule):
    """η = 0 and ε = the noise that made x_t: x_prev is x_0 noised with the same ε at prev, and
    the last step returns x_0 (Song et al. 2021, eq. 12)."""
    s = NoiseScheduler(schedule, 100, eta=0.0)
    s.set_timesteps(4)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.rand(2, 1, 4, 4, generator=g) * 1.8 - 0.9, torch.randn(2, 1, 4, 4, generator=g)
    x = s.add_noise(x0, noise, torch.tensor([99, 99]))
    for t in s.timesteps.tolist():
        x = s.step(noise, t, x, None)
        prev = s.previous(t)
        want = x0 if prev < 0 else s.add_noise(x0, noise, torch.tensor([prev, prev]))
        assert torch.allclose(x, want, atol=1e-3)  # float32; x̂_0 divides by sqrt(ᾱ_T) ~ 5e-4


def test_ddpm_draws_noise_from_the_generator_ddim_does_not():
    g = torch.Generator().manual_seed(2)
    x, eps = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)

    def one_step(sampler, seed):
        s = scheduler_for("linear", 100, sampler)
        s.set_timesteps(10)
        return s.step(eps, 99, x, torch.Generator().manual_seed(seed))

    assert torch.equal(one_step("ddim", 0), one_step("ddim", 1))
    assert torch.equal(one_step("ddpm", 0), one_step("ddpm", 0))
    assert not torch.equal(one_step("ddpm", 0), one_step("ddpm", 1))
    assert scheduler_for("linear", 100, "ddpm").eta == 1.0 and scheduler_for("linear", 100).eta == 0.0
