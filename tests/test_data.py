"""Invariants of the dataset registry, and the reference protocol's four datasets bit for bit."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_moons

import lowdiff
from lowdiff import data

NAMES = list(data.DATASETS)
CSV_PATH = Path(lowdiff.__file__).parent / "resources" / "datasaurus.csv"


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_label_range(name: str) -> None:
    points, labels = data.load_with_labels(name, n=1_001, seed=3)
    num_components = data.get_dataset(name).components.num_components
    assert points.shape == (1_001, 2) and points.dtype == np.float32
    assert labels.shape == (1_001,) and labels.dtype == np.int64
    assert np.isfinite(points).all()
    assert labels.min() >= 0 and labels.max() < num_components
    assert np.array_equal(data.load(name, n=1_001, seed=3), points)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_seed_and_fresh_across_seeds(name: str) -> None:
    first, first_labels = data.load_with_labels(name, n=2_000, seed=5)
    again, again_labels = data.load_with_labels(name, n=2_000, seed=5)
    other = data.load(name, n=2_000, seed=6)
    assert first.tobytes() == again.tobytes() and np.array_equal(first_labels, again_labels)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("name", NAMES)
def test_label_frequencies_match_weights(name: str) -> None:
    n = 50_000
    _, labels = data.load_with_labels(name, n=n, seed=11)
    weights = data.get_dataset(name).components.weights
    assert weights.sum() == pytest.approx(1.0)
    frequencies = np.bincount(labels, minlength=weights.size) / n
    # each count is Binomial(n, w): 5 standard errors (+ one point, for make_moons' odd n split)
    tolerance = 5 * np.sqrt(weights * (1 - weights) / n) + 1 / n
    assert (np.abs(frequencies - weights) <= tolerance).all()


@pytest.mark.parametrize(
    "name", [n for n in NAMES if data.DATASETS[n].components.centres is not None]
)
def test_points_lie_near_their_centre(name: str) -> None:
    components = data.get_dataset(name).components
    points, labels = data.load_with_labels(name, n=20_000, seed=2)
    distance = np.linalg.norm(points - components.centres[labels], axis=1)
    # a 2-D Gaussian of std <= scale per axis stays within 3 scale w.p. >= 1 - exp(-4.5) = 0.989
    assert (distance <= components.radius).mean() >= 0.98


def test_circle_components_are_the_merged_grid_directions() -> None:
    components = data.get_dataset("circle").components
    # 25 grid cells: the origin, 8 directions holding 2 parallel cells, 8 holding 1
    assert sorted(np.round(components.weights * 25).astype(int)) == [1] * 9 + [2] * 8
    assert np.allclose(components.weights * 25, np.round(components.weights * 25))
    radii = np.linalg.norm(components.centres, axis=1)
    assert radii[0] == 0 and np.allclose(radii[1:], 3)
    points, labels = data.load_with_labels("circle", n=20_000, seed=9)
    distance = np.linalg.norm(points - components.centres[labels], axis=1)
    assert distance.max() <= 0.09 + 1e-5  # disk noise r < 0.03, times 3 (float32 slack)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'dinosaur'") as error:
        data.get_dataset("dinosaur")
    assert all(name in str(error.value) for name in NAMES)
    with pytest.raises(ValueError, match="dinosaur"):
        data.load("dinosaur")


@pytest.mark.parametrize("n", [0, -5, 2.5, True, "10"])
def test_n_must_be_a_positive_int(n: object) -> None:
    with pytest.raises(ValueError, match="n must be a positive int"):
        data.load("moons", n=n)  # type: ignore[arg-type]


def test_seed_must_be_a_non_negative_int() -> None:
    with pytest.raises(ValueError, match="seed"):
        data.load("line", n=10, seed=-1)


def test_datasaurus_csv_has_the_dozen() -> None:
    with CSV_PATH.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1_846
    shapes = {row["dataset"] for row in rows}
    assert len(shapes) == 13
    assert all(sum(row["dataset"] == shape for row in rows) == 142 for shape in shapes)
    assert data.datasaurus_points("dino").shape == (142, 2)
    assert data.get_dataset("dino").components.num_components == 142
    registered = {"datasaurus_circle" if shape == "circle" else shape for shape in shapes}
    assert registered <= set(NAMES)


# --- protocol §1, written out as literally as the text reads -----------------------------


def spec_moons(n: int) -> np.ndarray:
    X, _ = make_moons(n_samples=n, random_state=42, noise=0.03)
    X[:, 0] = (X[:, 0] + 0.3) * 2 - 1
    X[:, 1] = (X[:, 1] + 0.3) * 3 - 1
    return X.astype(np.float32)


def spec_line(n: int) -> np.ndarray:
    rng = np.random.default_rng(42)
    x = rng.uniform(-0.5, 0.5, n)
    y = rng.uniform(-1, 1, n)
    X = np.stack((x, y), axis=1)
    X *= 4
    return X.astype(np.float32)


def spec_circle(n: int) -> np.ndarray:
    rng = np.random.default_rng(42)
    x = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2
    y = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2
    norm = np.sqrt(x**2 + y**2) + 1e-10
    x /= norm
    y /= norm
    theta = 2 * np.pi * rng.uniform(0, 1, n)
    r = rng.uniform(0, 0.03, n)
    x += r * np.cos(theta)
    y += r * np.sin(theta)
    X = np.stack((x, y), axis=1)
    X *= 3
    return X.astype(np.float32)


def spec_dino(n: int) -> np.ndarray:
    with CSV_PATH.open() as handle:
        dino = [row for row in csv.DictReader(handle) if row["dataset"] == "dino"]
    dino_x = np.array([float(row["x"]) for row in dino])
    dino_y = np.array([float(row["y"]) for row in dino])
    rng = np.random.default_rng(42)
    ix = rng.integers(0, 142, n)
    x = dino_x[ix] + rng.normal(size=n) * 0.15
    y = dino_y[ix] + rng.normal(size=n) * 0.15
    x = (x / 54 - 1) * 4
    y = (y / 48 - 1) * 4
    X = np.stack((x, y), axis=1)
    return X.astype(np.float32)


@pytest.mark.parametrize(
    "name, spec",
    [("moons", spec_moons), ("line", spec_line), ("circle", spec_circle), ("dino", spec_dino)],
)
def test_reference_protocol_byte_for_byte(name: str, spec) -> None:
    points = data.load(name)  # defaults: n = 100,000, seed = 42
    expected = spec(100_000)
    assert points.shape == (100_000, 2)
    assert points.tobytes() == expected.tobytes()
    assert data.load(name, n=777).tobytes() == spec(777).tobytes()
