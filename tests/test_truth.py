"""The true laws (lowdiff.truth) against literal references: mass 1, fresh draws, posteriors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lowdiff import data, truth

# dino stands for the other twelve Datasaurus shapes (same code path)
LAWS = ["circle", "dino", "line", "moons", "ring8", "grid25", "swissroll"]
# (box, spacing) of the midpoint grid: spacing <= the smallest noise std (the midpoint rule's
# relative error on a Gaussian is then below 2·exp(−2π²) ≈ 5e−9), or aligned to the edges
# (line); circle: polar midpoints around each of SPEC's 17 centres (its 1/r singularity
# defeats a square grid)
GRIDS = {
    "dino": (4.6, 0.01),
    "line": (5.0, 0.02),
    "moons": (4.0, 0.05),
    "ring8": (2.5, 0.02),
    "grid25": (4.5, 0.05),
    "swissroll": (4.9, 0.1),
}


def _circle_centres() -> np.ndarray:
    """SPEC's circle: the 5×5 rounding grid's directions, normalised, times 3 (and the origin)."""
    grid = [(a, b) for a in range(-2, 3) for b in range(-2, 3)]
    return np.unique(np.round([3 * np.array(p) / (math.hypot(*p) or 1.0) for p in grid], 9), axis=0)


def _grid_mass(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints of a quadrature grid over the law's support and the mass p·dA of each cell."""
    spec = data.get_dataset(name)
    if name == "circle":  # polar midpoints over radius 0.1 (beyond the disks' 0.09)
        r = (np.arange(200) + 0.5) / 200 * 0.1
        theta = (np.arange(90) + 0.5) / 90 * 2 * math.pi
        offsets = (r[:, None, None] * np.stack([np.cos(theta), np.sin(theta)], -1)).reshape(-1, 2)
        area = np.repeat(r * (0.1 / 200) * (2 * math.pi / 90), len(theta))
        centres = _circle_centres()
        points = (centres[:, None] + offsets[None]).reshape(-1, 2)
        return points, np.exp(spec.log_prob(points)) * np.tile(area, len(centres))
    box, h = GRIDS[name]
    axis = np.arange(-box, box, h) + h / 2
    x, y = np.meshgrid(axis, axis, indexing="ij")
    points = np.stack([x.ravel(), y.ravel()], 1)
    return points, np.exp(spec.log_prob(points)) * h * h


@pytest.mark.parametrize("name", LAWS)
def test_density_integrates_to_one_and_matches_fresh_draws(name: str) -> None:
    points, mass = _grid_mass(name)
    # tolerance: the midpoint rule's error on the grid (the disks' edge cuts radial cells)
    assert mass.sum() == pytest.approx(1.0, abs=2e-3)
    # a histogram of fresh draws over coarse bins against the density's mass per bin
    draws = data.load(name, 100_000, seed=7)
    edges = np.linspace(-5, 5, 21)
    expected, _, _ = np.histogram2d(*points.T, bins=[edges, edges], weights=mass)
    observed, _, _ = np.histogram2d(*draws.T.astype(np.float64), bins=[edges, edges])
    expected *= len(draws)
    # Poisson counts: within 5 standard deviations (+ 1% of the bin for the grid's error)
    assert (np.abs(observed - expected) <= 5 * np.sqrt(expected) + 0.01 * expected + 3).all()


def test_exact_entropies_by_their_literal_formulas() -> None:
    assert data.get_dataset("line").entropy_bits == pytest.approx(math.log2(32))
    weights = data.get_dataset("circle").components.weights
    nats = -(weights * np.log(weights)).sum() + math.log(2 * math.pi * 0.09**2) - 1
    assert data.get_dataset("circle").entropy_bits == pytest.approx(nats / math.log(2))


def test_monte_carlo_entropy_of_one_gaussian_component_width() -> None:
    # ring8: 8 well separated Gaussians of std 0.02, so H = log 8 + log(2πe·0.02²) exactly
    # up to an overlap of exp(−(2·2 sin(π/8)/0.02)²/8), far below the Monte-Carlo error
    entropy = truth.entropy_bits("ring8", draws=20_000)
    exact = (math.log(8) + math.log(2 * math.pi * math.e * 0.02**2)) / math.log(2)
    assert abs(entropy.bits - exact) < 4 * entropy.error + 1e-9
    assert 0 < entropy.error < 0.05


@pytest.mark.parametrize(
    "points",
    [np.zeros((3, 3)), np.zeros(4), np.array([[0.0, np.nan]]), np.array([[np.inf, 0.0]])],
)
def test_bad_points_are_a_clear_error(points: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shape|finite"):
        data.get_dataset("dino").log_prob(points)


def test_posterior_of_the_line_is_exact_against_quadrature() -> None:
    """E[eps | x_t] of the uniform rectangle against a literal 1-D quadrature per axis."""
    law = truth.law_of("line")
    alpha, sigma = 0.8, 0.6
    x = np.array([[0.3, -5.0], [2.5, 4.1], [-7.0, 0.0]])
    eps = law.eps_posterior(x, alpha, sigma)
    for i, (low, high) in enumerate([(-2, 2), (-4, 4)]):
        x0 = np.linspace(low, high, 200_001)
        for j in range(len(x)):
            weight = np.exp(-((x[j, i] - alpha * x0) ** 2) / (2 * sigma**2))
            expected = ((x[j, i] - alpha * x0) / sigma * weight).sum() / weight.sum()
            assert eps[j, i] == pytest.approx(expected, abs=1e-4)  # the sum's edge error


@pytest.mark.parametrize("name", ["circle", "moons"])
def test_posterior_agrees_with_a_finer_quadrature(name: str, monkeypatch) -> None:
    """The quadrature error of the noised law at the smallest noise level (t = 0)."""
    alpha, sigma = math.sqrt(1 - 1e-4), 0.01
    x = data.load(name, 100, seed=3).astype(np.float64) * alpha + sigma * np.random.default_rng(
        0
    ).normal(size=(100, 2))
    coarse = truth._law_for(name)
    monkeypatch.setattr(truth, "DISK_RADIAL", 2 * truth.DISK_RADIAL)
    monkeypatch.setattr(truth, "DISK_ANGULAR", 2 * truth.DISK_ANGULAR)
    monkeypatch.setattr(truth, "MOON_NODES", 4 * truth.MOON_NODES)
    fine = truth._law_for(name)
    assert (
        np.abs(coarse.eps_posterior(x, alpha, sigma) - fine.eps_posterior(x, alpha, sigma)).max()
        < 0.02
    )
    log_coarse, log_fine = (
        coarse.noised_log_prob(x, alpha, sigma),
        fine.noised_log_prob(x, alpha, sigma),
    )
    assert np.abs(log_coarse - log_fine).mean() < 0.01


@pytest.mark.parametrize("sigma", [0.01, 0.3, 0.8])
def test_disks_by_disk_equal_the_whole_quadrature(sigma: float) -> None:
    """Circle's per-disk evaluation (each point against the disks that can matter) gives the
    quadrature of all 17 × N nodes as one mixture, in the tails too."""
    law = truth.law_of("circle")
    alpha = math.sqrt(1.0 - sigma**2)
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            data.load("circle", 400, seed=2) * alpha + sigma * rng.normal(size=(400, 2)),
            4.0 * rng.normal(size=(40, 2)),
        ]
    )
    whole = law.nodes()
    assert law.noised_log_prob(x, alpha, sigma) == pytest.approx(
        whole.noised_log_prob(x, alpha, sigma), abs=1e-8
    )
    assert law.eps_posterior(x, alpha, sigma) == pytest.approx(
        whole.eps_posterior(x, alpha, sigma), abs=1e-8
    )


def test_a_dataset_without_a_law_says_so(monkeypatch) -> None:
    spec = data.get_dataset("dino")
    unknown = data.DatasetSpec("mystery", "?", spec.sampler, spec.components)
    monkeypatch.setitem(data.DATASETS, "mystery", unknown)
    with pytest.raises(truth.NoLawError, match="mystery.*no known law"):
        unknown.log_prob(np.zeros((1, 2)))
