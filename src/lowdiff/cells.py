"""Cells: one run x dataset x seed result on disk, its key, its place and its record (torch-free).

An experiment is the grid runs x datasets x seeds; `plan` enumerates it, here and nowhere else.
Each cell is keyed by `cell_hash`, the difference of its resolved settings from the protocol
defaults (plus dataset, seed and training-set size): changing a run's settings makes its cells
stale, adding a setting whose default is today's behaviour does not. Layout of a results folder:

    <root>/experiment.json                  resolved experiment config
    <root>/oracle.json                      metric floors per (num_samples, k) (lowdiff.oracle)
    <root>/<run>/config.json                resolved run config
    <root>/<run>/final_info.json            per-dataset summary of the run (lowdiff.summary)
    <root>/<run>/<dataset>/seed_<s>/        one cell:
        losses.npy      (steps,) training MSE          samples.npy   (N, 2) samples
        weights.npz     mixing-weight trace / last-step weights / field (mixing models only)
        process.npz     snapshots of the reverse process (eval.process_snapshots of them)
        model_ema.npz   EMA weights (arrays named like the module's parameters; not committed)
        cell.json       metrics + config hash + file sizes, written LAST

A cell's record (cell.json) has a status: "finished" (metrics and arrays) or "diverged" (no
arrays, no metrics, `diverged_at_step`); a record without "status" is a finished one written
before statuses existed. A record counts for a cell only if it is complete (`results.read_cell`),
carries the cell's current hash (else it is *stale*) and names this cell's run, dataset and seed
(else it is *foreign*). Files are written with the atomic primitives of `lowdiff.results`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lowdiff import results
from lowdiff.config import SECTIONS, ExperimentConfig, RunConfig, to_dict

__all__ = [
    "DIVERGED",
    "FINISHED",
    "HASH_VERSION",
    "Cell",
    "Found",
    "cell_dir",
    "cell_hash",
    "copy",
    "is_done",
    "plan",
    "read",
    "write_configs",
    "write_diverged",
    "write_finished",
]

HASH_VERSION = 2  # bump when the protocol's defaults or the cell contents change meaning

# Fields that change how a result is computed but not the result itself.
NOT_IN_HASH = {
    "eval": {"chunk_size"},
    "train": {"checkpoint_every"},
    "model": {"plugin_root"},  # where the plugin file lies; its content hash is in the key
}

Status = Literal["finished", "diverged"]
FINISHED: Status = "finished"
DIVERGED: Status = "diverged"

EXPERIMENT_FILE = "experiment.json"
ORACLE_FILE = "oracle.json"
RUN_CONFIG_FILE = "config.json"
FINAL_INFO_FILE = "final_info.json"

NOT_FINISHED = "not finished (cell.json missing, corrupt, or a file is missing)"
STALE = "stale: written under another configuration of this run"


@dataclass(frozen=True)
class Cell:
    """One run x dataset x seed of an experiment: its key and its directory (picklable)."""

    run: str
    dataset: str
    seed: int
    config_hash: str
    directory: Path

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.run, self.dataset, self.seed)

    def label(self) -> str:
        return f"{self.run} {self.dataset}/seed {self.seed}"


def _settings_key(section: str, value: Any) -> dict[str, Any]:
    """The fields of one config section that differ from the reference protocol's defaults.

    Keying a cell on the difference from the protocol (not on every field) keeps finished
    results valid when a later version adds a setting whose default is today's behaviour; the
    protocol defaults themselves are pinned by the conformance tests.
    """
    skip = NOT_IN_HASH.get(section, set())
    return {
        field.name: to_dict(getattr(value, field.name))
        for field in dataclasses.fields(value)
        if field.name not in skip and getattr(value, field.name) != field.default
    }


def cell_hash(config: ExperimentConfig, run: RunConfig, dataset: str, seed: int) -> str:
    """Key of a cell's result: what it was trained and sampled with, nothing cosmetic."""
    key = {
        "key": HASH_VERSION,
        **{section: _settings_key(section, getattr(run, section)) for section in SECTIONS},
        "dataset": dataset,
        "seed": seed,
        "num_points": config.experiment.num_points,
    }
    point_file = (config.experiment.data_files or {}).get(dataset)
    if point_file is not None:  # a researcher's point file: its content is part of the key
        key["data_sha256"] = point_file["sha256"]
    return results.config_hash(key)


def cell_dir(root: Path, run: str, dataset: str, seed: int) -> Path:
    return Path(root) / run / dataset / f"seed_{seed}"


def plan(config: ExperimentConfig, root: Path) -> list[Cell]:
    """Every cell of the experiment, run by run, dataset by dataset, seed by seed."""
    return [
        Cell(
            run.name,
            dataset,
            seed,
            cell_hash(config, run, dataset, seed),
            cell_dir(root, run.name, dataset, seed),
        )
        for run in config.runs
        for dataset in config.experiment.datasets
        for seed in config.experiment.seeds
    ]


def write_configs(
    config: ExperimentConfig, root: Path, provenance: Mapping[str, Any] | None = None
) -> None:
    """experiment.json (with what wrote it: `provenance.record`) and each run's config.json:
    what the results were asked to be."""
    record = to_dict(config) | ({"provenance": dict(provenance)} if provenance else {})
    results.write_json(root / EXPERIMENT_FILE, record)
    for run in config.runs:
        results.write_json(
            root / run.name / RUN_CONFIG_FILE,
            {**to_dict(run), "experiment": to_dict(config.experiment)},
        )


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """What is on disk for a cell: the record that counts for it, or why there is none."""

    cell: Cell
    record: Mapping[str, Any] | None
    reason: str | None = None

    @property
    def status(self) -> Status | None:
        return None if self.record is None else self.record.get("status", FINISHED)

    @property
    def diverged_at_step(self) -> int | None:
        return None if self.record is None else self.record.get("diverged_at_step")


def _problem(record: Mapping[str, Any], cell: Cell) -> str | None:
    """Why a complete record does not count for `cell` (None: it counts)."""
    if record.get("config_hash") != cell.config_hash:
        return STALE
    where = (record.get("run"), record.get("dataset"), record.get("seed"))
    if where != cell.key:
        return f"foreign: its cell.json is of {where[0]} / {where[1]} / seed {where[2]}"
    status = record.get("status", FINISHED)
    if status not in (FINISHED, DIVERGED):
        return f"unknown status {status!r} (expected {FINISHED!r} or {DIVERGED!r})"
    if not isinstance(record.get("metrics"), dict):
        return NOT_FINISHED
    invalid = _invalid_metric(record["metrics"])
    if invalid:
        return invalid
    if status == DIVERGED and not isinstance(record.get("diverged_at_step"), int):
        return "diverged without a step (diverged_at_step missing)"
    return None


def _invalid_metric(metrics: Mapping[str, Any]) -> str | None:
    """Why a recorded metric is unusable (None: every value is a finite number).

    lowdiff writes metrics as finite JSON numbers only (a diverged cell has none), so a string,
    null, NaN or infinity means the record was damaged: the cell is invalid, never averaged.
    """
    for name, value in metrics.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            return f"invalid: metric {name} = {value!r} in cell.json (expected a finite number)"
    return None


def read(cell: Cell) -> Found:
    """The cell's record if it is complete, current (hash) and this cell's; else the reason."""
    record = results.read_cell(cell.directory)
    if record is None:
        if (cell.directory / "cell.json").is_dir():
            return Found(cell, None, "invalid: cell.json is a directory, not a file")
        return Found(cell, None, NOT_FINISHED)
    problem = _problem(record, cell)
    return Found(cell, None, problem) if problem else Found(cell, record)


def is_done(cell: Cell) -> bool:
    """Finished or diverged under the cell's current config: nothing to (re)do."""
    return read(cell).record is not None


# --- writing ------------------------------------------------------------------------------


def _record(cell: Cell, status: Status) -> dict[str, Any]:
    return {
        "config_hash": cell.config_hash,
        "run": cell.run,
        "dataset": cell.dataset,
        "seed": cell.seed,
        "status": status,
    }


def write_finished(
    cell: Cell,
    arrays: Mapping[str, np.ndarray | dict[str, np.ndarray] | None],
    metrics: Mapping[str, float],
    batch: Mapping[str, Any],
) -> None:
    """A finished cell: its arrays (None = absent), then cell.json with metrics (last)."""
    record = _record(cell, FINISHED) | {"metrics": dict(metrics), "batch": dict(batch)}
    results.write_cell(cell.directory, dict(arrays), record)


def write_diverged(cell: Cell, step: int, batch: Mapping[str, Any]) -> None:
    """A diverged cell: no arrays, no metrics, the step training (or sampling) diverged at."""
    record = _record(cell, DIVERGED) | {
        "diverged_at_step": int(step),
        "metrics": {},
        "batch": dict(batch),
    }
    results.write_cell(cell.directory, {}, record)


def copy(source: Cell, target: Cell) -> None:
    """Copy a done cell to a cell of the same config in another run (cell.json last)."""
    results.copy_cell(source.directory, target.directory, {"run": target.run})
