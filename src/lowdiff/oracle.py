"""Oracle floors: each metric's value for fresh draws of the true distribution (torch-free).

A metric measured on a model's samples means little without what a perfect generator scores
(protocol §4): `oracle_draws` fresh draws of `num_samples` points (seeds 1000, 1001, ...) measured
against the same training points with the same k. The floor depends on the sample count and
on k, so oracle.json holds one entry per (num_samples, k) pair that some run uses:

    {"format": "lowdiff-oracle/2",
     "entries": {"num_samples=10000 k=5": {"key": ..., "num_samples": 10000, "k": 5,
                                           "datasets": {dataset: {metric: {"mean", "std",
                                                                           "values"}}}}}}

An entry counts only if its key (training-set size, sample count, k, number of draws, and the
content hash of each point file) matches the experiment's; the single-entry file of earlier
versions is read as its one pair. A point-file dataset (`file:points.csv`) has no exact law: its
floor comes from smoothed-bootstrap draws of the file (`lowdiff.point_files`), and the entry's
"bootstrap" field says so for each such dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lowdiff import data, results
from lowdiff.cells import ORACLE_FILE
from lowdiff.config import ExperimentConfig, RunConfig
from lowdiff.metrics import METRICS, Reference, measure

__all__ = ["FORMAT", "Floors", "pair_of", "read_floors", "write_floors"]

log = logging.getLogger(__name__)

FORMAT = "lowdiff-oracle/2"
FIRST_SEED = 1000  # the oracle draws' seeds: 1000, 1001, ... (never a training seed)

Pair = tuple[int, int]  # (num_samples, k)
Floors = dict[str, dict[str, dict[str, Any]]]  # dataset -> metric -> {"mean", "std", "values"}


# the metrics a floor must hold to count as current (a newer lowdiff may measure more)
SAMPLE_METRICS = frozenset(name for name, info in METRICS.items() if info.from_samples)


def pair_of(run: RunConfig) -> Pair:
    """The (num_samples, k) a run's cells are measured with, hence its floor."""
    return (run.eval.num_samples, run.eval.knn_k)


def _key(config: ExperimentConfig, pair: Pair) -> str:
    num_samples, k = pair
    key = {
        "n": config.experiment.num_points,
        "m": num_samples,
        "k": k,
        "draws": config.experiment.oracle_draws,
        "format": results.FORMAT,
    }
    files = config.experiment.data_files
    if files:  # a point file's floors are stale once its content changes
        key["point_files"] = {name: entry["sha256"] for name, entry in files.items()}
    return results.config_hash(key)


def _sources(config: ExperimentConfig) -> dict[str, str]:
    """How the floor of each point-file dataset was drawn (they have no exact law)."""
    return {
        name: f"smoothed bootstrap of {Path(entry['path']).name} (sha256 {entry['sha256'][:12]}): "
        "rows drawn with replacement plus Gaussian noise of Silverman's bandwidth"
        for name, entry in (config.experiment.data_files or {}).items()
    }


def _name(pair: Pair) -> str:
    return f"num_samples={pair[0]} k={pair[1]}"


def _entries(raw: Any) -> list[Mapping[str, Any]]:
    """The entries of an oracle.json of this or the earlier single-entry format."""
    if not isinstance(raw, dict):
        return []
    if raw.get("format") == FORMAT and isinstance(raw.get("entries"), dict):
        return [entry for entry in raw["entries"].values() if isinstance(entry, dict)]
    return [raw] if "datasets" in raw else []  # the single-entry file of earlier versions


def read_floors(config: ExperimentConfig, root: Path) -> dict[Pair, Floors]:
    """(num_samples, k) -> the floors of oracle.json that are current for `config`."""
    try:
        raw = results.read_json(Path(root) / ORACLE_FILE)
    except results.ResultsError:
        return {}
    floors: dict[Pair, Floors] = {}
    for entry in _entries(raw):
        pair = (entry.get("num_samples"), entry.get("k"))
        if not all(isinstance(v, int) for v in pair) or not isinstance(entry.get("datasets"), dict):
            continue
        if entry.get("key") == _key(config, pair):
            floors[pair] = {
                name: metrics
                for name, metrics in entry["datasets"].items()
                if isinstance(metrics, dict)
            }
    return floors


def _measure_floor(name: str, reference: Reference, pair: Pair, draws: int) -> dict[str, Any]:
    num_samples, k = pair
    measured = [
        measure(data.load(name, num_samples, seed=FIRST_SEED + draw), reference, k)
        for draw in range(draws)
    ]
    return {
        metric: {
            "mean": float(np.mean([m[metric] for m in measured])),
            "std": float(np.std([m[metric] for m in measured])),
            "values": [m[metric] for m in measured],
        }
        for metric in measured[0]
    }


def write_floors(
    config: ExperimentConfig, references: Mapping[str, Reference], root: Path
) -> dict[Pair, Floors]:
    """Measure the floors of every (num_samples, k) a run uses, for every dataset of
    `references`, keeping the current ones already in oracle.json; returns all of them."""
    path = Path(root) / ORACLE_FILE
    floors = read_floors(config, root)
    for pair in sorted({pair_of(run) for run in config.runs}):
        entry = floors.setdefault(pair, {})
        for name, reference in references.items():
            if set(entry.get(name, {})) >= SAMPLE_METRICS:
                continue  # measured with every metric lowdiff has now
            log.info("oracle floor of %s at %s", name, _name(pair))
            entry[name] = _measure_floor(name, reference, pair, config.experiment.oracle_draws)
            _write(config, path, floors)
    return floors


def _write(config: ExperimentConfig, path: Path, floors: Mapping[Pair, Floors]) -> None:
    entries = {
        _name(pair): {"key": _key(config, pair), "num_samples": pair[0], "k": pair[1]}
        | ({"bootstrap": _sources(config)} if _sources(config) else {})
        | {"datasets": datasets}
        for pair, datasets in sorted(floors.items())
    }
    results.write_json(path, {"format": FORMAT, "entries": entries})
