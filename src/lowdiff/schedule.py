"""The DDPM noise schedule: betas, forward noising, x0 prediction, the ancestral step.

Follows Ho et al. 2020 ("Denoising Diffusion Probabilistic Models") and SPEC §1. The schedule
knows nothing about models: it maps (x0, eps, t) to xt and (eps_hat, xt, t) to x_{t-1}.
Tensors may carry any leading axes (the engine uses (M, B, 2): models, batch, coordinates).
"""

from __future__ import annotations

import math

import torch

from lowdiff.settings import BetaSchedule as BetaSchedule  # defined torch-free; re-exported
from lowdiff.settings import ScheduleConfig


def _linear_betas(config: ScheduleConfig) -> torch.Tensor:
    return torch.linspace(
        config.beta_start, config.beta_end, config.num_timesteps, dtype=torch.float64
    )


def _quadratic_betas(config: ScheduleConfig) -> torch.Tensor:
    start, end = math.sqrt(config.beta_start), math.sqrt(config.beta_end)
    return torch.linspace(start, end, config.num_timesteps, dtype=torch.float64) ** 2


BETA_SCHEDULES = {"linear": _linear_betas, "quadratic": _quadratic_betas}


def make_betas(config: ScheduleConfig) -> torch.Tensor:
    """Betas in float64, shape (T,)."""
    if config.beta_schedule not in BETA_SCHEDULES:
        raise ValueError(
            f"unknown beta_schedule {config.beta_schedule!r}; valid: {sorted(BETA_SCHEDULES)}"
        )
    if config.num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {config.num_timesteps}")
    if not 0 < config.beta_start <= config.beta_end < 1:
        raise ValueError(
            f"need 0 < beta_start <= beta_end < 1, got {config.beta_start}, {config.beta_end}"
        )
    return BETA_SCHEDULES[config.beta_schedule](config)


class NoiseSchedule:
    """Precomputed DDPM coefficients (float64 maths, stored as float32 on `device`)."""

    def __init__(self, config: ScheduleConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.num_timesteps = config.num_timesteps
        betas = make_betas(config)
        alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        coefficients = {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alpha_bar": (1.0 - alpha_bar).sqrt(),
            "sqrt_inv_alpha_bar": (1.0 / alpha_bar).sqrt(),
            "sqrt_inv_alpha_bar_minus_one": (1.0 / alpha_bar - 1.0).sqrt(),
            # posterior q(x_{t-1} | x_t, x0) mean coefficients, Ho et al. 2020 eq. 7
            "posterior_coef_x0": betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar),
            "posterior_coef_xt": (1.0 - alpha_bar_prev) * (1.0 - betas).sqrt() / (1.0 - alpha_bar),
            # posterior variance beta_tilde, eq. 7, clipped away from 0 as in the reference
            "posterior_variance": (betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)).clamp(
                min=1e-20
            ),
        }
        for name, value in coefficients.items():
            setattr(self, name, value.to(device=device, dtype=torch.float32))

    @staticmethod
    def _at(coefficient: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return coefficient[t].unsqueeze(-1)  # (..., 1), broadcasts over coordinates

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0), eq. 4: xt = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps."""
        return (
            self._at(self.sqrt_alpha_bar, t) * x0 + self._at(self.sqrt_one_minus_alpha_bar, t) * eps
        )

    def predict_x0(self, xt: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Invert the forward process: x0 = sqrt(1/alpha_bar) xt - sqrt(1/alpha_bar - 1) eps."""
        return (
            self._at(self.sqrt_inv_alpha_bar, t) * xt
            - self._at(self.sqrt_inv_alpha_bar_minus_one, t) * eps
        )

    def posterior_mean(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x0), Ho et al. 2020 eq. 7."""
        return self._at(self.posterior_coef_x0, t) * x0 + self._at(self.posterior_coef_xt, t) * xt

    def step(
        self, eps_hat: torch.Tensor, t: int, xt: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """One ancestral sampling step x_t -> x_{t-1} for a timestep shared by the whole batch.

        `noise` is the standard normal z (same shape as xt); it is used only for t > 0.
        """
        index = torch.tensor(t, device=xt.device)
        x0_hat = self.predict_x0(xt, eps_hat, index)  # Ho et al. 2020 eq. 15
        mean = self.posterior_mean(x0_hat, xt, index)
        if t == 0:
            return mean
        if noise is None:
            raise ValueError("a step with t > 0 needs its Gaussian noise")
        return mean + self.posterior_variance[t].sqrt() * noise
