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

Beside the entries, `"ground_truth": {"key": ..., "datasets": {dataset: ...}}` holds what the
true laws give (`lowdiff.truth.dataset_truth`): entropy, the Bayes loss floor per timestep and
its mean `eval_loss_floor`, and the oracle values of the ground-truth metrics, which
`read_floors` adds to every entry's floors. Its key is the baseline run's schedule and
`eval.ground_truth_points`; files without the block (earlier versions) are read as before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lowdiff import data, results
from lowdiff.cells import ORACLE_FILE
from lowdiff.config import ExperimentConfig, RunConfig, to_dict
from lowdiff.metrics import METRICS, Reference, measure

__all__ = [
    "FORMAT",
    "Floors",
    "keep_ground_truth",
    "pair_of",
    "read_floors",
    "read_ground_truth",
    "write_floors",
    "write_ground_truth",
]

log = logging.getLogger(__name__)

FORMAT = "lowdiff-oracle/2"
GROUND_TRUTH = "ground_truth"  # oracle.json's block of what the true laws give
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


def _ground_truth_key(config: ExperimentConfig) -> str:
    baseline = config.run(config.experiment.baseline)
    return results.config_hash(
        {
            "schedule": to_dict(baseline.schedule),
            "points": baseline.eval.ground_truth_points,
            "format": "lowdiff-ground-truth/1",
        }
    )


def read_ground_truth(config: ExperimentConfig, root: Path) -> dict[str, dict[str, Any]]:
    """dataset -> its ground truth in oracle.json, if current for `config` (else {})."""
    try:
        raw = results.read_json(Path(root) / ORACLE_FILE)
    except results.ResultsError:
        return {}
    block = raw.get(GROUND_TRUTH) if isinstance(raw, dict) else None
    if not isinstance(block, dict) or block.get("key") != _ground_truth_key(config):
        return {}
    found = block.get("datasets")
    return (
        {k: v for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}
    )


def read_floors(config: ExperimentConfig, root: Path) -> dict[Pair, Floors]:
    """(num_samples, k) -> the floors of oracle.json that are current for `config`, with the
    oracle values of the ground-truth metrics where oracle.json holds them."""
    floors = _read_sample_floors(config, root)
    for name, truth in read_ground_truth(config, root).items():
        values = truth.get("oracle")
        if isinstance(values, dict):
            for entry in floors.values():
                entry.setdefault(name, {}).update(values)
    return floors


def _read_sample_floors(config: ExperimentConfig, root: Path) -> dict[Pair, Floors]:
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
                if _valid_floor(metrics)
            }
    return floors


def _number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= results.MAX_MAGNITUDE
    )


def _valid_floor(metrics: Any) -> bool:
    """A dataset's floors as lowdiff writes them: metric -> {"mean": a finite number, and where
    present "std": a finite number, "values": [finite numbers]}. Anything else (damaged,
    tampered) is dropped, so the floors of that dataset are measured again by the next run and
    absent from the report meanwhile."""
    return isinstance(metrics, dict) and all(
        isinstance(floor, dict)
        and _number(floor.get("mean"))
        and ("std" not in floor or _number(floor["std"]))
        and isinstance(floor.get("values", []), list)
        and all(_number(v) for v in floor.get("values", []))
        for floor in metrics.values()
    )


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
    floors = _read_sample_floors(config, root)
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
    kept = _raw_ground_truth(path)
    results.write_json(
        path,
        {"format": FORMAT, "entries": entries} | ({GROUND_TRUTH: kept} if kept else {}),
        root=path.parent,
    )


def _raw_ground_truth(path: Path) -> dict[str, Any] | None:
    try:
        raw = results.read_json(path)
    except results.ResultsError:
        return None
    block = raw.get(GROUND_TRUTH) if isinstance(raw, dict) else None
    return block if isinstance(block, dict) else None


def keep_ground_truth(source: Path, target: Path) -> None:
    """Copy the ground-truth block of source's oracle.json into target's (floors rewritten)."""
    kept = _raw_ground_truth(Path(source) / ORACLE_FILE)
    path = Path(target) / ORACLE_FILE
    if kept and path.is_file():
        results.write_json(path, results.read_json(path) | {GROUND_TRUTH: kept}, root=target)


def write_ground_truth(config: ExperimentConfig, root: Path) -> dict[str, dict[str, Any]]:
    """Compute the ground truth of every dataset of `config` whose law is known, keeping the
    current ones in oracle.json; returns dataset -> ground truth."""
    from lowdiff import truth
    from lowdiff.schedule import make_betas

    path = Path(root) / ORACLE_FILE
    found = read_ground_truth(config, root)
    baseline = config.run(config.experiment.baseline)
    alpha_bar = np.cumprod(1.0 - make_betas(baseline.schedule).numpy())
    missing = [name for name in config.experiment.datasets if name not in found]
    for name in missing:
        try:
            truth.law_of(name)
        except truth.NoLawError as error:
            log.info("no ground truth: %s", error)
            continue
        log.info("ground truth of %s", name)
        found[name] = truth.dataset_truth(name, alpha_bar, baseline.eval.ground_truth_points)
    if missing:
        try:
            raw = results.read_json(path)
        except results.ResultsError:  # none yet (or unreadable: the floors rewrite it)
            raw = {"format": FORMAT, "entries": {}}
        raw[GROUND_TRUTH] = {"key": _ground_truth_key(config), "datasets": found}
        results.write_json(path, raw, root=Path(root))
    return found
