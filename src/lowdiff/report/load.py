"""Reading a results directory into `ExperimentResults`; no statistics, no writing.

`load_results(root)` resolves experiment.json back into the `ExperimentConfig` it was written
from, reads the oracle floors of oracle.json, and reads every cell's record (cell.json) through
the safe readers of `results`; a `CellResult` reads its arrays (losses, samples, weights) only
when asked. A cell that is unfinished, unreadable or stale (its config hash does not match
experiment.json) becomes a `MissingCell` that says why, and is never guessed. `weighted` picks
the cells that recorded a weight trace of a given width (2: dual-scale branches, 1: a gate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lowdiff import results
from lowdiff.config import ConfigError, ExperimentConfig, resolve
from lowdiff.experiments import cell_hash


@dataclass(frozen=True)
class MissingCell:
    run: str
    dataset: str
    seed: int
    reason: str


@dataclass(frozen=True)
class CellResult:
    """One finished cell: its record (cell.json) and lazily read arrays."""

    run: str
    dataset: str
    seed: int
    directory: Path
    record: Mapping[str, Any]

    @property
    def metrics(self) -> Mapping[str, float]:
        return self.record["metrics"]

    def has(self, name: str) -> bool:
        return name in self.record.get("files", {})

    @cached_property
    def losses(self) -> np.ndarray | None:  # (steps,)
        return results.read_npy(self.directory / "losses.npy") if self.has("losses.npy") else None

    @cached_property
    def samples(self) -> np.ndarray | None:  # (N, 2)
        path = self.directory / "samples.npy"
        return results.read_npy(path) if self.has("samples.npy") else None

    @cached_property
    def weights(self) -> dict[str, np.ndarray] | None:
        """weights.npz: trace (T, K), final (N, K), field (n_t, G, G, K), ...; None if absent."""
        path = self.directory / "weights.npz"
        return results.read_npz(path) if self.has("weights.npz") else None

    @property
    def num_weights(self) -> int | None:
        """K of the recorded weight trace (2: dual-scale branches, 1: gate), None if none."""
        weights = self.weights
        if weights is None or "trace" not in weights:
            return None
        return int(weights["trace"].shape[-1])


def weighted(cells: list[CellResult], num_weights: int) -> list[CellResult]:
    """The cells whose weight trace has K = `num_weights` (2: branch weights, 1: gate)."""
    return [cell for cell in cells if cell.num_weights == num_weights]


@dataclass(frozen=True)
class ExperimentResults:
    """Everything the report uses: the resolved config, the oracle floors and finished cells."""

    root: Path
    config: ExperimentConfig
    oracle: Mapping[str, Mapping[str, Mapping[str, Any]]]  # dataset -> metric -> {"mean", ...}
    oracle_num_samples: int | None
    cells: Mapping[tuple[str, str, int], CellResult]
    missing: Sequence[MissingCell]

    @property
    def run_names(self) -> list[str]:
        return [run.name for run in self.config.runs]

    @property
    def baseline(self) -> str:
        return self.config.experiment.baseline

    @property
    def datasets(self) -> list[str]:
        return list(self.config.experiment.datasets)

    @property
    def seeds(self) -> list[int]:
        return list(self.config.experiment.seeds)

    def finished(self, run: str, dataset: str) -> list[CellResult]:
        """The finished cells of (run, dataset), in seed order."""
        keys = ((run, dataset, seed) for seed in self.seeds)
        return [self.cells[key] for key in keys if key in self.cells]

    def values(self, metric: str, run: str, dataset: str) -> dict[int, float]:
        """seed -> value of `metric` over the finished cells that recorded it."""
        return {
            cell.seed: float(cell.metrics[metric])
            for cell in self.finished(run, dataset)
            if metric in cell.metrics
        }

    def oracle_mean(self, dataset: str, metric: str) -> float | None:
        entry = self.oracle.get(dataset, {}).get(metric)
        return None if entry is None else float(entry["mean"])

    def runs_with_weights(self, num_weights: int) -> list[str]:
        """Runs with at least one cell whose weight trace has K = `num_weights`."""
        return [
            run
            for run in self.run_names
            if any(
                cell.num_weights == num_weights
                for dataset in self.datasets
                for cell in self.finished(run, dataset)
            )
        ]


def _load_config(root: Path) -> ExperimentConfig:
    """experiment.json -> ExperimentConfig, or a ResultsError saying why it is not ours."""
    if not root.is_dir():
        raise results.ResultsError(f"{root}: not a directory; expected a lowdiff results directory")
    path = root / "experiment.json"
    if not path.is_file():
        raise results.ResultsError(
            f"{root}: not a lowdiff results directory (no experiment.json); pass the directory "
            "that `lowdiff run EXPERIMENT.toml` wrote"
        )
    raw = results.read_json(path)
    if not (
        isinstance(raw, dict)
        and isinstance(raw.get("experiment"), dict)
        and isinstance(raw.get("runs"), list)
        and all(isinstance(run, dict) and "name" in run for run in raw["runs"])
    ):
        raise results.ResultsError(
            f"{path}: not a lowdiff experiment record (expected {{'experiment': {{...}}, "
            "'runs': [{'name': ..., ...}, ...]}})"
        )
    runs = {run["name"]: {k: v for k, v in run.items() if k != "name"} for run in raw["runs"]}
    try:
        return resolve({"experiment": raw["experiment"], "runs": runs}, str(path))
    except ConfigError as error:
        raise results.ResultsError(f"{path}: not a valid lowdiff experiment: {error}") from error


def _load_oracle(root: Path) -> tuple[dict[str, Any], int | None]:
    """oracle.json's floors per dataset (empty when the file is missing or unreadable)."""
    try:
        raw = results.read_json(root / "oracle.json")
    except results.ResultsError:
        return {}, None
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), dict):
        return {}, None
    return raw["datasets"], raw.get("num_samples")


def _load_cells(
    root: Path, config: ExperimentConfig
) -> tuple[dict[tuple[str, str, int], CellResult], list[MissingCell]]:
    cells, missing = {}, []
    for run in config.runs:
        for dataset in config.experiment.datasets:
            for seed in config.experiment.seeds:
                directory = results.cell_dir(root, run.name, dataset, seed)
                record = results.read_cell(directory)
                if record is None or not isinstance(record.get("metrics"), dict):
                    reason = "not finished (cell.json missing, corrupt, or a file is missing)"
                    missing.append(MissingCell(run.name, dataset, seed, reason))
                elif record.get("config_hash") != cell_hash(config, run, dataset, seed):
                    reason = "stale: written under another configuration of this run"
                    missing.append(MissingCell(run.name, dataset, seed, reason))
                else:
                    cells[(run.name, dataset, seed)] = CellResult(
                        run.name, dataset, seed, directory, record
                    )
    return cells, missing


def load_results(root: Path) -> ExperimentResults:
    """Read a results directory; `results.ResultsError` if it is not a lowdiff one."""
    root = Path(root)
    config = _load_config(root)
    oracle, oracle_num_samples = _load_oracle(root)
    cells, missing = _load_cells(root, config)
    return ExperimentResults(root, config, oracle, oracle_num_samples, cells, missing)
