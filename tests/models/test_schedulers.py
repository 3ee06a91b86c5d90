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


# --- DPM-Solver++(2M) (Lu et al. 2022) ----------------------------------------------------------


@pytest.mark.parametrize("schedule", sorted(BETA_SCHEDULES))
def test_dpm_solver_with_the_true_noise_lands_on_the_forward_process(schedule):
    """ε = the noise that made x_t: every x̂_0 is x_0, D_i = x_0, and each step lands on x_0
    noised with the same ε at the next timestep (σ_i/σ_{i−1} α_{i−1} − α_i e^{−h_i} = 0)."""
    s = scheduler_for(schedule, 100, "dpmpp_2m")
    s.set_timesteps(6)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.rand(2, 1, 4, 4, generator=g) * 1.8 - 0.9, torch.randn(2, 1, 4, 4, generator=g)
    x = s.add_noise(x0, noise, torch.tensor([99, 99]))
    for t in s.timesteps.tolist():
        x = s.step(noise, t, x, None)
        prev = s.previous(t)
        want = x0 if prev < 0 else s.add_noise(x0, noise, torch.tensor([prev, prev]))
        assert torch.allclose(x, want, atol=1e-3)


def _gaussian_error(sampler: str, steps: int) -> float:
    """Data N(0, s² I): the exact x̂_0 is α s² x / (α² s² + σ²) and the probability-flow ODE
    carries x_T to s · x_T / sqrt(α_T² s² + σ_T²); the sampler's distance from that endpoint."""
    import math

    sd = 0.5
    sch = scheduler_for("linear", 1000, sampler)
    sch.set_timesteps(steps)
    ab = sch.alphas_cumprod
    x_T = torch.linspace(-1.5, 1.5, 16, dtype=torch.float64).view(1, 1, 4, 4)
    x = x_T.clone()
    for t in sch.timesteps.tolist():
        a, sigma = math.sqrt(ab[t]), math.sqrt(1 - ab[t])
        eps = (x - a * (a * sd**2 * x / (a**2 * sd**2 + sigma**2))) / sigma
        x = sch.step(eps, t, x, None)
    want = sd * x_T / math.sqrt(ab[-1] * sd**2 + 1 - ab[-1])
    return float((x - want).abs().max())


@pytest.mark.parametrize("steps", [10, 20])
def test_dpm_solver_is_closer_to_the_ode_than_ddim_at_the_same_steps(steps):
    dpm, ddim = _gaussian_error("dpmpp_2m", steps), _gaussian_error("ddim", steps)
    assert dpm < ddim / 4  # second order: measured 0.024 vs 0.21 (10 steps), 0.011 vs 0.10 (20)
    assert _gaussian_error("dpmpp_2m", 20) < dpm or steps == 20  # and converges


def test_dpm_solver_timesteps_are_log_snr_spaced_and_restart_each_run():
    s = scheduler_for("linear", 1000, "dpmpp_2m")
    s.set_timesteps(10)
    ts = s.timesteps.tolist()
    assert ts[0] == 999 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:], strict=False))
    lam = 0.5 * torch.log(s.alphas_cumprod / (1 - s.alphas_cumprod))[s.timesteps]
    gaps = lam[1:] - lam[:-1]
    assert (gaps > 0).all() and gaps.max() < 1.5 * gaps.median()  # even in λ, not in t
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 1, 4, 4, generator=g), torch.randn(1, 1, 4, 4, generator=g)
    first = s.step(eps, 999, x, None)
    s.step(eps, ts[1], first, None)
    s.set_timesteps(10)  # a new run forgets the previous x̂_0: its first step is first order again
    assert torch.equal(s.step(eps, 999, x, None), first)


def test_unknown_sampler_is_named():
    with pytest.raises(InvalidInput, match="sampler: unknown 'euler'"):
        scheduler_for("linear", 100, "euler")  # type: ignore[arg-type]
