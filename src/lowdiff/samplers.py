"""Samplers: short loops over the noise schedule that turn N(0, I) noise into samples.

Modelled on k-diffusion's samplers and diffusers' schedulers: the schedule is shared, each
step returns a small named output, and one driver (`sample`) runs every sampler. A step gets a
callable `denoise(x, index) -> eps_hat` and calls the network as often as it needs (Heun: twice);
a sampler that needs one evaluation per step only writes `step(xt, eps_hat, index, noise)`. What
each sampler is (its evaluations per step, its options) is declared in `lowdiff.catalogue`; the
registry `SAMPLERS` below is checked against it at import. The steps run at the timesteps
`sampling_timesteps(T, S)`: T-1 to 0, evenly spaced and rounded to the nearest integer
(diffusers' "linspace" spacing); all T of them by default. A sampler with S < T steps runs on
the *respaced* schedule of those timesteps (`NoiseSchedule.respace`, Nichol & Dhariwal 2021 §4),
whose index i stands for timestep `timesteps[i]`. The last step of every sampler goes from
timestep 0 to the data (alpha_bar = 1) and returns its x0 prediction.

- `ancestral`: DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), the protocol (protocol §1).
- `ddim`: DDIM (Song et al. 2021, eq. 12), with sigma_t = eta * (eq. 16); eta = 0 is the
  deterministic probability-flow sampler, eta = 1 with all T steps is ancestral DDPM.
- `dpm_solver_pp`: DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), the multistep second-order
  solver of the probability-flow ODE in data prediction. The first step is first-order (no
  history yet), and so are the last two: into timestep 0 and from it to sigma = 0 (where the
  first-order step returns the data prediction). diffusers (`lower_order_final`,
  `final_sigmas_type="zero"`) likewise always takes its final step, from its last timestep to
  sigma = 0, at first order; on this grid, which ends at timestep 0 (sigma_0 = 0.01 at T = 100),
  the step into timestep 0 spans the largest lambda-interval of the grid, where the
  second-order extrapolation overshoots (3 to 20 times the error against a Gaussian's exact
  flow at 15-50 steps; docs/protocol.md).
- `heun`: Heun's second-order method on the probability-flow ODE (Karras et al. 2022,
  Algorithm 1) in its variance-exploding coordinates x / alpha, sigma / alpha, on this discrete
  grid: an Euler step (which is DDIM with eta = 0) corrected by the slope at its end point, two
  evaluations per step; the last step, to sigma = 0, is Euler's (Algorithm 1 line 8).
- `dpm_solver_pp_sde`: DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion's `sample_dpmpp_2m_sde`,
  eta = 1, midpoint correction), the multistep second-order solver of the reverse SDE. Its
  first-order step is exactly the ancestral step (tested); orders as in `dpm_solver_pp`.

Adding a sampler: its declaration in `lowdiff.catalogue.SAMPLERS`, a subclass of `Sampler` here
and its name in `SAMPLERS`; tests/test_samplers.py parametrises over the catalogue.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from lowdiff import catalogue
from lowdiff.catalogue import SamplerName as SamplerName  # re-exported: the registry's names
from lowdiff.models import Denoiser
from lowdiff.schedule import NoiseSchedule

# denoise(x (M, N, 2), index of the respaced schedule) -> eps_hat (M, N, 2): the network
Denoise = Callable[[torch.Tensor, int], torch.Tensor]


class StepOutput(NamedTuple):
    prev_sample: torch.Tensor  # (M, N, 2) the state entering the next step (after the last: x0)
    x0_hat: torch.Tensor  # (M, N, 2) this step's prediction of x0


def sampling_timesteps(num_timesteps: int, sampling_steps: int = 0) -> list[int]:
    """Decreasing timesteps of S = `sampling_steps` steps (0: all T): round(linspace(T-1, 0, S))."""
    if not 0 <= sampling_steps <= num_timesteps:
        raise ValueError(
            f"the number of sampling steps must be between 1 and T = {num_timesteps} "
            f"(or 0 for all T), got {sampling_steps}"
        )
    count = sampling_steps or num_timesteps
    timesteps = np.linspace(num_timesteps - 1, 0, count).round().astype(int).tolist()
    assert len(set(timesteps)) == count  # spacing >= 1 when S <= T
    return timesteps


class Sampler:
    """One reverse step per index of a respaced schedule, from index S-1 (timestep T-1) to 0."""

    def __init__(self, schedule: NoiseSchedule, sampling_steps: int = 0, eta: float = 0.0) -> None:
        self.eta = eta
        self.schedule = schedule.respace(
            sampling_timesteps(schedule.num_timesteps, sampling_steps)[::-1]
        )

    def advance(
        self, xt: torch.Tensor, index: int, denoise: Denoise, normal: Callable[[], torch.Tensor]
    ) -> StepOutput:
        """The step from index to index - 1: `denoise` as often as it needs, then `normal()`
        for its Gaussian draw, if any. By default one evaluation, then `step`."""
        eps_hat = denoise(xt, index)
        return self.step(xt, eps_hat, index, normal() if self.needs_noise(index) else None)

    def needs_noise(self, index: int) -> bool:
        """Whether the step at `index` takes a standard normal draw (drawn after the model)."""
        return False

    def step(
        self, xt: torch.Tensor, eps_hat: torch.Tensor, index: int, noise: torch.Tensor | None
    ) -> StepOutput:
        raise NotImplementedError(f"{type(self).__name__} overrides `advance`, not `step`")


class Ancestral(Sampler):
    """DDPM: x_{t-1} = posterior mean at x0_hat + sqrt(beta_tilde_t) z (Ho et al. 2020 eqs. 7, 15).

    With all T steps this is protocol §1's sampler, bit for bit.
    """

    def needs_noise(self, index: int) -> bool:
        return index > 0

    def step(
        self, xt: torch.Tensor, eps_hat: torch.Tensor, index: int, noise: torch.Tensor | None
    ) -> StepOutput:
        schedule, at = self.schedule, torch.tensor(index, device=xt.device)
        x0_hat = schedule.predict_x0(xt, eps_hat, at)  # eq. 15
        mean = schedule.posterior_mean(x0_hat, xt, at)  # eq. 7
        if index == 0:
            return StepOutput(mean, x0_hat)
        if noise is None:
            raise ValueError("an ancestral step with t > 0 needs its Gaussian noise")
        return StepOutput(mean + schedule.posterior_variance[index].sqrt() * noise, x0_hat)


class DDIM(Sampler):
    """x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z, eq. 12,
    sigma^2 = eta^2 (1 - ab_prev) / (1 - ab) (1 - ab / ab_prev), eq. 16 (Song et al. 2021)."""

    def __init__(self, schedule: NoiseSchedule, sampling_steps: int = 0, eta: float = 0.0) -> None:
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"ddim's eta must be in [0, 1], got {eta}")
        super().__init__(schedule, sampling_steps, eta)
        alpha_bar = self.schedule.alpha_bar64  # (S,) float64
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        # eq. 16; at eta = 1 it equals the posterior variance beta_tilde (tested)
        self.variance = (
            eta**2 * (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        )
        direction = (1 - alpha_bar_prev - self.variance).clamp(min=0.0).sqrt()
        device = self.schedule.betas.device
        self.coef_x0 = alpha_bar_prev.sqrt().to(device, torch.float32)
        self.coef_eps = direction.to(device, torch.float32)
        self.sigma = self.variance.sqrt().to(device, torch.float32)

    def needs_noise(self, index: int) -> bool:
        return self.eta > 0 and index > 0  # sigma = 0 on the last step (ab_prev = 1)

    def step(
        self, xt: torch.Tensor, eps_hat: torch.Tensor, index: int, noise: torch.Tensor | None
    ) -> StepOutput:
        x0_hat = self.schedule.predict_x0(xt, eps_hat, torch.tensor(index, device=xt.device))
        prev = self.coef_x0[index] * x0_hat + self.coef_eps[index] * eps_hat
        if self.needs_noise(index):
            if noise is None:
                raise ValueError("a ddim step with eta > 0 needs its Gaussian noise")
            prev = prev + self.sigma[index] * noise
        return StepOutput(prev, x0_hat)


class DPMSolverPlusPlus(Sampler):
    """DPM-Solver++(2M), Lu et al. 2022 Algorithm 2, with h = lambda_t - lambda_s:
    x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D, where D = x0_hat_s on a first-order
    step (the first, and those into timestep 0 and into the data) and
    D = (1 + 1/(2r)) x0_hat_s - 1/(2r) x0_hat_prev with r = h_prev / h otherwise."""

    def __init__(self, schedule: NoiseSchedule, sampling_steps: int = 0, eta: float = 0.0) -> None:
        super().__init__(schedule, sampling_steps, eta)
        alpha_bar = self.schedule.alpha_bar64
        self.alpha = alpha_bar.sqrt().tolist()  # alpha_t, index i
        self.sigma = (1 - alpha_bar).sqrt().tolist()  # sigma_t
        self.lambdas = (0.5 * (alpha_bar.log() - (-alpha_bar).log1p())).tolist()  # lambda_t
        self.previous_x0: torch.Tensor | None = None  # x0_hat of the step before

    def step(
        self, xt: torch.Tensor, eps_hat: torch.Tensor, index: int, noise: torch.Tensor | None
    ) -> StepOutput:
        x0_hat = self.schedule.predict_x0(xt, eps_hat, torch.tensor(index, device=xt.device))
        previous, self.previous_x0 = self.previous_x0, x0_hat
        if index == 0:  # to sigma = 0 (lambda = inf): the first-order step gives x0_hat itself
            return StepOutput(x0_hat, x0_hat)
        s, t = index, index - 1  # from timestep index s to the next one, t
        h = self.lambdas[t] - self.lambdas[s]
        data = x0_hat
        if previous is not None and t > 0:  # second order from the last two data predictions
            half_inv_r = 0.5 * h / (self.lambdas[s] - self.lambdas[s + 1])
            data = (1 + half_inv_r) * x0_hat - half_inv_r * previous
        prev = (self.sigma[t] / self.sigma[s]) * xt - (self.alpha[t] * math.expm1(-h)) * data
        return StepOutput(prev, x0_hat)


class DPMSolverPlusPlusSDE(DPMSolverPlusPlus):
    """DPM-Solver++(2M) SDE with eta = 1 (k-diffusion `sample_dpmpp_2m_sde`, midpoint), in the
    variance-preserving variables, h = lambda_t - lambda_s:
    x_t = (sigma_t / sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) x0_hat_s
          + alpha_t (1 - e^{-2h}) / (2r) (x0_hat_s - x0_hat_prev)   (second order only)
          + sigma_t sqrt(1 - e^{-2h}) z,
    with r = h_prev / h; orders as in DPM-Solver++(2M). At first order this is the DDPM
    posterior step: (sigma_t / sigma_s) e^{-h} = c2 of Ho et al. eq. 7 and
    sigma_t^2 (1 - e^{-2h}) = beta_tilde."""

    def needs_noise(self, index: int) -> bool:
        return index > 0

    def step(
        self, xt: torch.Tensor, eps_hat: torch.Tensor, index: int, noise: torch.Tensor | None
    ) -> StepOutput:
        x0_hat = self.schedule.predict_x0(xt, eps_hat, torch.tensor(index, device=xt.device))
        previous, self.previous_x0 = self.previous_x0, x0_hat
        if index == 0:  # to sigma = 0: the data prediction
            return StepOutput(x0_hat, x0_hat)
        if noise is None:
            raise ValueError("a dpm_solver_pp_sde step with t > 0 needs its Gaussian noise")
        s, t = index, index - 1
        h = self.lambdas[t] - self.lambdas[s]
        keep = -math.expm1(-2 * h)  # 1 - e^{-2h}
        prev = (self.sigma[t] / self.sigma[s] * math.exp(-h)) * xt + (self.alpha[t] * keep) * x0_hat
        if previous is not None and t > 0:  # the midpoint correction from the last two predictions
            half_inv_r = 0.5 * h / (self.lambdas[s] - self.lambdas[s + 1])
            prev = prev + (self.alpha[t] * keep * half_inv_r) * (x0_hat - previous)
        return StepOutput(prev + (self.sigma[t] * math.sqrt(keep)) * noise, x0_hat)


class Heun(Sampler):
    """Heun's method on the probability-flow ODE dx~/dsigma~ = eps_hat (Karras et al. 2022,
    Algorithm 1, with D = x0_hat so that d = (x~ - D) / sigma~ = eps_hat), in x~ = x / alpha,
    sigma~ = sigma / alpha:  x~' = x~ + (sigma~_t - sigma~_s) d_s  (Euler),
    x~_t = x~ + (sigma~_t - sigma~_s) (d_s + d'_t) / 2, d'_t = eps_hat(alpha_t x~', t)."""

    def __init__(self, schedule: NoiseSchedule, sampling_steps: int = 0, eta: float = 0.0) -> None:
        super().__init__(schedule, sampling_steps, eta)
        alpha_bar = self.schedule.alpha_bar64
        self.alpha = alpha_bar.sqrt().tolist()  # alpha_t, index i
        self.sigma_ve = (
            ((1 - alpha_bar) / alpha_bar).sqrt().tolist()
        )  # sigma~_t = sigma_t / alpha_t

    def advance(
        self, xt: torch.Tensor, index: int, denoise: Denoise, normal: Callable[[], torch.Tensor]
    ) -> StepOutput:
        eps_hat = denoise(xt, index)
        x0_hat = self.schedule.predict_x0(xt, eps_hat, torch.tensor(index, device=xt.device))
        if index == 0:  # Euler to sigma~ = 0 lands on x0_hat (Algorithm 1, line 8)
            return StepOutput(x0_hat, x0_hat)
        s, t = index, index - 1
        x_ve, delta = xt / self.alpha[s], self.sigma_ve[t] - self.sigma_ve[s]
        euler = x_ve + delta * eps_hat  # (M, N, 2)
        eps_end = denoise(self.alpha[t] * euler, t)  # the slope at the Euler step's end point
        prev = x_ve + (0.5 * delta) * (eps_hat + eps_end)  # trapezoid, Algorithm 1 line 11
        return StepOutput(self.alpha[t] * prev, x0_hat)


SAMPLERS: dict[str, type[Sampler]] = {
    "ancestral": Ancestral,
    "ddim": DDIM,
    "dpm_solver_pp": DPMSolverPlusPlus,
    "heun": Heun,
    "dpm_solver_pp_sde": DPMSolverPlusPlusSDE,
}
catalogue.check_registry("sampler", catalogue.SAMPLERS, SAMPLERS)


def make_sampler(
    name: str, schedule: NoiseSchedule, sampling_steps: int = 0, eta: float = 0.0
) -> Sampler:
    """The sampler `name` of SAMPLERS over `schedule`; a clear ValueError for a bad name/option."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    if eta != 0.0 and "eta" not in catalogue.SAMPLERS[name].options:
        readers = [n for n, info in catalogue.SAMPLERS.items() if "eta" in info.options]
        raise ValueError(
            f"eta applies to the {catalogue.choices_text(readers)} sampler only, got eta = {eta}"
        )
    return SAMPLERS[name](schedule, sampling_steps, eta)


@dataclass
class Samples:
    points: np.ndarray  # (M, N, 2)
    weight_trace: np.ndarray | None  # (M, S, K) mean weight over samples at every step
    trace_timesteps: np.ndarray  # (S,) int: the timestep of each step (trace row), T-1 first
    final_weights: np.ndarray | None  # (M, N, K) per-sample weights at the last step (t = 0)
    snapshot_timesteps: np.ndarray | None  # (P,) int: the step each snapshot enters; -1 = done
    snapshots: np.ndarray | None  # (M, P, n, 2) the first n points of each model at those steps
    inference_time: float  # wall clock of the sampling loop for all M models, seconds


@torch.no_grad()
def denoise_in_chunks(
    model: Denoiser, xt: torch.Tensor, t: int, rows: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """eps_hat (M, N, 2) and weights (M, N, K) or None, `rows` points per model at a time.

    Chunks keep the activations inside the CPU caches (a (M, 10000, 256) activation does not
    fit); the result does not depend on the chunk size, as each point is denoised on its own.
    """
    outputs = [model(xt[:, start : start + rows], t) for start in range(0, xt.shape[1], rows)]
    eps = torch.cat([output.eps for output in outputs], dim=1)
    if outputs[0].weights is None:
        return eps, None
    return eps, torch.cat([output.weights for output in outputs], dim=1)


def snapshot_steps(sampling_steps: int, count: int) -> list[int]:
    """Up to `count` step positions in 0..S (S: after the last step), evenly spaced, both ends."""
    if count == 0:
        return []
    if count < 2:
        raise ValueError(
            f"snapshots must be 0 (none) or >= 2 (the initial noise and the samples), got {count}"
        )
    return sorted({int(v) for v in np.linspace(0, sampling_steps, count).round()})


class _Recorder:
    """Collects the mean weights at every step, the last step's weights and the snapshots."""

    def __init__(self, timesteps: list[int], snapshots: int, points: int) -> None:
        self.timesteps, self.points = timesteps, points
        self.snapshot_at = snapshot_steps(len(timesteps), snapshots)
        self.trace: list[torch.Tensor] = []
        self.weights: torch.Tensor | None = None
        self.snapshots: list[torch.Tensor] = []

    def state(self, position: int, xt: torch.Tensor) -> None:
        if position in self.snapshot_at:
            self.snapshots.append(xt[:, : self.points].clone())  # (M, n, 2)

    def mixing(self, weights: torch.Tensor | None) -> None:
        self.weights = weights
        if weights is not None:
            self.trace.append(weights.mean(dim=1))  # (M, K)

    def result(self, points: torch.Tensor, inference_time: float) -> Samples:
        steps = [(self.timesteps + [-1])[p] for p in self.snapshot_at]
        return Samples(
            points=points.cpu().numpy(),  # may hold NaN/inf for a diverged model: caller checks
            weight_trace=torch.stack(self.trace, dim=1).cpu().numpy() if self.trace else None,
            trace_timesteps=np.array(self.timesteps, dtype=np.int64),
            final_weights=self.weights.cpu().numpy() if self.weights is not None else None,
            snapshot_timesteps=np.array(steps, dtype=np.int64) if steps else None,
            snapshots=torch.stack(self.snapshots, dim=1).cpu().numpy() if steps else None,
            inference_time=inference_time,
        )


@torch.no_grad()
def sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    generators: Sequence[torch.Generator],
    device: torch.device,
    *,
    num_samples: int,
    sampler: str = "ancestral",
    sampling_steps: int = 0,
    eta: float = 0.0,
    snapshots: int = 0,
    snapshot_points: int = 2000,
    rows: int = 4096,
) -> Samples:
    """Draw `num_samples` points from each of the M models with `sampler` in `sampling_steps` steps.

    Randomness comes only from each model's own generator: its initial noise (M, N, 2), then
    one draw per step that needs noise, after that step's network evaluations. The mixing weights
    recorded at a step are those of its first evaluation (at the step's own timestep). Each pass
    takes about `rows` points in all (rows / M per model), which keeps the activations
    cache-sized on a CPU whatever M is; under a bf16 autocast (eval.precision) twice as many,
    whose activations take the same bytes (a compiled bf16 pass gains some 10 % from it,
    docs/speed.md; as every point is denoised on its own, the points do not depend on it).
    `snapshots` > 0 also keeps the first `snapshot_points` points of each model at up to that
    many evenly spaced steps (initial noise to samples).
    """
    if len(generators) != model.num_models:
        raise ValueError(
            f"need one generator per model ({model.num_models}), got {len(generators)}"
        )
    if snapshot_points < 1:
        raise ValueError(f"snapshot_points must be >= 1, got {snapshot_points}")
    solver = make_sampler(sampler, schedule, sampling_steps, eta)
    if torch.is_autocast_enabled(device.type):
        rows *= 4 // torch.get_autocast_dtype(device.type).itemsize
    per_model = max(64, rows // model.num_models)
    timesteps = solver.schedule.timesteps[::-1]  # decreasing, the model's timesteps
    recorder = _Recorder(timesteps, snapshots, min(snapshot_points, num_samples))

    def normal() -> torch.Tensor:  # one independent draw per model, (M, N, 2)
        return torch.stack(
            [torch.randn((num_samples, 2), generator=g, device=device) for g in generators]
        )

    evaluated: list[torch.Tensor | None] = []  # the mixing weights of each evaluation of a step

    def denoise(x: torch.Tensor, index: int) -> torch.Tensor:
        eps_hat, weights = denoise_in_chunks(model, x, solver.schedule.timesteps[index], per_model)
        evaluated.append(weights)
        return eps_hat

    xt = normal()
    start = time.perf_counter()
    for position in range(len(timesteps)):
        index = len(timesteps) - 1 - position  # the respaced schedule's index of this step
        recorder.state(position, xt)
        evaluated.clear()
        xt = solver.advance(xt, index, denoise, normal).prev_sample
        recorder.mixing(evaluated[0])
    recorder.state(len(timesteps), xt)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return recorder.result(xt, time.perf_counter() - start)
