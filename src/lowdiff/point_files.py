"""A researcher's own point set as a dataset: `experiment.datasets = ["file:points.csv"]`.

The file is a CSV (two numeric columns, an optional header row) or a `.npy` array of shape
(n, 2). It must hold n >= `MIN_POINTS` finite, distinct points (the k-NN metrics divide by
distances between points, so a repeated point would give a zero radius).

Its *law* is unknown, so it is taken to be the file's smoothed bootstrap (Efron 1979; Silverman
1986 §6.4): a fresh draw picks rows uniformly with replacement and adds Gaussian noise with
Silverman's rule-of-thumb bandwidth, h_j = σ_j n^(-1/(d+4)) (4/(d+2))^(1/(d+4)) = σ_j n^(-1/6)
in d = 2, per axis j. With `load(name, n)` at the protocol's data seed (42) the training set is
the file itself (its rows in file order; a fixed random subset of n rows, in file order, when
n is smaller). Every other seed is such a bootstrap draw, which is what the oracle floors of
`lowdiff.oracle` are measured from: for a file dataset they are floors of its smoothed
bootstrap, not of an exact law.

Mode metrics need mixture components. A sidecar `<stem>.modes.json` beside the file may give
them: {"centres": [[x, y], ...], "weights": [...] (optional, default equal), "scale": s}
(component noise scale; high quality within 3 s). Each point's label is its nearest centre.
Without a sidecar the set is one component whose scale is the median nearest-neighbour
distance of its points.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from lowdiff import results
from lowdiff.plugins import PluginError

__all__ = ["MIN_POINTS", "PointFile", "modes_sidecar", "read_points"]

MIN_POINTS = 16  # fewer cannot feed the k-NN metrics (k = 5 by default) and their floors
DATA_SEED = 42  # the protocol's data seed: the training set itself


def _read_csv(path: Path) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if rows:
        try:
            [float(cell) for cell in rows[0]]
        except ValueError:
            rows = rows[1:]  # a header row
    widths = {len(row) for row in rows}
    if widths - {2}:
        raise PluginError(
            f"{path}: every row must have 2 columns (x, y); found rows of {sorted(widths)}"
        )
    try:
        return np.array([[float(a), float(b)] for a, b in rows], dtype=np.float64).reshape(-1, 2)
    except ValueError as error:
        raise PluginError(f"{path}: a value is not a number ({error})") from None


def read_points(path: Path) -> np.ndarray:
    """The (n, 2) float64 points of a .csv or .npy file, validated; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise PluginError(f"point file {str(path)!r} not found")
    if path.stat().st_size > results.MAX_ARRAY_BYTES:
        raise PluginError(
            f"{path}: {path.stat().st_size} bytes, more than a point file may hold "
            f"({results.MAX_ARRAY_BYTES})"
        )
    try:
        if path.suffix.lower() == ".npy":  # the results files' validator: header and size first
            points = np.asarray(results.read_npy(path, finite=False), dtype=np.float64)
        else:
            points = _read_csv(path)
    except PluginError:
        raise
    except results.ResultsError as error:
        raise PluginError(str(error)) from None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise PluginError(f"{path}: not a readable point file ({error})") from None
    if points.ndim != 2 or points.shape[1] != 2:
        raise PluginError(f"{path}: expected points of shape (n, 2), got {points.shape}")
    if not np.isfinite(points).all():
        bad = int((~np.isfinite(points)).any(axis=1).sum())
        raise PluginError(f"{path}: {bad} rows are not finite (NaN or inf); remove them")
    if len(points) < MIN_POINTS:
        raise PluginError(f"{path}: {len(points)} points; the metrics need >= {MIN_POINTS}")
    repeated = len(points) - len(np.unique(points, axis=0))
    if repeated:
        raise PluginError(
            f"{path}: {repeated} repeated points; the k-NN metrics need distinct points "
            "(drop the repeats or add a little noise)"
        )
    return points


def modes_sidecar(path: Path) -> Path:
    return Path(path).with_name(Path(path).stem + ".modes.json")


def _components(path: Path, points: np.ndarray) -> tuple[np.ndarray, float, np.ndarray | None]:
    """(weights, scale, centres or None) from the sidecar, or one component."""
    sidecar = modes_sidecar(path)
    if not sidecar.exists():
        spacing = cKDTree(points).query(points, k=2)[0][:, 1]
        return np.ones(1), float(np.median(spacing)), None
    try:
        raw = json.loads(sidecar.read_text(encoding="utf-8"))
        centres = np.asarray(raw["centres"], dtype=np.float64)
        scale = float(raw["scale"])
        weights = np.asarray(raw.get("weights", np.full(len(centres), 1 / len(centres))), float)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as error:
        raise PluginError(
            f"{sidecar}: expected {{'centres': [[x, y], ...], 'scale': s, 'weights': [...]}} "
            f"({type(error).__name__}: {error})"
        ) from None
    if centres.ndim != 2 or centres.shape[1] != 2 or weights.shape != (len(centres),):
        raise PluginError(f"{sidecar}: centres must be (K, 2) and weights (K,)")
    if not (math.isfinite(scale) and scale > 0) or not math.isclose(weights.sum(), 1, abs_tol=1e-6):
        raise PluginError(f"{sidecar}: scale must be > 0 and the weights must sum to 1")
    return weights / weights.sum(), scale, centres


class PointFile:
    """A point file's training set, labels, components and smoothed-bootstrap draws."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.points = read_points(self.path)
        self.weights, self.scale, self.centres = _components(self.path, self.points)
        if self.centres is None:
            self.labels = np.zeros(len(self.points), dtype=np.int64)
        else:
            self.labels = cKDTree(self.centres).query(self.points)[1].astype(np.int64)
        self.bandwidth = self.points.std(axis=0) * len(self.points) ** (-1 / 6)  # Silverman

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The training set (seed 42) or a smoothed-bootstrap draw: float32 (n, 2), int64 (n,)."""
        rows = len(self.points)
        rng = np.random.default_rng(seed)
        if seed == DATA_SEED:
            if n > rows:
                raise ValueError(
                    f"{self.path} holds {rows} points; experiment.num_points ({n}) must be <= that"
                )
            index = np.arange(rows) if n == rows else np.sort(rng.choice(rows, n, replace=False))
            return self.points[index].astype(np.float32), self.labels[index]
        index = rng.integers(0, rows, n)
        noise = rng.normal(size=(n, 2)) * self.bandwidth
        return (self.points[index] + noise).astype(np.float32), self.labels[index]
