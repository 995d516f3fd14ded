"""The true law of every shipped dataset: density, entropy, noised density, Bayes denoiser.

Every dataset of `lowdiff.data` is a known distribution, so each gets a `Law` (NumPy only):

- `log_prob(points)`: the natural log of the true density at each point.
- `noised_log_prob(points, alpha, sigma)`: the density of x = alpha·x0 + sigma·eps (x0 from the
  law, eps ~ N(0, I)): the forward marginal q_t of the diffusion (Ho et al. 2020, eq. 4).
- `eps_posterior(points, alpha, sigma)`: E[eps | x_t = x], the Bayes-optimal eps-prediction
  (the minimiser of the protocol's MSE loss at that noise level).

The laws, in final units:

- Gaussian mixtures (dino and the other Datasaurus shapes: 142 components, per-axis stds
  0.15·4/54 and 0.15·4/48; ring8; grid25): exact. Every component shares one diagonal
  covariance, so x_t | k ~ N(alpha·mu_k, alpha²·s² + sigma²) per axis and
  E[eps | x_t] = sum_k r_k(x_t) · sigma (x_t − alpha·mu_k) / (alpha² s² + sigma²).
- Noise around a curve (moons: two half circles, make_moons' angle uniform on [0, π], stds
  0.03·(2, 3); swissroll: make_swiss_roll's t uniform on [1.5π, 4.5π], std 0.5·4/(4.5π)): the
  curve integral by the midpoint rule with `MOON_NODES` nodes per moon and `ROLL_NODES` along
  the roll, i.e. a mixture of that many Gaussians. The node spacing is below 0.4 × the noise
  std, where the midpoint rule's relative error on a Gaussian kernel is below
  2·exp(−2π²·(std/spacing)²) < 1e−50; what remains is the O(spacing²) end effect at the
  curves' two ends (`tests/test_truth.py` bounds the total against a finer rule).
- `circle`: 17 disks of radius R = 0.09 (SPEC: r ~ U(0, 0.03), θ ~ U(0, 2π), then ×3), so the
  density inside disk k is w_k / (2π R r) (r the distance to its centre): uniform in (r, θ),
  not in area. Exact log_prob and entropy (h_disk = ln(2π R²) − 1 nats). The noised law uses the
  midpoint rule in (r, θ), `DISK_RADIAL` × `DISK_ANGULAR` point nodes per disk (spacing at the
  rim 2π·0.09/48 ≈ 0.012, about the smallest sigma/alpha of the protocol's schedule, 0.01: the
  Gaussian-kernel error bound above is then exp(−14)).
- `line`: uniform on [−2, 2] × [−4, 4]: exact everywhere (the noised law is a product of
  differences of normal CDFs; the posterior a truncated normal's mean).

The differential entropy is exact for `circle` and `line`; for the mixtures it is a Monte-Carlo
mean of −log p over `ENTROPY_DRAWS` fresh draws (seed `TRUTH_SEED`) with its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import log_ndtr, logsumexp

from lowdiff import data

__all__ = [
    "ENTROPY_DRAWS",
    "TRUTH_SEED",
    "Entropy",
    "Law",
    "NoLawError",
    "checked_points",
    "entropy_bits",
    "law_of",
    "noise_generator",
    "level_zero",
    "sample_log_density",
    "timestep_draws",
    "TimestepDraws",
]

TRUTH_SEED = 900  # fresh true draws for ground truth (never a training or oracle seed)
ENTROPY_DRAWS = 100_000
MOON_NODES = 500  # per moon: spacing <= 3π/500 ≈ 0.019 = 0.31 × the smaller std 0.06
ROLL_NODES = 1000  # spacing <= 4.0 · 3π/1000 ≈ 0.038 = 0.27 × the std 0.141
DISK_RADIAL, DISK_ANGULAR = 24, 48
CHUNK = 2048  # points per block of a (points x components) computation
SKIP_NATS = 60.0  # a disk this much less likely than another at x_t is left out


def noise_generator(seed: int) -> np.random.Generator:
    """The diffusion noise's generator for draws made with `data.load(..., seed)`: a stream
    apart from the samplers' own `default_rng(seed)`, so that x0 and eps are independent."""
    return np.random.default_rng([seed, 1])


class NoLawError(ValueError):
    """The dataset's true law is not known to lowdiff (so it has no ground truth)."""


def checked_points(points: np.ndarray) -> np.ndarray:
    """`points` as float64 (n, 2), or a ValueError naming what is wrong with them."""
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {array.shape}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise ValueError(f"points must be finite; {bad} of {len(array)} rows are not")
    return array


def _check_level(alpha: float, sigma: float) -> None:
    if not (0 < alpha <= 1 and 0 < sigma < math.inf):
        raise ValueError(f"need 0 < alpha <= 1 and sigma > 0, got alpha={alpha}, sigma={sigma}")


class Law:
    """A 2-D distribution with a known density (subclasses below)."""

    def log_prob(self, points: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def noised_log_prob(self, points: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
        raise NotImplementedError

    def eps_posterior(self, points: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
        raise NotImplementedError

    def exact_entropy(self) -> float | None:
        """The differential entropy in nats where it is known in closed form, else None."""
        return None


@dataclass(frozen=True)
class Mixture(Law):
    """Gaussians sharing one diagonal std (std 0: point masses, for a quadrature's nodes)."""

    means: np.ndarray  # (K, 2)
    log_weights: np.ndarray  # (K,)
    std: np.ndarray  # (2,) per-axis std of every component

    def _log_density(self, x: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
        """(n, K) log of w_k N(x; alpha mu_k, diag(alpha² std² + sigma²))."""
        var = alpha**2 * self.std**2 + sigma**2  # (2,)
        scaled_x, scaled_mu = x / np.sqrt(var), alpha * self.means / np.sqrt(var)
        # squared Mahalanobis distance by one matrix product: |x|² + |mu|² − 2 x·mu
        dist2 = (
            (scaled_x**2).sum(1)[:, None]
            + (scaled_mu**2).sum(1)[None, :]
            - 2.0 * scaled_x @ scaled_mu.T
        )
        log_norm = -math.log(2 * math.pi) - 0.5 * np.log(var).sum()
        return self.log_weights[None, :] + log_norm - 0.5 * np.maximum(dist2, 0.0)

    def log_prob(self, points: np.ndarray) -> np.ndarray:
        if not (self.std > 0).all():
            raise ValueError("a mixture of point masses has no density; use noised_log_prob")
        return self.noised_log_prob(points, 1.0, 0.0, checked=False)

    def noised_log_prob(
        self, points: np.ndarray, alpha: float, sigma: float, *, checked: bool = True
    ) -> np.ndarray:
        if checked:
            _check_level(alpha, sigma)
        x = checked_points(points)
        blocks = [
            logsumexp(self._log_density(x[s : s + CHUNK], alpha, sigma), axis=1)
            for s in range(0, len(x), CHUNK)
        ]
        return np.concatenate(blocks) if blocks else np.zeros(0)

    def eps_posterior(self, points: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
        _check_level(alpha, sigma)
        x = checked_points(points)
        var = alpha**2 * self.std**2 + sigma**2
        out = np.empty_like(x)
        for s in range(0, len(x), CHUNK):
            block = x[s : s + CHUNK]
            log_r = self._log_density(block, alpha, sigma)
            r = np.exp(log_r - logsumexp(log_r, axis=1, keepdims=True))  # responsibilities
            mean_mu = r @ self.means  # E[mu_k | x_t]
            # E[eps | x_t, k] = sigma (x_t − alpha mu_k) / var, linear in mu_k
            out[s : s + CHUNK] = sigma * (block - alpha * mean_mu) / var
        return out


@dataclass(frozen=True)
class Disks(Law):
    """Disks of radius R with density w_k / (2π R r) inside (r ~ U(0, R), θ ~ U(0, 2π))."""

    centres: np.ndarray  # (K, 2)
    weights: np.ndarray  # (K,)
    radius: float

    def log_prob(self, points: np.ndarray) -> np.ndarray:
        x = checked_points(points)
        out = np.full(len(x), -np.inf)
        for centre, weight in zip(self.centres, self.weights, strict=True):
            r = np.hypot(*(x - centre).T)
            inside = r < self.radius
            # r = 0 is a point of infinite density (measure zero); its log is +inf
            with np.errstate(divide="ignore"):
                out[inside] = np.log(weight / (2 * math.pi * self.radius)) - np.log(r[inside])
        return out

    def exact_entropy(self) -> float:
        disk = math.log(2 * math.pi * self.radius**2) - 1.0  # −E ln(1/(2πRr)), E ln r = ln R − 1
        w = self.weights[self.weights > 0]
        return float(-(w * np.log(w)).sum() + disk)

    def offsets(self) -> np.ndarray:
        """(N, 2) the (r, θ) midpoint rule's nodes around a centre (equal weights)."""
        r = (np.arange(DISK_RADIAL) + 0.5) / DISK_RADIAL * self.radius
        theta = (np.arange(DISK_ANGULAR) + 0.5) / DISK_ANGULAR * 2 * math.pi
        return (r[:, None, None] * np.stack([np.cos(theta), np.sin(theta)], -1)).reshape(-1, 2)

    def nodes(self) -> Mixture:
        """The midpoint rule as one mixture of equal-weight point masses (the reference form)."""
        offsets = self.offsets()
        means = (self.centres[:, None, :] + offsets[None]).reshape(-1, 2)
        log_w = np.repeat(np.log(self.weights) - math.log(len(offsets)), len(offsets))
        return Mixture(means, log_w, np.zeros(2))

    def _by_disk(self, x: np.ndarray, alpha: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """The quadrature of `nodes()` one disk at a time, each point only against the disks
        that can matter: (n, K) log-mass of each disk at x_t and (n, K, 2) the mean node of
        each disk given x_t. A disk whose nearest possible node is SKIP_NATS less likely than
        the farthest possible node of another disk is left out (−inf): a relative error below
        e^−SKIP_NATS, and the nodes of one disk instead of all K where the noise is small."""
        offsets, var = self.offsets(), sigma**2
        log_norm = -math.log(2 * math.pi * var) - math.log(len(offsets))
        centres = alpha * self.centres  # (K, 2)
        with np.errstate(divide="ignore"):
            log_w = np.log(self.weights)  # −inf for an empty disk: never kept
        reach = alpha * self.radius
        lse = np.full((len(x), len(centres)), -np.inf)
        means = np.zeros((len(x), len(centres), 2))
        distance = np.hypot(*(x[:, None, :] - centres[None]).transpose(2, 0, 1))  # (n, K)
        best = log_w - np.maximum(distance - reach, 0.0) ** 2 / (2 * var)
        worst = log_w - (distance + reach) ** 2 / (2 * var)
        keep = best >= worst.max(axis=1, keepdims=True) - SKIP_NATS
        for k in np.flatnonzero(self.weights > 0):
            rows = np.flatnonzero(keep[:, k])
            for s in range(0, len(rows), CHUNK):
                block = rows[s : s + CHUNK]
                nodes = self.centres[k] + offsets  # (N, 2) node positions at t = 0
                xb, mu = x[block], alpha * nodes
                # squared distances by one matrix product, as in Mixture
                dist2 = (xb**2).sum(1)[:, None] + (mu**2).sum(1)[None] - 2.0 * xb @ mu.T
                dist2 = np.maximum(dist2, 0.0)
                log_r = log_w[k] + log_norm - dist2 / (2 * var)  # (b, N)
                lse[block, k] = logsumexp(log_r, axis=1)
                means[block, k] = np.exp(log_r - lse[block, k][:, None]) @ nodes
        return lse, means

    def noised_log_prob(self, points: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
        _check_level(alpha, sigma)
        lse, _ = self._by_disk(checked_points(points), alpha, sigma)
        return logsumexp(lse, axis=1)

    def eps_posterior(self, points: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
        _check_level(alpha, sigma)
        x = checked_points(points)
        lse, means = self._by_disk(x, alpha, sigma)
        r = np.exp(lse - logsumexp(lse, axis=1, keepdims=True))  # P(disk k | x_t)
        mean_mu = (r[:, :, None] * means).sum(axis=1)  # E[x0 | x_t]
        return sigma * (x - alpha * mean_mu) / sigma**2  # as Mixture: sigma (x − α μ) / var


@dataclass(frozen=True)
class Rectangle(Law):
    """Uniform on [low_0, high_0] × [low_1, high_1]."""

    low: np.ndarray  # (2,)
    high: np.ndarray  # (2,)

    def log_prob(self, points: np.ndarray) -> np.ndarray:
        x = checked_points(points)
        inside = ((x >= self.low) & (x <= self.high)).all(axis=1)
        return np.where(inside, -np.log(self.high - self.low).sum(), -np.inf)

    def exact_entropy(self) -> float:
        return float(np.log(self.high - self.low).sum())

    def _bounds(self, x: np.ndarray, alpha: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """x0 | x_t ∝ N(x_t/alpha, (sigma/alpha)²) on [low, high]: standardised bounds a < b."""
        scale = sigma / alpha
        return (self.low - x / alpha) / scale, (self.high - x / alpha) / scale

    def noised_log_prob(self, points: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
        _check_level(alpha, sigma)
        x = checked_points(points)
        a, b = self._bounds(x, alpha, sigma)
        # p(x_t) per axis = (Phi(b) − Phi(a)) / (alpha · width)
        log_mass = _log_diff_ndtr(a, b)
        return (log_mass - np.log(alpha * (self.high - self.low))).sum(axis=1)

    def eps_posterior(self, points: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
        _check_level(alpha, sigma)
        x = checked_points(points)
        a, b = self._bounds(x, alpha, sigma)
        # truncated-normal mean E[z] = (phi(a) − phi(b)) / (Phi(b) − Phi(a)),
        # z = (x0 − x_t/α)/(σ/α)
        log_mass = _log_diff_ndtr(a, b)
        log_phi_a, log_phi_b = -0.5 * a**2, -0.5 * b**2
        mean_z = (np.exp(log_phi_a - log_mass) - np.exp(log_phi_b - log_mass)) / math.sqrt(
            2 * math.pi
        )
        # x0 = x_t/α + (σ/α) z, eps = (x_t − α x0)/σ = −z
        return -mean_z


def _log_diff_ndtr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) − Phi(a)) for a < b, stable in both tails (by symmetry, the upper tail)."""
    flip = a > 0  # then Phi(b) − Phi(a) = Phi(−a) − Phi(−b), both small: use the lower tail
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
    return log_hi + np.log1p(-np.exp(np.minimum(log_lo - log_hi, 0.0)) + 1e-300)


def _curve_mixture(means: np.ndarray, std: np.ndarray) -> Mixture:
    return Mixture(means, np.full(len(means), -math.log(len(means))), std)


def _moons_law() -> Mixture:
    theta = (np.arange(MOON_NODES) + 0.5) / MOON_NODES * math.pi  # make_moons: linspace(0, π)
    outer = np.stack([np.cos(theta), np.sin(theta)], 1)
    inner = np.stack([1 - np.cos(theta), 1 - np.sin(theta) - 0.5], 1)
    raw = np.concatenate([outer, inner])
    means = np.stack([(raw[:, 0] + 0.3) * 2 - 1, (raw[:, 1] + 0.3) * 3 - 1], 1)
    return _curve_mixture(means, 0.03 * np.array([2.0, 3.0]))


def _swissroll_law() -> Mixture:
    low, high = 1.5 * math.pi, 4.5 * math.pi  # make_swiss_roll: t = 1.5π(1 + 2U)
    t = low + (np.arange(ROLL_NODES) + 0.5) / ROLL_NODES * (high - low)
    factor = 4 / high
    means = factor * np.stack([t * np.cos(t), t * np.sin(t)], 1)  # (x, z) of the roll
    return _curve_mixture(means, np.full(2, data.SWISSROLL_NOISE * factor))


def _law_for(name: str) -> Law:
    spec = data.get_dataset(name)
    components = spec.components
    if name == "circle":
        return Disks(components.centres, components.weights, 0.03 * 3)
    if name == "line":
        return Rectangle(np.array([-2.0, -4.0]), np.array([2.0, 4.0]))
    if name == "moons":
        return _moons_law()
    if name == "swissroll":
        return _swissroll_law()
    if name in ("ring8", "grid25"):
        std = data.RING8_STD if name == "ring8" else data.GRID25_STD
        return _curve_mixture(components.centres, np.full(2, std))
    if name in data.DATASAURUS_NAMES:
        std = data.DATASAURUS_NOISE * np.array([4 / 54, 4 / 48])
        return _curve_mixture(components.centres, std)
    raise NoLawError(f"dataset {name!r} has no known law, so no ground truth")


_LAWS: dict[str, Law] = {}


def law_of(name: str) -> Law:
    """The true law of a registered dataset (NoLawError if lowdiff does not know it)."""
    if name not in _LAWS:
        _LAWS[name] = _law_for(name)
    return _LAWS[name]


@dataclass(frozen=True)
class Entropy:
    """A differential entropy in bits and its standard error (0 when exact)."""

    bits: float
    error: float


_ENTROPIES: dict[str, Entropy] = {}


def entropy_bits(name: str, draws: int = ENTROPY_DRAWS) -> Entropy:
    """The true differential entropy of a dataset in bits: exact, or the Monte-Carlo mean of
    −log2 p over `draws` fresh draws (seed TRUTH_SEED) with its standard error."""
    key = f"{name}:{draws}"
    if key not in _ENTROPIES:
        law = law_of(name)
        exact = law.exact_entropy()
        if exact is not None:
            _ENTROPIES[key] = Entropy(exact / math.log(2), 0.0)
        else:
            minus_log = -law.log_prob(data.load(name, draws, seed=TRUTH_SEED)) / math.log(2)
            error = float(minus_log.std(ddof=1) / math.sqrt(draws))
            _ENTROPIES[key] = Entropy(float(minus_log.mean()), error)
    return _ENTROPIES[key]


# --- the diffusion's view of the law: every timestep, the level of t = 0 ---------------------

LN2 = math.log(2.0)


@dataclass(frozen=True)
class TimestepDraws:
    """Fresh true draws at every timestep and their Bayes-optimal eps (float64, t-major)."""

    xt: np.ndarray  # (T, P, 2) noisy points
    eps: np.ndarray  # (T, P, 2) the noise that made them
    eps_star: np.ndarray  # (T, P, 2) E[eps | x_t] under the true law

    @property
    def floor(self) -> np.ndarray:
        """(T,) the Bayes loss floor at each t: mean over draws and coordinates."""
        return ((self.eps_star - self.eps) ** 2).mean(axis=(1, 2))


@lru_cache(maxsize=16)
def _timestep_draws(name: str, alpha_bar: tuple[float, ...], points: int) -> TimestepDraws:
    law = law_of(name)
    count = len(alpha_bar)
    x0 = data.load(name, count * points, seed=TRUTH_SEED + 1).astype(np.float64)
    eps = noise_generator(TRUTH_SEED + 1).normal(size=(count, points, 2))
    alpha = np.sqrt(np.array(alpha_bar))[:, None, None]
    sigma = np.sqrt(1.0 - np.array(alpha_bar))[:, None, None]
    xt = alpha * x0.reshape(count, points, 2) + sigma * eps  # Ho et al. 2020, eq. 4
    eps_star = np.stack(
        [
            law.eps_posterior(xt[t], float(alpha[t, 0, 0]), float(sigma[t, 0, 0]))
            for t in range(count)
        ]
    )
    return TimestepDraws(xt, eps, eps_star)


def timestep_draws(name: str, alpha_bar: np.ndarray, points: int) -> TimestepDraws:
    """`points` true draws of `name` noised at every timestep of `alpha_bar` (cached)."""
    return _timestep_draws(name, tuple(float(a) for a in alpha_bar), int(points))


def level_zero(alpha_bar: np.ndarray) -> tuple[float, float]:
    """(α, σ) of the t = 0 level, where the ODE model's density is defined."""
    return math.sqrt(alpha_bar[0]), math.sqrt(1.0 - alpha_bar[0])


def sample_log_density(name: str, samples: np.ndarray, alpha_bar: np.ndarray) -> float:
    """Mean log2 density of `samples` under the true law at the level of t = 0 (finite
    everywhere, unlike the line's or circle's own density outside their support)."""
    alpha, sigma = level_zero(alpha_bar)
    return float(law_of(name).noised_log_prob(samples, alpha, sigma).mean() / LN2)


ORACLE_DRAWS = 20_000  # fresh draws behind the oracle values of the ground-truth metrics


def _mean_and_error(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1) / math.sqrt(len(values)))}


def prior_mismatch_bits(name: str, alpha_bar: np.ndarray, draws: int = ORACLE_DRAWS) -> dict:
    """KL(q_{T−1} || N(0, I)) in bits by Monte Carlo: the ODE KL of the exact denoiser (a flow
    keeps KL, and the sampler starts from N(0, I), not from the true q_{T−1})."""
    law = law_of(name)
    alpha, sigma = math.sqrt(alpha_bar[-1]), math.sqrt(1.0 - alpha_bar[-1])
    x0 = data.load(name, draws, seed=TRUTH_SEED + 3).astype(np.float64)
    noise = noise_generator(TRUTH_SEED + 3).normal(size=x0.shape)
    x = alpha * x0 + sigma * noise
    log_prior = -0.5 * (x**2).sum(1) - math.log(2 * math.pi)
    return _mean_and_error((law.noised_log_prob(x, alpha, sigma) - log_prior) / LN2)


def dataset_truth(name: str, alpha_bar: np.ndarray, points: int) -> dict:
    """Everything oracle.json keeps about one dataset's ground truth under one schedule."""
    floor = timestep_draws(name, alpha_bar, points).floor
    entropy = entropy_bits(name)
    alpha, sigma = level_zero(alpha_bar)
    clean = data.load(name, ORACLE_DRAWS, seed=TRUTH_SEED + 4)
    perfect = law_of(name).noised_log_prob(clean, alpha, sigma) / LN2
    zero = {"mean": 0.0, "std": 0.0}
    return {
        "entropy_bits": entropy.bits,
        "entropy_error": entropy.error,
        "eval_loss_floor": float(floor.mean()),  # t uniform, as in the eval loss
        "loss_floor_by_timestep": [float(v) for v in floor],
        "oracle": {
            "excess_eval_loss": zero,
            "ode_kl_bits": prior_mismatch_bits(name, alpha_bar),
            "sample_log_density": _mean_and_error(perfect),
        },
    }
