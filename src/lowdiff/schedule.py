"""The DDPM noise schedule: betas, the forward process and the coefficients samplers use.

Follows Ho et al. 2020 ("Denoising Diffusion Probabilistic Models") and protocol §1; the
continuous-time notation alpha_t, sigma_t, lambda_t is that of DDIM (Song et al. 2021) and
DPM-Solver (Lu et al. 2022). The schedule knows nothing about models or samplers: it holds the
coefficients as declared attributes and maps between x0, xt and eps.

Argument order, everywhere: the paper symbols in the order x0, xt, eps (each where it applies),
then t. So `add_noise(x0, eps, t)`, `predict_x0(xt, eps, t)`, `posterior_mean(x0, xt, t)`.
Tensors may carry any leading axes (the engine uses (M, B, 2): models, batch, coordinates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lowdiff import catalogue
from lowdiff.catalogue import BetaSchedule as BetaSchedule  # declared torch-free; re-exported
from lowdiff.settings import ScheduleConfig


def _linear_betas(config: ScheduleConfig) -> torch.Tensor:
    return torch.linspace(
        config.beta_start, config.beta_end, config.num_timesteps, dtype=torch.float64
    )


def _quadratic_betas(config: ScheduleConfig) -> torch.Tensor:
    start, end = math.sqrt(config.beta_start), math.sqrt(config.beta_end)
    return torch.linspace(start, end, config.num_timesteps, dtype=torch.float64) ** 2


BETA_SCHEDULES = {"linear": _linear_betas, "quadratic": _quadratic_betas}
catalogue.check_registry("beta schedule", catalogue.SCHEDULES, BETA_SCHEDULES)


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


def _kept_timesteps(timesteps: Sequence[int] | None, num_timesteps: int) -> list[int]:
    if timesteps is None:
        return list(range(num_timesteps))
    kept = [int(t) for t in timesteps]
    if not kept or kept != sorted(set(kept)) or not 0 <= kept[0] <= kept[-1] < num_timesteps:
        raise ValueError(
            f"timesteps must be strictly increasing integers in [0, {num_timesteps - 1}], "
            f"got {kept}"
        )
    return kept


class NoiseSchedule:
    """Precomputed DDPM coefficients (float64 maths, stored as float32 on `device`), index t.

    With `timesteps` (increasing), the schedule keeps only those timesteps: the *respaced*
    schedule of Nichol & Dhariwal 2021 §4, with the same alpha_bar at each kept timestep and
    betas recomputed as 1 - alpha_bar_t / alpha_bar_prev, so its index i stands for the model's
    timestep `timesteps[i]`. A complete list leaves the schedule bit-identical.
    """

    config: ScheduleConfig
    num_timesteps: int  # T, the number of indices
    timesteps: list[int]  # the model's timestep at each index (0..T-1 unless respaced)
    alpha_bar64: torch.Tensor  # (T,) float64 on the CPU: what the coefficients come from
    betas: torch.Tensor  # (T,) beta_t
    alpha_bar: torch.Tensor  # (T,) prod_{s<=t} (1 - beta_s)
    alpha_bar_prev: torch.Tensor  # (T,) alpha_bar_{t-1}, with alpha_bar_{-1} = 1
    sqrt_alpha_bar: torch.Tensor  # (T,) alpha_t = sqrt(alpha_bar_t) (Lu et al. 2022 notation)
    sqrt_one_minus_alpha_bar: torch.Tensor  # (T,) sigma_t = sqrt(1 - alpha_bar_t)
    sqrt_inv_alpha_bar: torch.Tensor  # (T,) sqrt(1 / alpha_bar_t)
    sqrt_inv_alpha_bar_minus_one: torch.Tensor  # (T,) sqrt(1 / alpha_bar_t - 1) = sigma_t / alpha_t
    lambda_t: torch.Tensor  # (T,) half log-SNR: log(alpha_t / sigma_t), decreasing in t
    posterior_coef_x0: torch.Tensor  # (T,) c1 of the posterior mean, Ho et al. 2020 eq. 7
    posterior_coef_xt: torch.Tensor  # (T,) c2 of the posterior mean, eq. 7
    posterior_variance: torch.Tensor  # (T,) beta_tilde_t, eq. 7, clipped at 1e-20

    def __init__(
        self,
        config: ScheduleConfig,
        device: torch.device | str = "cpu",
        *,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        self.config = config
        betas = make_betas(config)
        alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        self.timesteps = _kept_timesteps(timesteps, config.num_timesteps)
        self.num_timesteps = len(self.timesteps)
        if self.num_timesteps < config.num_timesteps:  # respaced
            alpha_bar = alpha_bar[self.timesteps]
            betas = 1.0 - alpha_bar / torch.cat(
                [torch.ones(1, dtype=torch.float64), alpha_bar[:-1]]
            )
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])

        def stored(value: torch.Tensor) -> torch.Tensor:
            return value.to(device=device, dtype=torch.float32)

        self.alpha_bar64 = alpha_bar
        self.betas = stored(betas)
        self.alpha_bar = stored(alpha_bar)
        self.alpha_bar_prev = stored(alpha_bar_prev)
        self.sqrt_alpha_bar = stored(alpha_bar.sqrt())
        self.sqrt_one_minus_alpha_bar = stored((1.0 - alpha_bar).sqrt())
        self.sqrt_inv_alpha_bar = stored((1.0 / alpha_bar).sqrt())
        self.sqrt_inv_alpha_bar_minus_one = stored((1.0 / alpha_bar - 1.0).sqrt())
        self.lambda_t = stored(0.5 * (alpha_bar.log() - (-alpha_bar).log1p()))
        self.posterior_coef_x0 = stored(betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar))
        self.posterior_coef_xt = stored(
            (1.0 - alpha_bar_prev) * (1.0 - betas).sqrt() / (1.0 - alpha_bar)
        )
        # clipped away from 0 (it is 0 at t = 0) as in the reference implementation
        self.posterior_variance = stored(
            (betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)).clamp(min=1e-20)
        )

    def respace(self, timesteps: Sequence[int]) -> NoiseSchedule:
        """The schedule restricted to its indices `timesteps` (increasing), on the same device."""
        kept = [self.timesteps[i] for i in _kept_timesteps(timesteps, self.num_timesteps)]
        return NoiseSchedule(self.config, self.betas.device, timesteps=kept)

    @staticmethod
    def _at(coefficient: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return coefficient[t].unsqueeze(-1)  # (..., 1), broadcasts over coordinates

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0), eq. 4: xt = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps."""
        return (
            self._at(self.sqrt_alpha_bar, t) * x0 + self._at(self.sqrt_one_minus_alpha_bar, t) * eps
        )

    def predict_x0(self, xt: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Invert the forward process (Ho et al. 2020 eq. 15):
        x0 = sqrt(1/alpha_bar) xt - sqrt(1/alpha_bar - 1) eps."""
        return (
            self._at(self.sqrt_inv_alpha_bar, t) * xt
            - self._at(self.sqrt_inv_alpha_bar_minus_one, t) * eps
        )

    def posterior_mean(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x0), Ho et al. 2020 eq. 7."""
        return self._at(self.posterior_coef_x0, t) * x0 + self._at(self.posterior_coef_xt, t) * xt
