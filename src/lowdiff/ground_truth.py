"""Ground-truth measurements of M trained models at once: excess loss and exact likelihoods.

Based on the true laws of `lowdiff.truth` (docs/protocol.md, "Ground truth"):

- The loss floor at every timestep t: the Bayes-optimal eps-prediction MSE
  E||eps − E[eps | x_t]||² / 2 (Ho et al. 2020, eq. 14, averaged over the 2 coordinates as the
  protocol's eval loss is), on `points` fresh true draws per t (seed `truth.TRUTH_SEED + 1`, the
  same draws for every model, so runs are compared on common random numbers).
- The model's MSE on the same draws, and its excess over the floor, paired point by point.
- The exact log-likelihood of the model's probability-flow ODE (Song et al. 2021, eq. 13 and
  App. D.2): the continuous-time extension of the discrete schedule interpolates log ᾱ and
  the network's eps linearly between integer timesteps u = 0..T−1; the ODE
  dx/du = ½ (d log ᾱ/du) (x − eps(x, u)/σ(u)) carries a point from the level of t = 0
  (x = √ᾱ_0 x0 + σ_0 eps) to t = T−1, where the prior is the sampler's N(0, I). The divergence
  is exact (two backward passes in 2-D, no Hutchinson estimator) and the solver torchdiffeq's
  adaptive Dormand–Prince (dopri5) with rtol = atol = `tolerance`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lowdiff import data, truth
from lowdiff.settings import EvalConfig
from lowdiff.truth import LN2, TimestepDraws

__all__ = [
    "BatchTruth",
    "ContinuousSchedule",
    "excess_by_timestep",
    "measure_batch",
    "model_eps",
    "ode_log_likelihood",
]

EpsFunction = Callable[[torch.Tensor, float], torch.Tensor]  # (x (M, B, 2), u) -> eps_hat


@torch.no_grad()
def excess_by_timestep(
    model: torch.nn.Module, draws: Sequence[TimestepDraws], device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Model m's eps-MSE at each t on draws[m], and its paired excess over the floor: (M, T) x2."""
    count = draws[0].xt.shape[0]
    mse = np.empty((len(draws), count))
    excess = np.empty((len(draws), count))
    for t in range(count):
        xt = torch.stack([torch.from_numpy(d.xt[t]) for d in draws]).to(device, torch.float32)
        eps_hat = model(xt, t).eps.double().cpu().numpy()  # (M, P, 2)
        for m, drawn in enumerate(draws):
            model_loss = ((eps_hat[m] - drawn.eps[t]) ** 2).mean(axis=1)
            floor_loss = ((drawn.eps_star[t] - drawn.eps[t]) ** 2).mean(axis=1)
            mse[m, t] = model_loss.mean()
            excess[m, t] = (model_loss - floor_loss).mean()
    return mse, excess


# --- the probability-flow ODE ----------------------------------------------------------------


class ContinuousSchedule:
    """ᾱ(u) for continuous u in [0, T−1]: log ᾱ linear between the integer timesteps."""

    def __init__(self, alpha_bar: np.ndarray) -> None:
        if len(alpha_bar) < 2:
            raise ValueError("the probability-flow ODE needs at least 2 timesteps")
        self.log_alpha_bar = np.log(np.asarray(alpha_bar, dtype=np.float64))
        self.last = len(alpha_bar) - 1

    def _segment(self, u: float) -> tuple[int, float]:
        k = min(max(int(math.floor(u)), 0), self.last - 1)
        return k, u - k

    def log_alpha_bar_at(self, u: float) -> float:
        k, w = self._segment(u)
        return (1 - w) * self.log_alpha_bar[k] + w * self.log_alpha_bar[k + 1]

    def alpha(self, u: float) -> float:
        return math.exp(0.5 * self.log_alpha_bar_at(u))

    def sigma(self, u: float) -> float:
        return math.sqrt(-math.expm1(self.log_alpha_bar_at(u)))

    def dlog_alpha_bar(self, u: float) -> float:
        k, _ = self._segment(u)
        return float(self.log_alpha_bar[k + 1] - self.log_alpha_bar[k])


def model_eps(model: torch.nn.Module, schedule: ContinuousSchedule) -> EpsFunction:
    """The network's eps at continuous u: linear between its two neighbouring timesteps."""

    def eps(x: torch.Tensor, u: float) -> torch.Tensor:
        k, w = schedule._segment(u)
        out = model(x.float(), k).eps.to(x.dtype)
        if w > 0:
            out = (1 - w) * out + w * model(x.float(), k + 1).eps.to(x.dtype)
        return out

    return eps


def _divergence(eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_i d eps_i / d x_i per point, exact: one backward pass per coordinate (2-D)."""
    (first,) = torch.autograd.grad(eps[..., 0].sum(), x, retain_graph=True)
    (second,) = torch.autograd.grad(eps[..., 1].sum(), x)
    return first[..., 0] + second[..., 1]


def _flow(eps_fn: EpsFunction, schedule: ContinuousSchedule) -> Callable:
    def dynamics(u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple:
        x = state[0].detach().requires_grad_(True)
        u_value = float(u)
        slope, sigma = schedule.dlog_alpha_bar(u_value), schedule.sigma(u_value)
        with torch.enable_grad():
            eps = eps_fn(x, u_value)
            divergence = _divergence(eps, x)
        # probability flow, Song et al. 2021 eq. 13 with score = −eps/σ: ½ (log ᾱ)' (x − eps/σ)
        velocity = 0.5 * slope * (x - eps / sigma)
        return velocity.detach(), (0.5 * slope * (2.0 - divergence / sigma)).detach()

    return dynamics


def ode_log_likelihood(
    eps_fn: EpsFunction, schedule: ContinuousSchedule, x: torch.Tensor, tolerance: float = 1e-5
) -> torch.Tensor:
    """log p(x) in nats (M, B) of the ODE model at the level of t = 0, for x (M, B, 2).

    Change of variables along the flow: log p_0(x_0) = log N(x_{T−1}; 0, I) + ∫ div f du.
    """
    from torchdiffeq import odeint  # imported here: only the likelihood needs it

    x = x.double()
    start = (x, torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device))
    span = torch.tensor([0.0, float(schedule.last)], dtype=x.dtype)
    # the field's slope jumps at every integer u: the solver restarts there (jump_t)
    jumps = torch.arange(1, schedule.last, dtype=x.dtype)
    end_x, integral = odeint(
        _flow(eps_fn, schedule),
        start,
        span,
        method="dopri5",
        rtol=tolerance,
        atol=tolerance,
        options={"jump_t": jumps},
    )
    prior = -0.5 * (end_x[-1] ** 2).sum(-1) - math.log(2 * math.pi)
    return prior + integral[-1]


# --- one trained batch -----------------------------------------------------------------------


@dataclass(frozen=True)
class BatchTruth:
    """The ground truth of a batch's models (model axis first); None where a model's dataset
    has no known law."""

    mse: np.ndarray  # (M, T) eps-MSE at each timestep on the true draws
    excess: np.ndarray  # (M, T) paired excess over the Bayes floor
    floor: np.ndarray  # (M, T) the Bayes floor on the same draws
    log_model: np.ndarray  # (M, B) ODE log-density (nats) of the level-0 true draws
    log_true: np.ndarray  # (M, B) true log-density (nats) of the same draws
    sample_log_density: np.ndarray  # (M,) mean true log2-density of the samples
    available: tuple[bool, ...]

    def metrics(self, m: int) -> dict[str, float]:
        """The ground-truth metrics of model m (those that came out finite)."""
        if not self.available[m]:
            return {}
        values = {
            "excess_eval_loss": float(self.excess[m].mean()),  # t uniform, as the eval loss
            "ode_nll_bits": float(-self.log_model[m].mean() / LN2),
            "ode_kl_bits": float((self.log_true[m] - self.log_model[m]).mean() / LN2),
            "sample_log_density": float(self.sample_log_density[m]),
        }
        return {name: value for name, value in values.items() if math.isfinite(value)}

    def arrays(self, m: int) -> dict[str, dict[str, np.ndarray] | None]:
        """loss_by_timestep.npz (t, model, floor, excess) and likelihood.npz of model m."""
        if not self.available[m]:
            return {"loss_by_timestep.npz": None, "likelihood.npz": None}
        steps = np.arange(self.mse.shape[1])
        return {
            "loss_by_timestep.npz": {
                "t": steps,
                "model": self.mse[m],
                "floor": self.floor[m],
                "excess": self.excess[m],
            },
            "likelihood.npz": {"log_model": self.log_model[m], "log_true": self.log_true[m]},
        }


def _ode_draws(name: str, count: int, alpha_bar: np.ndarray) -> np.ndarray:
    """`count` fresh true draws at the level of t = 0 (seed TRUTH_SEED + 2)."""
    alpha, sigma = truth.level_zero(alpha_bar)
    x0 = data.load(name, count, seed=truth.TRUTH_SEED + 2).astype(np.float64)
    return alpha * x0 + sigma * truth.noise_generator(truth.TRUTH_SEED + 2).normal(size=x0.shape)


def measure_batch(
    ema_model: torch.nn.Module,
    datasets: Sequence[str],
    alpha_bar: np.ndarray,
    samples: np.ndarray,  # (M, N, 2)
    config: EvalConfig,
    device: torch.device,
) -> BatchTruth | None:
    """Excess loss by timestep, ODE likelihood and sample log-density of M models at once."""
    known = [_has_law(name) for name in datasets]
    if not any(known):
        return None
    stand_in = datasets[known.index(True)]  # a model without a law is run on these, unused
    names = [name if ok else stand_in for name, ok in zip(datasets, known, strict=True)]
    draws = [truth.timestep_draws(name, alpha_bar, config.ground_truth_points) for name in names]
    mse, excess = excess_by_timestep(ema_model, draws, device)
    points = np.stack([_ode_draws(name, config.ode_points, alpha_bar) for name in names])
    alpha, sigma = truth.level_zero(alpha_bar)
    log_true = np.stack(
        [
            truth.law_of(n).noised_log_prob(p, alpha, sigma)
            for n, p in zip(names, points, strict=True)
        ]
    )
    schedule = ContinuousSchedule(alpha_bar)
    network = model_eps(ema_model, schedule)
    x = torch.from_numpy(points).to(device)
    with torch.no_grad():  # a diverged model (non-finite eps) would stall the shared solver
        broken = ~torch.isfinite(network(x, 0.0)).all(dim=-1).all(dim=-1)

    def eps(x: torch.Tensor, u: float) -> torch.Tensor:
        # a broken model sees its points detached and gives eps 0: no NaN reaches the solver
        mask = broken[:, None, None]
        return torch.where(mask, 0.0, network(torch.where(mask, x.detach(), x), u))

    log_model = ode_log_likelihood(eps, schedule, x, config.ode_tolerance)
    log_model = log_model.masked_fill(broken[:, None], math.nan)  # dropped by metrics()
    densities = np.array(
        [
            truth.sample_log_density(name, s, alpha_bar) if np.isfinite(s).all() else math.nan
            for name, s in zip(names, samples, strict=True)
        ]
    )
    floor = np.stack([d.floor for d in draws])
    return BatchTruth(
        mse, excess, floor, log_model.cpu().numpy(), log_true, densities, tuple(known)
    )


def _has_law(name: str) -> bool:
    try:
        truth.law_of(name)
    except (truth.NoLawError, ValueError):
        return False
    return True
