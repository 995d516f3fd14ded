"""Sample-quality metrics, as pure functions of arrays (no I/O, no torch).

- `knn_kl`: the k-nearest-neighbour estimate of KL(data ‖ samples) in bits of SPEC §1
  (Wang, Kulkarni & Verdú 2009; Pérez-Cruz 2008), with max-norm distances. `knn_radii` is its
  data-only half, so a caller can compute it once per dataset and pass it as `x_radii`.
- `mode_metrics`: modes captured, high-quality fraction and total-variation distance over the
  known mixture components of a dataset (SPEC §3), following the 2-D ring/grid protocol of the
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
- `sample_diversity`: the mean pairwise Euclidean distance of the samples — the quantity
  Series B's diversity loss rewards — on an evenly spaced subsample of at most 2,000 points.
"""

from __future__ import annotations

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
    "ModeReport",
    "Reference",
    "load_reference",
    "measure",
    "assign_components",
    "knn_kl",
    "knn_radii",
    "mode_metrics",
    "sample_diversity",
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


# --- k-NN KL divergence (SPEC §1) --------------------------------------------------------------


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


# --- mode metrics (SPEC §3) --------------------------------------------------------------------


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
    index = np.linspace(0, len(samples) - 1, min(len(samples), max_points)).round().astype(int)
    return float(pdist(samples[index]).mean())


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
    ),
    "high_quality_fraction": MetricInfo(
        label="HQ fraction",
        improves="higher",
        goal="oracle",
        bounds=(0.0, 1.0),
        description="samples within 3 x noise scale of the data",
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

    def rho(self, k: int) -> np.ndarray:
        if k not in self.radii:
            self.radii[k] = knn_radii(self.points, k)
        return self.radii[k]


def load_reference(name: str, num_points: int) -> Reference:
    points, labels = data.load_with_labels(name, num_points)
    return Reference(points, labels, data.get_dataset(name).components)


def measure(samples: np.ndarray, reference: Reference, k: int) -> dict[str, float]:
    """The sample-quality metrics of one model (or of an oracle draw)."""
    modes = mode_metrics(
        samples,
        reference.components,
        reference_points=reference.points,
        reference_labels=reference.labels,
    )
    return {
        "kl_divergence": knn_kl(reference.points, samples, k, x_radii=reference.rho(k)),
        "modes_captured": float(modes.modes_captured),
        "num_modes": float(modes.num_modes),
        "high_quality_fraction": modes.high_quality_fraction,
        "mode_tv_distance": modes.tv_distance,
        "sample_diversity": sample_diversity(samples),
    }
