"""A results directory written directly, without training: experiment.json, oracle.json and
cells (cell.json, losses, samples, weights, process) through `lowdiff.cells`, as the runner does.

Metrics are given per (run, dataset, seed); arrays are small draws from the datasets, so
figures have something to show. Runs with the same configuration share their cells (as the
runner's copies do).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lowdiff import cells, data, oracle
from lowdiff.architectures import ARCHITECTURES
from lowdiff.config import ExperimentConfig, resolve

Metrics = Callable[[str, str, int], dict[str, float]]
TIMESTEPS = 10
SAMPLES = 400


def default_metrics(run: str, dataset: str, seed: int) -> dict[str, float]:
    rng = np.random.default_rng([zlib.crc32(f"{run}/{dataset}".encode()), seed])
    return {
        "kl_divergence": 0.5 + 0.05 * rng.normal(),
        "eval_loss": 0.3 + 0.01 * rng.normal(),
        "modes_captured": float(
            rng.integers(1, data.get_dataset(dataset).components.num_components + 1)
        ),
        "high_quality_fraction": (0.999, 0.96, 0.99)[seed % 3],  # a CI past 1 with 3 seeds
        "mode_tv_distance": float(np.clip(0.05 + 0.02 * rng.normal(), 0, 1)),
        "training_time": 2.0,
        "inference_time": 0.5,
    }


def _weights(arch: str, rng: np.random.Generator, extent: float) -> dict[str, np.ndarray] | None:
    mixing = ARCHITECTURES[arch].mixing
    if mixing is None:
        return None
    k = len(mixing.names)
    if mixing.kind == "branches":
        w = np.linspace(0.7, 0.3, TIMESTEPS)
        trace = np.stack([w, 1 - w], axis=1)
        final = np.tile(trace[-1], (SAMPLES, 1))
    else:
        trace = np.full((TIMESTEPS, 1), 0.5)
        final = rng.choice([0.05, 0.95], size=(SAMPLES, 1)) + rng.normal(0, 0.02, (SAMPLES, 1))
    return {
        "trace": trace,
        "final": np.clip(final, 0, 1),
        "field": rng.uniform(0, 1, (2, 6, 6, k)),
        "field_timesteps": np.array([TIMESTEPS - 1, 0]),
        "field_extent": np.array(extent),
    }


def _arrays(config: ExperimentConfig, run: str, dataset: str, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    points = data.load(dataset, SAMPLES, seed=1000 + seed)
    noise = rng.normal(size=(SAMPLES, 2)).astype(np.float32) * 2
    mix = np.linspace(1.0, 0.0, 4)[:, None, None]
    process = {
        "timesteps": np.array([TIMESTEPS - 1, 6, 3, -1]),
        "points": (mix * noise + (1 - mix) * points)[:, :200],
    }
    spec = config.run(run)
    return {
        "losses.npy": 1.0 / np.arange(1, 61) + rng.uniform(0, 0.05, 60),
        "samples.npy": points,
        "weights.npz": _weights(spec.model.arch, rng, spec.eval.field_extent),
        "process.npz": process,
    }


def write_fake_results(
    root: Path,
    raw: Mapping[str, Any],
    *,
    metrics: Metrics = default_metrics,
    diverged: Mapping[tuple[str, str, int], int] | None = None,
    oracle_kl: Mapping[str, float] | None = None,
    process: bool = True,
) -> ExperimentConfig:
    """Write the configs, oracle.json (a KL floor per dataset, 0.05 by default) and every cell
    of `raw` as the runner does (`lowdiff.cells`), with made-up metrics and small arrays."""
    config = resolve(dict(raw))
    cells.write_configs(config, root)
    floors = {
        d: {"kl_divergence": {"mean": (oracle_kl or {}).get(d, 0.05)}}
        for d in config.experiment.datasets
    }
    pairs = {oracle.pair_of(run) for run in config.runs}
    oracle._write(config, root / cells.ORACLE_FILE, {pair: floors for pair in pairs})
    models = len(config.experiment.datasets) * len(config.experiment.seeds)
    batch = {"models": models, "training_time": 2.0 * models, "inference_time": 0.5 * models}
    for cell in cells.plan(config, root):
        step = (diverged or {}).get(cell.key)
        if step is not None:
            cells.write_diverged(cell, step, batch | {"device": "cpu"})
            continue
        arrays = _arrays(config, *cell.key)
        if not process:
            del arrays["process.npz"]
        cells.write_finished(cell, arrays, metrics(*cell.key), batch | {"device": "cpu"})
    return config


# A trained experiment small enough for a test: two mlp runs of different widths, 10 steps.
TINY_EXPERIMENT = """
[experiment]
name = "tiny"
datasets = ["moons", "line"]
seeds = [0, 1]
num_points = 1000
oracle_draws = 1
round_seeds = 2
[train]
num_steps = 10
batch_size = 32
[eval]
num_samples = 150
ground_truth = false
[model]
hidden_dim = 16
embedding_dim = 8
[runs.baseline]
model = { arch = "mlp" }
"""
TINY_SECOND_RUN = '[runs.wide]\nmodel = { arch = "mlp", hidden_dim = 24 }\n'
