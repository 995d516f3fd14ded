"""Invariants of the noise schedule (protocol §1 formulas, Ho et al. 2020)."""

import math

import pytest
import torch

from lowdiff.schedule import NoiseSchedule, ScheduleConfig


@pytest.mark.parametrize("kind", ["linear", "quadratic"])
def test_betas_follow_the_spec_formulas(kind):
    schedule = NoiseSchedule(ScheduleConfig(beta_schedule=kind, num_timesteps=100))
    if kind == "linear":
        expected = [1e-4 + (0.02 - 1e-4) * i / 99 for i in range(100)]
    else:
        expected = [
            (math.sqrt(1e-4) + (math.sqrt(0.02) - math.sqrt(1e-4)) * i / 99) ** 2
            for i in range(100)
        ]
    assert torch.allclose(schedule.betas, torch.tensor(expected), rtol=1e-6)
    product = 1.0
    for i, beta in enumerate(expected):
        product *= 1 - beta
        assert schedule.alpha_bar[i].item() == pytest.approx(product, rel=1e-5)


@pytest.mark.parametrize("kind", ["linear", "quadratic"])
def test_predict_x0_inverts_add_noise(kind):
    schedule = NoiseSchedule(ScheduleConfig(beta_schedule=kind))
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 64, 2, generator=generator)
    eps = torch.randn(3, 64, 2, generator=generator)
    t = torch.randint(0, 100, (3, 64), generator=generator)
    xt = schedule.add_noise(x0, eps, t)
    assert torch.allclose(schedule.predict_x0(xt, eps, t), x0, atol=1e-3)


def test_posterior_mean_matches_the_gaussian_product():
    # q(x_{t-1}|x_t, x0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x0): its mean by completing the square
    schedule = NoiseSchedule(ScheduleConfig())
    x0, xt = torch.tensor([[0.7, -1.2]]), torch.tensor([[0.3, 0.5]])
    x0d, xtd = x0.double(), xt.double()
    for t in (1, 10, 50, 99):
        beta = schedule.betas[t].double()
        alpha_bar_prev = schedule.alpha_bar_prev[t].double()
        precision = (1 - beta) / beta + 1 / (1 - alpha_bar_prev)
        mean = (
            (1 - beta).sqrt() / beta * xtd + alpha_bar_prev.sqrt() / (1 - alpha_bar_prev) * x0d
        ) / precision
        got = schedule.posterior_mean(x0, xt, torch.tensor([t]))
        assert torch.allclose(got.double(), mean, atol=1e-3)  # float32 betas at t = 1
        assert schedule.posterior_variance[t].item() == pytest.approx(
            1 / precision.item(), rel=1e-3
        )


@pytest.mark.parametrize("kind", ["linear", "quadratic"])
def test_alpha_sigma_and_lambda_are_the_continuous_time_coefficients(kind):
    schedule = NoiseSchedule(ScheduleConfig(beta_schedule=kind))
    alpha, sigma = schedule.sqrt_alpha_bar.double(), schedule.sqrt_one_minus_alpha_bar.double()
    torch.testing.assert_close(
        alpha.square() + sigma.square(), torch.ones(100, dtype=torch.float64)
    )
    torch.testing.assert_close(
        schedule.lambda_t.double(), (alpha / sigma).log(), rtol=1e-5, atol=1e-6
    )
    assert (schedule.lambda_t[1:] < schedule.lambda_t[:-1]).all()  # the SNR falls with t
    torch.testing.assert_close(schedule.sqrt_inv_alpha_bar_minus_one.double(), sigma / alpha)


def test_a_respaced_schedule_keeps_alpha_bar_at_its_timesteps():
    full = NoiseSchedule(ScheduleConfig())
    kept = [0, 11, 22, 50, 99]
    respaced = full.respace(kept)
    assert respaced.num_timesteps == 5 and respaced.timesteps == kept
    torch.testing.assert_close(respaced.alpha_bar, full.alpha_bar[kept])
    torch.testing.assert_close(respaced.alpha_bar_prev[1:], full.alpha_bar[kept[:-1]])
    product = torch.cumprod(1 - respaced.betas.double(), dim=0)  # betas still multiply out
    torch.testing.assert_close(product, full.alpha_bar64[kept], rtol=1e-6, atol=0)
    torch.testing.assert_close(respaced.respace([1, 3]).alpha_bar, full.alpha_bar[[11, 50]])
    same = full.respace(range(100))  # complete: bit for bit the schedule itself
    for name in ("betas", "posterior_coef_x0", "posterior_coef_xt", "posterior_variance"):
        assert torch.equal(getattr(same, name), getattr(full, name))
    with pytest.raises(ValueError, match="strictly increasing"):
        full.respace([5, 3])
    with pytest.raises(ValueError, match=r"in \[0, 99\]"):
        full.respace([0, 100])


def test_bad_schedules_are_rejected():
    with pytest.raises(ValueError, match="valid"):
        NoiseSchedule(ScheduleConfig(beta_schedule="cosine"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_timesteps"):
        NoiseSchedule(ScheduleConfig(num_timesteps=0))
