"""Sample-quality metrics, as pure functions of arrays (no I/O, no torch).

- `knn_kl`: the k-nearest-neighbour estimate of KL(data ‖ samples) in bits of protocol §1
  (Wang, Kulkarni & Verdú 2009; Pérez-Cruz 2008), with max-norm distances. `knn_radii` is its
  data-only half, so a caller can compute it once per dataset and pass it as `x_radii`.
- `mode_metrics`: modes captured, high-quality fraction and total-variation distance over the
  known mixture components of a dataset (protocol §3), following the 2-D ring/grid protocol of the
  mode-collapse literature (Metz et al. 2017, Unrolled GAN; Srivastava et al. 2017, VEEGAN;
  Lin et al. 2018, PacGAN). Definitions, with m samples and K components of weights w_k:
    * a sample is *high quality* (HQ) when it lies within the radius 3 × scale of the data:
      for point-centred components (circle, Datasaurus, ring8, grid25) its Euclidean distance
      to the nearest component centre is ≤ 3 × scale, and it is assigned to that centre; else
      (moons, line, swissroll) its distance to the nearest reference (training) point is
      ≤ 3 × scale, and it is assigned to that point's component;
    * component k is *captured* when its HQ count ≥ capture_fraction · w_k · m (default 0.1 of
      its expected share; PacGAN's "fewer than 20 of an expected 100" is 0.2);
    * tv_distance = ½ Σ_k |p̂_k − w_k|, p̂ the HQ counts normalised to sum 1; with no HQ
      sample at all p̂ is undefined and tv_distance is 1.0, its maximum.
  Where components overlap (a few Datasaurus shapes have centres closer than the noise), the
  nearest-centre rule splits their mass by Voronoi cells, so even true samples can miss the
  weights slightly: compare with the oracle (a fresh draw of the dataset), never with 0.
- `mode_coverage`: the *coverage* side of the mode metrics, blind to blur by design. A component
  k owns the region R_k: for point-centred components the ball of radius ½ · (distance from its
  centre to the nearest other centre) — its Voronoi cell capped so that no two regions touch;
  else (moons, line, swissroll) the points whose nearest training point belongs to k and lies
  within 6 × scale (twice the HQ radius: the nearest training point decides the component, the
  cap only drops samples far off the data). Component k is *covered* when the samples in R_k
  reach `cover_fraction` (default 0.1) of the count a true draw of the same size puts there
  (the share of training points in R_k times m). Blur that leaves the samples of a mode inside
  its region leaves it covered; a dropped mode leaves its region empty.
- `precision_recall_density_coverage` (k = 5, Euclidean distances): precision and recall of
  Kynkäänniemi et al. 2019 (the share of samples inside the union of the real points' k-NN
  balls; the share of real points inside the union of the samples' k-NN balls) and density and
  coverage of Naeem et al. 2020 (Σ over samples of the number of real balls holding them /
  (k m); the share of real balls holding at least one sample). Balls are closed (distance ≤
  radius), as in Kynkäänniemi. `measure` takes precision and recall against all n training
  points, and density and coverage against an evenly spaced subsample of as many training
  points as there are samples, as both papers use equal sizes: with n = 10 m the real balls
  are so small that a perfect generator's coverage is 1 − exp(−k m / n) ≈ 0.39 and dropping 20
  of dino's 142 modes moves it only from 0.380 to 0.373 (more samples land in the modes that
  remain), while with equal sizes it is ≈ 0.97 (dino, moons) and falls to 0.84 without them.
  Computed exactly with SciPy's cKDTree (`query_ball_point` with one radius per ball,
  workers=-1), memory O(n + m + hits): 100,000 × 10,000 points take about half a second. Not
  the `prdc` package: it builds dense distance matrices, n × n for the radii (100,000² float32
  = 40 GB) and n × m (4 GB), so it cannot run at this size; on small sets the two agree (the
  tests compare with a literal dense implementation of the same formulas).
- `wasserstein2`: the exact 2-Wasserstein distance (POT `ot.emd2`, squared Euclidean cost,
  uniform weights) between evenly spaced subsamples of at most 2,000 samples and 2,000
  training points; reported as the distance W2 = sqrt(min cost), in data units, not squared.
  `sliced_wasserstein2`: POT's `ot.sliced_wasserstein_distance` (p = 2) over all samples and
  all training points, on 32 fixed directions evenly spaced over the half circle (in 2-D these
  are a deterministic quadrature of the sliced integral: no projection seed, less variance
  than random directions). Both have a positive oracle floor (finite samples), so below it
  is not better.
- `sample_diversity`: the mean pairwise Euclidean distance of the samples — the quantity
  Series B's diversity loss rewards — on an evenly spaced subsample of at most 2,000 points.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

from lowdiff import data
from lowdiff.data import Components

__all__ = [
    "METRICS",
    "MetricInfo",
    "CoverageReport",
    "ModeReport",
    "PRDC",
    "Reference",
    "load_reference",
    "measure",
    "assign_components",
    "knn_kl",
    "knn_radii",
    "coverage_radii",
    "coverage_regions",
    "euclidean_radii",
    "evenly_spaced",
    "mode_coverage",
    "mode_metrics",
    "precision_recall_density_coverage",
    "sample_diversity",
    "sliced_wasserstein2",
    "wasserstein2",
]


def _as_points(array: np.ndarray, name: str) -> np.ndarray:
    """A finite float64 (N, d) array with N ≥ 1, or a ValueError saying what is wrong."""
    points = np.asarray(array, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] == 0 or points.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (N, d), got shape {points.shape}")
    bad_rows = ~np.isfinite(points).all(axis=1)
    if bad_rows.any():
        nan_rows = int(np.isnan(points).any(axis=1).sum())
        raise ValueError(
            f"{name} has {int(bad_rows.sum())} of {len(points)} samples with non-finite "
            f"coordinates ({nan_rows} with NaN, {int(bad_rows.sum()) - nan_rows} with ±inf); "
            "drop or fix them first"
        )
    return points


def _check_k(k: int, limit: int, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k < limit:
        raise ValueError(f"k must be an int with 1 <= k < {what} = {limit}, got {k!r}")


# --- k-NN KL divergence (protocol §1) -----------------------------------------------------


def knn_radii(x: np.ndarray, k: int = 5) -> np.ndarray:
    """ρ_k(x_i): max-norm distance from each x_i to its k-th nearest *other* point of x, (n,)."""
    x = _as_points(x, "x")
    _check_k(k, len(x), "n")
    # the query point itself comes back first (distance 0), so the k-th other is the (k+1)-th
    radii = cKDTree(x).query(x, k=[k + 1], p=np.inf, workers=-1)[0][:, 0]
    zero = int((radii == 0).sum())
    if zero:
        raise ValueError(
            f"{zero} of {len(x)} points of x have zero distance to their {k}-th nearest "
            f"neighbour (each has at least {k} exact duplicates), so ln ρ_k = -inf; the k-NN "
            "estimator needs distinct points: pass np.unique(x, axis=0) or add a jitter far "
            "below the data's noise scale"
        )
    return radii


def knn_kl(x: np.ndarray, y: np.ndarray, k: int = 5, *, x_radii: np.ndarray | None = None) -> float:
    """k-NN estimate of KL(p ‖ q) in bits, x ~ p (n, d) the data, y ~ q (m, d) the samples.

    KL = [ln m − ln(n−1) + d · (mean_i ln ν_k(x_i) − mean_i ln ρ_k(x_i))] / ln 2, with ρ_k
    from `knn_radii(x, k)` (pass it as `x_radii` to reuse it) and ν_k(x_i) the max-norm
    distance from x_i to its k-th nearest y. Zero distances raise a ValueError.
    """
    x, y = _as_points(x, "x"), _as_points(y, "y")
    n, m, d = len(x), len(y), x.shape[1]
    if y.shape[1] != d:
        raise ValueError(f"x and y must have the same dimension, got {d} and {y.shape[1]}")
    _check_k(k, min(n, m), "min(n, m)")
    if x_radii is None:
        rho = knn_radii(x, k)
    else:
        rho = np.asarray(x_radii, dtype=np.float64)
        if rho.shape != (n,) or not (np.isfinite(rho) & (rho > 0)).all():
            raise ValueError(f"x_radii must be knn_radii(x, k): finite, > 0, shape ({n},)")
    nu = cKDTree(y).query(x, k=[k], p=np.inf, workers=-1)[0][:, 0]
    zero = int((nu == 0).sum())
    if zero:
        raise ValueError(
            f"{zero} of {n} points of x have zero distance to their {k}-th nearest sample "
            f"(at least {k} samples coincide with them), so ln ν_k = -inf; samples that copy "
            "data points exactly cannot be scored by the k-NN estimator"
        )
    kl_nats = math.log(m) - math.log(n - 1) + d * (np.log(nu).mean() - np.log(rho).mean())
    return float(kl_nats / math.log(2))


# --- mode metrics (protocol §3) ----------------------------------------------------------


@dataclass(frozen=True)
class ModeReport:
    modes_captured: int  # components whose HQ count reaches capture_fraction of their share
    num_modes: int  # K
    high_quality_fraction: float  # HQ samples / all samples
    tv_distance: float  # ½ Σ |p̂_k − w_k|; 1.0 when no sample is HQ
    counts: np.ndarray  # (K,) HQ samples per component
    captured: np.ndarray  # (K,) bool, counts >= capture_fraction · w · m


def assign_components(
    samples: np.ndarray,
    components: Components,
    *,
    reference_points: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
) -> np.ndarray:
    """The component of each HQ sample, −1 for the others, (m,) int64.

    Point-centred components use their centres (the references are then ignored); the others
    need the reference (training) points and their component labels.
    """
    samples = _as_points(samples, "samples")
    radius = components.radius
    if components.centres is not None:
        anchors, anchor_labels = components.centres, np.arange(components.num_components)
    elif reference_points is None or reference_labels is None:
        raise ValueError(
            "components without centres need reference_points and reference_labels "
            "(the training points and their component labels)"
        )
    else:
        anchors = _as_points(reference_points, "reference_points")
        anchor_labels = np.asarray(reference_labels)
        if anchor_labels.shape != (len(anchors),):
            raise ValueError(f"reference_labels must have shape ({len(anchors)},)")
        if anchor_labels.min() < 0 or anchor_labels.max() >= components.num_components:
            raise ValueError(f"reference_labels must lie in [0, {components.num_components})")
    if samples.shape[1] != anchors.shape[1]:
        raise ValueError(f"samples must have {anchors.shape[1]} columns, got {samples.shape[1]}")
    # the bound only prunes the search; misses come back as distance inf, index len(anchors)
    bound = np.nextafter(radius, np.inf)
    distance, nearest = cKDTree(anchors).query(samples, distance_upper_bound=bound, workers=-1)
    high_quality = distance <= radius
    assigned = np.full(len(samples), -1, dtype=np.int64)
    assigned[high_quality] = anchor_labels[nearest[high_quality]]
    return assigned


def mode_metrics(
    samples: np.ndarray,
    components: Components,
    *,
    reference_points: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    capture_fraction: float = 0.1,
) -> ModeReport:
    """Modes captured, HQ fraction and TV distance of `samples` (definitions: module docstring)."""
    if not 0 < capture_fraction <= 1:
        raise ValueError(f"capture_fraction must be in (0, 1], got {capture_fraction}")
    assigned = assign_components(
        samples, components, reference_points=reference_points, reference_labels=reference_labels
    )
    num_samples, weights = len(assigned), components.weights
    counts = np.bincount(assigned[assigned >= 0], minlength=components.num_components)
    captured = counts >= capture_fraction * weights * num_samples
    total = int(counts.sum())
    tv = 0.5 * float(np.abs(counts / total - weights).sum()) if total else 1.0
    return ModeReport(
        modes_captured=int(captured.sum()),
        num_modes=components.num_components,
        high_quality_fraction=total / num_samples,
        tv_distance=tv,
        counts=counts,
        captured=captured,
    )


def sample_diversity(samples: np.ndarray, max_points: int = 2_000) -> float:
    """Mean pairwise Euclidean distance over the distinct pairs of at most `max_points` samples.

    The subsample is evenly spaced over the array (deterministic; the samples are i.i.d., so
    any fixed subset is a fair one). Compare with the same statistic of the data.
    """
    samples = _as_points(samples, "samples")
    if len(samples) < 2 or max_points < 2:
        raise ValueError(f"need at least 2 samples and max_points >= 2, got {len(samples)}")
    return float(pdist(evenly_spaced(samples, max_points)).mean())


# --- coverage of the mixture components ---------------------------------------------------------

COVERAGE_CAP_FACTOR = 6.0  # region cap of components without centres, in units of `scale`


@dataclass(frozen=True)
class CoverageReport:
    modes_covered: int  # components whose region holds >= cover_fraction of a true draw's count
    num_modes: int  # K
    counts: np.ndarray  # (K,) samples in each component's region
    expected: np.ndarray  # (K,) a true draw's count there (training share of the region · m)
    covered: np.ndarray  # (K,) bool


def coverage_radii(centres: np.ndarray) -> np.ndarray:
    """½ · distance from each centre to the nearest other centre, (K,); inf for a single centre."""
    if len(centres) < 2:
        return np.full(len(centres), np.inf)
    distance = cKDTree(centres).query(centres, k=[2])[0][:, 0]
    return distance / 2.0


def coverage_regions(
    points: np.ndarray,
    components: Components,
    *,
    reference_points: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
) -> np.ndarray:
    """The component whose coverage region holds each point, −1 for none, (m,) int64.

    Regions (module docstring): the ball of radius `coverage_radii` around each centre, or, for
    components without centres, the nearest training point's component within 6 × scale.
    """
    points = _as_points(points, "points")
    if components.centres is not None:
        distance, nearest = cKDTree(components.centres).query(points, workers=-1)
        inside = distance <= coverage_radii(components.centres)[nearest]
        return np.where(inside, nearest, -1).astype(np.int64)
    if reference_points is None or reference_labels is None:
        raise ValueError(
            "components without centres need reference_points and reference_labels "
            "(the training points and their component labels)"
        )
    anchors, labels = _as_points(reference_points, "reference_points"), np.asarray(reference_labels)
    if labels.shape != (len(anchors),):
        raise ValueError(f"reference_labels must have shape ({len(anchors)},)")
    cap = COVERAGE_CAP_FACTOR * components.scale
    distance, nearest = cKDTree(anchors).query(
        points, distance_upper_bound=np.nextafter(cap, np.inf), workers=-1
    )
    inside = distance <= cap
    assigned = np.full(len(points), -1, dtype=np.int64)
    assigned[inside] = labels[nearest[inside]]
    return assigned


def mode_coverage(
    samples: np.ndarray,
    components: Components,
    *,
    reference_points: np.ndarray,
    reference_labels: np.ndarray,
    cover_fraction: float = 0.1,
    reference_regions: np.ndarray | None = None,
) -> CoverageReport:
    """Which components the samples cover (definition: module docstring).

    The expected count of a region is m × the share of training points in it;
    `reference_regions` (`coverage_regions` of the training points) may be passed to reuse it.
    """
    if not 0 < cover_fraction <= 1:
        raise ValueError(f"cover_fraction must be in (0, 1], got {cover_fraction}")
    num_modes = components.num_components
    regions = dict(reference_points=reference_points, reference_labels=reference_labels)
    if reference_regions is None:
        reference_regions = coverage_regions(reference_points, components, **regions)
    assigned = coverage_regions(samples, components, **regions)
    counts = np.bincount(assigned[assigned >= 0], minlength=num_modes)
    share = np.bincount(reference_regions[reference_regions >= 0], minlength=num_modes)
    expected = share / len(reference_regions) * len(assigned)
    covered = (counts >= cover_fraction * expected) & (expected > 0)
    return CoverageReport(int(covered.sum()), num_modes, counts, expected, covered)


# --- precision / recall (Kynkäänniemi et al. 2019), density / coverage (Naeem et al. 2020) ------


@dataclass(frozen=True)
class PRDC:
    precision: float
    recall: float
    density: float
    coverage: float


def euclidean_radii(points: np.ndarray, k: int = 5) -> np.ndarray:
    """Euclidean distance from each point to its k-th nearest *other* point, (n,)."""
    points = _as_points(points, "points")
    _check_k(k, len(points), "the number of points")
    return cKDTree(points).query(points, k=[k + 1], workers=-1)[0][:, 0]


def _balls_union(
    centres: np.ndarray, radii: np.ndarray, tree: cKDTree, size: int, chunk: int = 20_000
) -> tuple[np.ndarray, int]:
    """Which of the tree's `size` points lie in some closed ball (centre, radius), and the
    number of (ball, point) pairs; chunks bound the memory of the hit lists."""
    inside, pairs = np.zeros(size, dtype=bool), 0
    for start in range(0, len(centres), chunk):
        hits = tree.query_ball_point(
            centres[start : start + chunk], r=radii[start : start + chunk], workers=-1
        )
        lengths = np.fromiter(map(len, hits), dtype=np.int64, count=len(hits))
        pairs += int(lengths.sum())
        if pairs:
            inside[np.fromiter(itertools.chain.from_iterable(hits), dtype=np.intp)] = True
    return inside, pairs


def precision_recall_density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = 5, *, real_radii: np.ndarray | None = None
) -> PRDC:
    """Precision, recall, density and coverage of `fake` (m, d) against `real` (n, d), exact.

    `real_radii` = `euclidean_radii(real, k)` may be passed to reuse it (module docstring).
    """
    real, fake = _as_points(real, "real"), _as_points(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake must have the same dimension, got {real.shape[1]}, {fake.shape[1]}"
        )
    _check_k(k, min(len(real), len(fake)), "min(n, m)")
    if real_radii is None:
        real_radii = euclidean_radii(real, k)
    elif np.shape(real_radii) != (len(real),):
        raise ValueError(f"real_radii must be euclidean_radii(real, k), shape ({len(real)},)")
    fake_tree = cKDTree(fake)
    fake_radii = fake_tree.query(fake, k=[k + 1], workers=-1)[0][:, 0]
    # balls around the real points: which samples they hold (precision) and how many (density)
    fake_in_real, pairs = _balls_union(real, real_radii, fake_tree, len(fake))
    # coverage: the real balls whose nearest sample lies inside them
    nearest_fake = fake_tree.query(real, workers=-1)[0]
    real_in_fake, _ = _balls_union(fake, fake_radii, cKDTree(real), len(real))
    return PRDC(
        precision=float(fake_in_real.mean()),
        recall=float(real_in_fake.mean()),
        density=pairs / (k * len(fake)),
        coverage=float((nearest_fake <= real_radii).mean()),
    )


# --- Wasserstein distances (POT) ----------------------------------------------------------------

W2_MAX_POINTS = 2_000
SLICED_DIRECTIONS = 32


def evenly_spaced(points: np.ndarray, max_points: int) -> np.ndarray:
    """A deterministic subsample: at most `max_points` rows evenly spaced over the array."""
    index = np.linspace(0, len(points) - 1, min(len(points), max_points)).round().astype(int)
    return points[np.unique(index)]


def wasserstein2(x: np.ndarray, y: np.ndarray, max_points: int = W2_MAX_POINTS) -> float:
    """Exact W2 distance (not squared) between evenly spaced subsamples of x and y (POT emd)."""
    import ot  # imported here: POT takes ~2 s to import

    x = evenly_spaced(_as_points(x, "x"), max_points)
    y = evenly_spaced(_as_points(y, "y"), max_points)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]}, {y.shape[1]}")
    cost = ot.dist(x, y, metric="sqeuclidean")  # (n, m) squared Euclidean
    weights_x, weights_y = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
    squared, log = ot.emd2(weights_x, weights_y, cost, numItermax=100 * len(x) * len(y), log=True)
    if log.get("warning"):
        raise RuntimeError(f"exact optimal transport did not converge: {log['warning']}")
    return float(math.sqrt(max(float(squared), 0.0)))


def sliced_wasserstein2(
    x: np.ndarray, y: np.ndarray, num_directions: int = SLICED_DIRECTIONS
) -> float:
    """Sliced W2 distance over all points, on `num_directions` evenly spaced directions (2-D)."""
    import ot  # imported here: POT takes ~2 s to import

    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[1] != 2 or y.shape[1] != 2:
        raise ValueError(
            f"sliced_wasserstein2 is for 2-D points, got {x.shape[1]} and {y.shape[1]}"
        )
    angles = np.pi * np.arange(num_directions) / num_directions
    directions = np.stack((np.cos(angles), np.sin(angles)))  # (2, P), unit columns
    return float(ot.sliced_wasserstein_distance(x, y, projections=directions, p=2))


# --- the catalogue: every metric lowdiff reports, declared once -----------------------------

Goal = Literal["oracle", "lower", "higher"]


@dataclass(frozen=True, kw_only=True)
class MetricInfo:
    """How a metric is shown and judged. The runner, final_info.json and the report read this.

    goal "oracle": the metric has an oracle value (its value for fresh draws of the true
    distribution); a run is better when it is closer to that value, and past it is not better.
    goal "lower" / "higher": a plain direction, for metrics without an oracle (times, losses).
    """

    label: str  # short column title
    description: str
    goal: Goal
    unit: str = ""  # appended to values in texts, e.g. "bits", "s"
    format: str = ".3f"  # format spec of a value
    bounds: tuple[float | None, float | None] = (None, None)  # intervals are clipped to these
    from_samples: bool = True  # computed from samples (so it has an oracle floor)
    # the way an oracle metric's value moves as samples improve, until it reaches the oracle
    # value (KL falls, HQ fraction rises); None where neither (diversity). Labels only.
    improves: Literal["lower", "higher"] | None = None
    # what a value significantly below / above the oracle value says about the samples: the
    # metric-specific words of a "past the oracle value" verdict (stats.verdict)
    below_oracle: str = "below the value of true samples"
    above_oracle: str = "above the value of true samples"
    table: bool = True  # a column of the report's run tables (in catalogue order)

    @property
    def lower_is_better(self) -> bool | None:
        direction = self.goal if self.goal != "oracle" else self.improves
        return None if direction is None else direction == "lower"


METRICS: dict[str, MetricInfo] = {
    "kl_divergence": MetricInfo(
        label="KL",
        improves="lower",
        unit="bits",
        goal="oracle",
        description="k-NN estimate of KL(data || samples), max-norm distances",
        below_oracle="sharper than the data",
        above_oracle="farther from the data than true samples",
    ),
    "eval_loss": MetricInfo(
        label="eval loss",
        goal="lower",
        from_samples=False,
        description="MSE of the trained weights over one pass of the data",
    ),
    "modes_captured": MetricInfo(
        label="modes captured",
        improves="higher",
        goal="oracle",
        format=".1f",
        bounds=(0.0, None),
        description="components holding >= 10% of their expected share of HQ samples",
        below_oracle="fewer modes with sharp samples than true samples",
        above_oracle="more modes with sharp samples than true samples",
    ),
    "modes_covered": MetricInfo(
        label="modes covered",
        improves="higher",
        goal="oracle",
        format=".1f",
        bounds=(0.0, None),
        description="components whose region (Voronoi cell capped at half the distance to the "
        "next centre) holds >= 10% of a true draw's count",
        below_oracle="misses modes that true samples cover",
        above_oracle="covers more modes than true samples",
    ),
    "high_quality_fraction": MetricInfo(
        label="HQ fraction",
        improves="higher",
        goal="oracle",
        bounds=(0.0, 1.0),
        description="samples within 3 x noise scale of the data",
        below_oracle="more samples off the data than true samples",
        above_oracle="sharper than the data",
    ),
    "mode_tv_distance": MetricInfo(
        label="mode TV",
        improves="lower",
        goal="oracle",
        bounds=(0.0, 1.0),
        description="total variation between the mode histogram and the true weights",
    ),
    "sample_diversity": MetricInfo(
        label="diversity",
        goal="oracle",
        description="mean pairwise distance of samples",
        table=False,
        below_oracle="less spread than the data",
        above_oracle="more spread than the data",
    ),
    "precision": MetricInfo(
        label="precision",
        improves="higher",
        goal="oracle",
        bounds=(0.0, 1.0),
        description="samples inside the training points' k-NN balls (Kynkäänniemi et al. 2019)",
        below_oracle="more samples off the data than true samples",
        above_oracle="sharper than the data",
    ),
    "recall": MetricInfo(
        label="recall",
        improves="higher",
        goal="oracle",
        bounds=(0.0, 1.0),
        description="training points inside the samples' k-NN balls (Kynkäänniemi et al. 2019)",
        below_oracle="misses parts of the data",
        above_oracle="samples more spread than the data",
    ),
    "density": MetricInfo(
        label="density",
        improves="higher",
        goal="oracle",
        bounds=(0.0, None),
        description="training k-NN balls holding each sample, / k (Naeem et al. 2020)",
        below_oracle="fewer samples in the data's dense regions than true samples",
        above_oracle="samples crowd the data's dense regions: sharper than the data",
    ),
    "coverage": MetricInfo(
        label="coverage",
        improves="higher",
        goal="oracle",
        bounds=(0.0, 1.0),
        description="training k-NN balls holding at least one sample (Naeem et al. 2020)",
        below_oracle="leaves more of the data uncovered than true samples",
        above_oracle="spreads over the data more evenly than true samples",
    ),
    "w2": MetricInfo(
        label="W2",
        improves="lower",
        goal="oracle",
        bounds=(0.0, None),
        description="exact 2-Wasserstein distance, 2,000 samples vs 2,000 training points",
        below_oracle="closer to the training points than true samples (copies of the data?)",
        above_oracle="farther from the data than true samples",
    ),
    "sliced_w2": MetricInfo(
        label="sliced W2",
        improves="lower",
        goal="oracle",
        bounds=(0.0, None),
        description="sliced 2-Wasserstein distance, all samples vs all training points",
        below_oracle="closer to the training points than true samples (copies of the data?)",
        above_oracle="farther from the data than true samples",
    ),
    # ground truth (lowdiff.ground_truth); their oracle values come from oracle.json's block
    "excess_eval_loss": MetricInfo(
        label="excess loss",
        improves="lower",
        goal="oracle",
        format=".4f",
        from_samples=False,
        description="EMA model's eps-MSE minus the Bayes floor, fresh true draws, mean over t",
        below_oracle="below the Bayes floor (Monte-Carlo error)",
        above_oracle="above the Bayes-optimal denoiser",
    ),
    "ode_nll_bits": MetricInfo(
        label="ODE NLL",
        unit="bits",
        goal="lower",
        from_samples=False,
        description="exact probability-flow ODE negative log-likelihood of fresh true draws",
        table=False,  # the table shows its KL (ode_kl_bits), which has an oracle value
    ),
    "ode_kl_bits": MetricInfo(
        label="ODE KL",
        improves="lower",
        unit="bits",
        goal="oracle",
        from_samples=False,
        description="ODE NLL minus the true entropy: exact KL(data || ODE model), Monte Carlo",
        below_oracle="below the exact denoiser's prior mismatch (Monte-Carlo error)",
        above_oracle="farther from the data than the exact denoiser's flow",
    ),
    "sample_log_density": MetricInfo(
        label="sample log p",
        improves="higher",
        unit="bits",
        goal="oracle",
        from_samples=False,
        description="mean true log2-density of the generated samples",
        below_oracle="samples where the true density is lower than true samples",
        above_oracle="samples crowd the densest regions: sharper than the data",
    ),
    "training_time": MetricInfo(
        label="train time",
        unit="s",
        format=".1f",
        goal="lower",
        from_samples=False,
        description="training wall clock per model (batch time / M)",
    ),
    "inference_time": MetricInfo(
        label="sample time",
        unit="s",
        format=".2f",
        goal="lower",
        from_samples=False,
        description="sampling wall clock per model (batch time / M)",
    ),
}


# --- measuring one set of samples against a dataset's training points -----------------------


@dataclass(frozen=True)
class Reference:
    """A dataset's training points, their component labels, and its cached k-NN radii."""

    points: np.ndarray  # (n, 2) float32
    labels: np.ndarray  # (n,)
    components: Components
    radii: dict[int, np.ndarray] = field(default_factory=dict)  # k -> rho_k of every point
    # derived arrays computed once per dataset: Euclidean k-NN radii, coverage regions
    cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def rho(self, k: int) -> np.ndarray:
        if k not in self.radii:
            self.radii[k] = knn_radii(self.points, k)
        return self.radii[k]

    def euclidean_radii(self, k: int) -> np.ndarray:
        if f"euclidean_{k}" not in self.cache:
            self.cache[f"euclidean_{k}"] = euclidean_radii(self.points, k)
        return self.cache[f"euclidean_{k}"]

    def matched(self, size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """An evenly spaced subsample of `size` training points and its Euclidean k-NN radii."""
        if f"matched_{size}_{k}" not in self.cache:
            points = evenly_spaced(self.points, size)
            self.cache[f"matched_{size}"] = points
            self.cache[f"matched_{size}_{k}"] = euclidean_radii(points, k)
        return self.cache[f"matched_{size}"], self.cache[f"matched_{size}_{k}"]

    def regions(self) -> np.ndarray:
        """`coverage_regions` of the training points themselves."""
        if "regions" not in self.cache:
            self.cache["regions"] = coverage_regions(
                self.points,
                self.components,
                reference_points=self.points,
                reference_labels=self.labels,
            )
        return self.cache["regions"]


def load_reference(name: str, num_points: int) -> Reference:
    points, labels = data.load_with_labels(name, num_points)
    return Reference(points, labels, data.get_dataset(name).components)


def measure(samples: np.ndarray, reference: Reference, k: int) -> dict[str, float]:
    """The sample-quality metrics of one model (or of an oracle draw)."""
    labelled = dict(reference_points=reference.points, reference_labels=reference.labels)
    modes = mode_metrics(samples, reference.components, **labelled)
    covered = mode_coverage(
        samples, reference.components, **labelled, reference_regions=reference.regions()
    )
    manifold = precision_recall_density_coverage(
        reference.points, samples, k, real_radii=reference.euclidean_radii(k)
    )
    matched_points, matched_radii = reference.matched(len(samples), k)
    balls = precision_recall_density_coverage(matched_points, samples, k, real_radii=matched_radii)
    return {
        "kl_divergence": knn_kl(reference.points, samples, k, x_radii=reference.rho(k)),
        "modes_captured": float(modes.modes_captured),
        "num_modes": float(modes.num_modes),
        "high_quality_fraction": modes.high_quality_fraction,
        "mode_tv_distance": modes.tv_distance,
        "sample_diversity": sample_diversity(samples),
        "modes_covered": float(covered.modes_covered),
        "precision": manifold.precision,
        "recall": manifold.recall,
        "density": balls.density,
        "coverage": balls.coverage,
        "w2": wasserstein2(samples, reference.points),
        "sliced_w2": sliced_wasserstein2(samples, reference.points),
    }
