"""Blur sweep: how every sample metric moves when true samples are blurred or lose modes.

Samples are constructed, not trained: dino draws with the per-axis noise widened from the true
0.15 raw units (before the /54·4, /48·4 normalisation of protocol §1) and moons draws with extra
N(0, s²) blur in final units, plus rows with modes removed (20 of dino's 142 components, one
moon). Each row is measured by `lowdiff.metrics.measure` against the training points, exactly as
a trained model's samples are; the `oracle` row is a fresh true draw.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/blur_sweep.py            # 10k vs 100k
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/blur_sweep.py --samples 2000 --points 20000
"""

from __future__ import annotations

import argparse

import numpy as np

from lowdiff import data
from lowdiff.metrics import load_reference, measure

COLUMNS = (
    "kl_divergence",
    "high_quality_fraction",
    "modes_captured",
    "modes_covered",
    "coverage",
    "precision",
    "recall",
    "density",
    "w2",
    "sliced_w2",
)
DINO_NOISE = (0.10, 0.15, 0.3, 0.5, 0.8, 1.0, 1.2)  # raw units; 0.15 is the data's own
MOONS_BLUR = (0.0, 0.05, 0.1, 0.2, 0.3)  # extra N(0, s²) in final units
DROPPED_DINO_MODES = 20


def dino_draw(num_samples: int, noise: float, seed: int, drop: int = 0) -> np.ndarray:
    """Dino samples with per-axis noise `noise` (raw units), the last `drop` points left out."""
    raw = data.datasaurus_points("dino")
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, len(raw) - drop, num_samples)
    x = raw[ix, 0] + rng.normal(size=num_samples) * noise
    y = raw[ix, 1] + rng.normal(size=num_samples) * noise
    return np.stack(((x / 54 - 1) * 4, (y / 48 - 1) * 4), axis=1)


def moons_draw(num_samples: int, blur: float, seed: int, drop_lower: bool = False) -> np.ndarray:
    """Moons samples blurred by N(0, blur²); with `drop_lower` only the upper moon."""
    points, labels = data.load_with_labels("moons", 2 * num_samples, seed=seed)
    points = points[labels == 0] if drop_lower else points
    points = points[:num_samples].astype(np.float64)
    return points + blur * np.random.default_rng(seed + 1).normal(size=points.shape)


def rows(num_samples: int, num_points: int, k: int) -> list[tuple[str, str, dict[str, float]]]:
    dino, moons = load_reference("dino", num_points), load_reference("moons", num_points)
    table = [
        ("dino", f"noise {n:.2f}", measure(dino_draw(num_samples, n, 1000), dino, k))
        for n in DINO_NOISE
    ]
    dropped = dino_draw(num_samples, 0.15, 1000, drop=DROPPED_DINO_MODES)
    table.append(
        ("dino", f"noise 0.15, {DROPPED_DINO_MODES} modes dropped", measure(dropped, dino, k))
    )
    for blur in MOONS_BLUR:
        table.append(
            ("moons", f"blur {blur:.2f}", measure(moons_draw(num_samples, blur, 1000), moons, k))
        )
    one_moon = moons_draw(num_samples, 0.0, 1000, drop_lower=True)
    table.append(("moons", "blur 0.00, lower moon dropped", measure(one_moon, moons, k)))
    return table


def markdown(table: list[tuple[str, str, dict[str, float]]]) -> str:
    lines = ["| dataset | samples | " + " | ".join(COLUMNS) + " |"]
    lines.append("|---" * (len(COLUMNS) + 2) + "|")
    for dataset, label, values in table:
        cells = [
            f"{values[c]:.0f}" if c.startswith("modes") else f"{values[c]:.3f}" for c in COLUMNS
        ]
        lines.append(f"| {dataset} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=data.DEFAULT_N)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.samples} samples against {args.points} training points, k = {args.k}\n")
    print(markdown(rows(args.samples, args.points, args.k)))


if __name__ == "__main__":
    main()
