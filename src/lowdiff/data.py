"""The 2-D datasets: one registry of samplers, each with its true mixture components.

Every dataset is a deterministic function of `n` and `seed`: `load_with_labels(name, n, seed)`
returns float32 points (n, 2) and the int64 component label (n,) of each point. With the
default `seed=42` the four datasets of the reference protocol (protocol §1: `circle`, `dino`,
`line`, `moons`) are reproduced byte for byte (same generator, same draws in the same order,
same formulas). Any other seed draws afresh from the same distribution, which is what an
"oracle" floor of a metric needs.

Each entry also knows its mixture `Components` (true weights, a noise `scale`, and the
component centres when the components are points), so that the mode metrics of
`lowdiff.metrics` are exact. A sample is "high quality" within 3 × scale of the data. The
choices, all in final (returned) units:

- `circle`: K = 17, unequal weights (below), centres 3·direction and the origin; scale 0.03,
  since the disk noise r < 0.03, times 3, gives radius 0.09 = 3 × scale: every true point is
  high quality.
- `dino` and the other 12 Datasaurus shapes: K = 142, weights 1/142, centres the 142
  normalised points; scale 0.15·4/48 = 0.0125, the larger per-axis std (y; x has
  0.15·4/54 ≈ 0.0111), so at least 1 − exp(−4.5) ≈ 98.9% of true points lie within 3 × scale.
- `moons`: K = 2, weights 1/2, no centres; scale 0.03·3 = 0.09, make_moons' std 0.03 times the
  larger axis factor (y ×3; x ×2).
- `line`: K = 1, no centres, no noise; scale 0.5·sqrt(32/100,000) ≈ 0.0089, the mean
  nearest-neighbour spacing of the 100,000-point reference set (Poisson, area 4 × 8 = 32): a
  fresh true draw lies within 3 × scale of a reference point with probability
  1 − exp(−9π/4) ≈ 0.9991, and a sample further than 0.027 outside the rectangle is rejected.
- `ring8`: K = 8, weights 1/8, centres on the circle of radius 2 at angles 2πk/8, std 0.02 =
  scale: the ring of the mode-collapse literature (Unrolled GAN, VEEGAN, PacGAN).
- `grid25`: K = 25, weights 1/25, centres {−4, −2, 0, 2, 4}² (k = 5·i + j for
  (x, y) = (−4 + 2i, −4 + 2j)), std 0.05 = scale: the grid of VEEGAN and PacGAN.
- `swissroll`: K = 10, weights 1/10, no centres; scale 0.5·4/(4.5π) ≈ 0.141, the noise of
  make_swiss_roll(noise=0.5) scaled like the points.

How the components are defined:

- `circle`: the rounding maps each coordinate to one of {−0.4, −0.2, 0, 0.2, 0.4} with
  probability 1/5 each, so the rounded point is uniform over a 5×5 grid. Grid points that are
  parallel normalise to the same direction: the 4 axial and the 4 diagonal directions hold two
  grid points each (weight 2/25), the 8 directions (±1, ±2), (±2, ±1) hold one (1/25), and the
  origin cluster holds the centre (1/25). Component 0 is the origin, 1..16 are the directions
  ordered by angle from +x, counter-clockwise.
- Datasaurus: the 13 shapes of Matejka & Fitzmaurice (2017), shipped in
  `resources/datasaurus.csv` (see its README), all built with the protocol's dino recipe: the
  label is the index of the drawn point, noise 0.15, then x ← (x/54 − 1)·4, y ← (y/48 − 1)·4. The
  table's own `circle` shape is registered as `datasaurus_circle`. Several shapes (`dots`,
  `star`, `datasaurus_circle`, `h_lines`, ...) hold points closer together than the noise, so
  their components overlap; the mode metrics then split them by nearest centre.
- `moons`: label = make_moons' y (0 = upper moon, 1 = lower moon).
- `ring8`, `grid25`: label ~ uniform over the K centres, then centre + std · N(0, I), drawn with
  `np.random.default_rng(seed)` in that order.
- `swissroll`: the (x, z) projection of `sklearn.datasets.make_swiss_roll(n, noise=0.5,
  random_state=seed)`, scaled by 4/(4.5π) so the noiseless roll has radius ≤ 4; its parameter
  t ~ U[1.5π, 4.5π] is cut into K = 10 intervals of equal width, so the weights are equal.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import resources
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lowdiff.point_files import PointFile

Sampler = Callable[[int, int], tuple[np.ndarray, np.ndarray]]

DEFAULT_N = 100_000
DEFAULT_SEED = 42


@dataclass(frozen=True)
class Components:
    """The true mixture components of a dataset (arrays are read-only)."""

    weights: np.ndarray  # (K,) true mixture weights, sum 1
    scale: float  # component noise scale in final units; high-quality radius = 3 * scale
    centres: np.ndarray | None = None  # (K, 2) when components are point-centred, else None

    def __post_init__(self) -> None:
        weights = np.array(self.weights, dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0 or (weights < 0).any():
            raise ValueError(f"weights must be a non-empty 1-D array >= 0, got {weights!r}")
        if not math.isclose(weights.sum(), 1.0, abs_tol=1e-9):
            raise ValueError(f"weights must sum to 1, got {weights.sum()}")
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        weights.setflags(write=False)
        object.__setattr__(self, "weights", weights)
        if self.centres is not None:
            centres = np.array(self.centres, dtype=np.float64)
            if centres.shape != (weights.size, 2):
                raise ValueError(
                    f"centres must have shape ({weights.size}, 2), got {centres.shape}"
                )
            centres.setflags(write=False)
            object.__setattr__(self, "centres", centres)

    @property
    def num_components(self) -> int:
        return self.weights.size

    @property
    def radius(self) -> float:
        """The high-quality radius, 3 × scale."""
        return 3.0 * self.scale


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    sampler: Sampler  # (n, seed) -> (points float32 (n, 2), labels int64 (n,))
    components: Components


# --- the reference protocol (protocol §1), draw for draw ---------------------------------


def _moons(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons  # imported here: sklearn takes ~1 s to import

    points, labels = make_moons(n_samples=n, random_state=seed, noise=0.03)
    points[:, 0] = (points[:, 0] + 0.3) * 2 - 1
    points[:, 1] = (points[:, 1] + 0.3) * 3 - 1
    return points.astype(np.float32), labels.astype(np.int64)


def _line(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, n)
    y = rng.uniform(-1, 1, n)
    points = np.stack((x, y), axis=1) * 4
    return points.astype(np.float32), np.zeros(n, dtype=np.int64)


def _circle_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label of each cell of the 5×5 rounding grid, and the weights and centres of the labels."""
    cells = [(a, b) for a in range(-2, 3) for b in range(-2, 3)]

    def direction(a: int, b: int) -> tuple[int, int]:
        divisor = math.gcd(a, b)  # parallel grid points share a direction; (0, 0) stays
        return (a // divisor, b // divisor) if divisor else (0, 0)

    directions = sorted(
        {direction(a, b) for a, b in cells} - {(0, 0)},
        key=lambda d: math.atan2(d[1], d[0]) % (2 * math.pi),
    )
    index = {(0, 0): 0} | {d: i + 1 for i, d in enumerate(directions)}
    label_of_cell = np.array([index[direction(a, b)] for a, b in cells]).reshape(5, 5)
    weights = np.bincount(label_of_cell.ravel(), minlength=len(index)) / len(cells)
    centres = np.array(
        [(0.0, 0.0)] + [(a / math.hypot(a, b), b / math.hypot(a, b)) for a, b in directions]
    )
    return label_of_cell, weights, 3 * centres


_CIRCLE_LABEL_OF_CELL, _CIRCLE_WEIGHTS, _CIRCLE_CENTRES = _circle_table()


def _circle(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2  # in {-0.4, -0.2, 0, 0.2, 0.4}
    y = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2
    cell = (np.rint(x * 5).astype(np.int64) + 2, np.rint(y * 5).astype(np.int64) + 2)
    labels = _CIRCLE_LABEL_OF_CELL[cell]
    norm = np.sqrt(x**2 + y**2) + 1e-10
    x = x / norm
    y = y / norm
    theta = 2 * np.pi * rng.uniform(0, 1, n)
    r = rng.uniform(0, 0.03, n)
    x = x + r * np.cos(theta)
    y = y + r * np.sin(theta)
    points = np.stack((x, y), axis=1) * 3
    return points.astype(np.float32), labels.astype(np.int64)


# --- Datasaurus Dozen: the dino recipe for every shape -----------------------------------------


def _read_datasaurus() -> dict[str, np.ndarray]:
    table: dict[str, list[tuple[float, float]]] = {}
    text = resources.files("lowdiff").joinpath("resources/datasaurus.csv").read_text()
    for row in csv.DictReader(text.splitlines()):
        table.setdefault(row["dataset"], []).append((float(row["x"]), float(row["y"])))
    shapes = {shape: np.array(points, dtype=np.float64) for shape, points in table.items()}
    for points in shapes.values():
        points.setflags(write=False)
    return shapes


_DATASAURUS = _read_datasaurus()  # shape -> raw (142, 2) points, in file order
DATASAURUS_NOISE = 0.15  # in the table's raw units


def datasaurus_points(shape: str) -> np.ndarray:
    """The raw (142, 2) float64 points of one Datasaurus shape (table names, e.g. "dino")."""
    if shape not in _DATASAURUS:
        raise ValueError(f"unknown Datasaurus shape {shape!r}; valid: {', '.join(_DATASAURUS)}")
    return _DATASAURUS[shape]


def _normalise_datasaurus(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (x / 54 - 1) * 4, (y / 48 - 1) * 4


def _datasaurus(shape: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    raw = _DATASAURUS[shape]
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, len(raw), n)  # draw order: ix, x-noise, y-noise (protocol §1)
    x = raw[ix, 0] + rng.normal(size=n) * DATASAURUS_NOISE
    y = raw[ix, 1] + rng.normal(size=n) * DATASAURUS_NOISE
    x, y = _normalise_datasaurus(x, y)
    return np.stack((x, y), axis=1).astype(np.float32), ix.astype(np.int64)


def _datasaurus_spec(shape: str) -> DatasetSpec:
    raw = _DATASAURUS[shape]
    centres = np.stack(_normalise_datasaurus(raw[:, 0], raw[:, 1]), axis=1)
    name = "datasaurus_circle" if shape == "circle" else shape
    return DatasetSpec(
        name=name,
        description=f"Datasaurus Dozen '{shape}': 142 points + N(0, 0.15²) noise, normalised",
        sampler=partial(_datasaurus, shape),
        components=Components(
            weights=np.full(len(raw), 1 / len(raw)),
            scale=DATASAURUS_NOISE * 4 / 48,  # the larger per-axis std (y); x has 4/54
            centres=centres,
        ),
    )


# --- the mode-collapse benchmarks --------------------------------------------------------------

RING8_RADIUS, RING8_STD = 2.0, 0.02
GRID25_SPACING, GRID25_STD = 2.0, 0.05
SWISSROLL_NOISE, SWISSROLL_SEGMENTS = 0.5, 10
_SWISSROLL_T_MIN, _SWISSROLL_T_MAX = 1.5 * np.pi, 4.5 * np.pi  # make_swiss_roll's t range
_SWISSROLL_FACTOR = 4 / _SWISSROLL_T_MAX  # the noiseless roll's radius t becomes <= 4

_RING8_CENTRES = RING8_RADIUS * np.stack(
    (np.cos(2 * np.pi * np.arange(8) / 8), np.sin(2 * np.pi * np.arange(8) / 8)), axis=1
)
_GRID25_CENTRES = GRID25_SPACING * np.array(
    [(i, j) for i in range(-2, 3) for j in range(-2, 3)], dtype=np.float64
)


def _gaussian_mixture(
    centres: np.ndarray, std: float, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Equal-weight isotropic Gaussians: label first, then the noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), n)
    points = centres[labels] + std * rng.normal(size=(n, 2))
    return points.astype(np.float32), labels.astype(np.int64)


def _swissroll(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_swiss_roll  # imported here: sklearn takes ~1 s to import

    points, t = make_swiss_roll(n_samples=n, noise=SWISSROLL_NOISE, random_state=seed)
    points = points[:, [0, 2]] * _SWISSROLL_FACTOR  # (x, z): the roll seen end-on
    segment = (t - _SWISSROLL_T_MIN) / (_SWISSROLL_T_MAX - _SWISSROLL_T_MIN) * SWISSROLL_SEGMENTS
    labels = np.minimum(segment.astype(np.int64), SWISSROLL_SEGMENTS - 1)
    return points.astype(np.float32), labels


# --- the registry ------------------------------------------------------------------------------


def _build_registry() -> dict[str, DatasetSpec]:
    specs = [
        DatasetSpec(
            "circle",
            "16 directions on a circle of radius 3 plus the origin, disk noise r < 0.09",
            _circle,
            Components(_CIRCLE_WEIGHTS, scale=0.03, centres=_CIRCLE_CENTRES),
        ),
        _datasaurus_spec("dino"),
        DatasetSpec(
            "line",
            "uniform on the rectangle [-2, 2] × [-4, 4] (protocol §1)",
            _line,
            Components(np.ones(1), scale=0.5 * math.sqrt(32 / DEFAULT_N)),
        ),
        DatasetSpec(
            "moons",
            "sklearn make_moons(noise=0.03), x ← 2(x + 0.3) − 1, y ← 3(y + 0.3) − 1 (protocol §1)",
            _moons,
            Components(np.full(2, 0.5), scale=0.03 * 3),
        ),
        DatasetSpec(
            "ring8",
            "8 Gaussians on a circle of radius 2, std 0.02",
            partial(_gaussian_mixture, _RING8_CENTRES, RING8_STD),
            Components(np.full(8, 1 / 8), scale=RING8_STD, centres=_RING8_CENTRES),
        ),
        DatasetSpec(
            "grid25",
            "5×5 grid of Gaussians at {-4, -2, 0, 2, 4}², std 0.05",
            partial(_gaussian_mixture, _GRID25_CENTRES, GRID25_STD),
            Components(np.full(25, 1 / 25), scale=GRID25_STD, centres=_GRID25_CENTRES),
        ),
        DatasetSpec(
            "swissroll",
            "sklearn make_swiss_roll(noise=0.5), (x, z) scaled by 4/(4.5π); 10 segments of t",
            _swissroll,
            Components(
                np.full(SWISSROLL_SEGMENTS, 1 / SWISSROLL_SEGMENTS),
                scale=SWISSROLL_NOISE * _SWISSROLL_FACTOR,
            ),
        ),
    ]
    specs += [_datasaurus_spec(shape) for shape in _DATASAURUS if shape != "dino"]
    return {spec.name: spec for spec in specs}


DATASETS: dict[str, DatasetSpec] = _build_registry()


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_with_labels(
    name: str, n: int = DEFAULT_N, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Points (n, 2) float32 and their component labels (n,) int64."""
    spec = get_dataset(name)
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return spec.sampler(int(n), int(seed))


def load(name: str, n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Points (n, 2) float32."""
    return load_with_labels(name, n, seed)[0]


# --- the researcher's own point files (lowdiff.point_files) -------------------------------

BUILT_IN = frozenset(DATASETS)
POINT_FILES: dict[str, PointFile] = {}  # dataset name -> its registered point file


def register_file(name: str, path: str | Path) -> DatasetSpec:
    """Add the point file at `path` to the registry as dataset `name` (validated; a built-in
    name is refused). Its law is its smoothed bootstrap (`lowdiff.point_files`)."""
    from lowdiff.point_files import PointFile  # imported here: point_files needs SciPy

    if name in BUILT_IN:
        raise ValueError(
            f"point file {str(path)!r} would be named {name!r}, a built-in dataset; rename the file"
        )
    points = PointFile(Path(path))
    spec = DatasetSpec(
        name,
        f"the {len(points.points)} points of {Path(path).name} (law: their smoothed bootstrap)",
        points.sample,
        Components(points.weights, scale=points.scale, centres=points.centres),
    )
    DATASETS[name], POINT_FILES[name] = spec, points
    return spec
