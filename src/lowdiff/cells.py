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
        cell.json       metrics + config and training hashes + eval settings + file sizes and
                        SHA-256, written LAST

A cell's record (cell.json) has a status: "finished" (metrics and arrays) or "diverged" (no
arrays, no metrics, `diverged_at_step`); a record without "status" is a finished one written
before statuses existed. A record counts for a cell only if it is complete (`results.read_cell`),
carries the cell's current hash (else it is *stale*) and names this cell's run, dataset and seed
(else it is *foreign*). Files are written with the atomic primitives of `lowdiff.results`.

A cell's *training key* (`training_hash`) is its key without the eval settings: a stale cell
whose record has the planned cell's training key and intact saved weights (`reusable`) is
evaluated again from them instead of trained (docs/reliability.md §2).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lowdiff import results
from lowdiff.config import SECTIONS, ExperimentConfig, RunConfig, changes, to_dict
from lowdiff.settings import EvalConfig

__all__ = [
    "DIVERGED",
    "FINISHED",
    "HASH_VERSION",
    "Cell",
    "Saved",
    "batch_of",
    "Found",
    "cell_dir",
    "cell_hash",
    "copy",
    "is_done",
    "plan",
    "read",
    "reusable",
    "training_hash",
    "write_configs",
    "write_diverged",
    "write_finished",
]

HASH_VERSION = 2  # bump when the protocol's defaults or the cell contents change meaning

# Fields that change how a result is computed but not the result itself.
# measurement-only settings: the ground truth is measured after training and sampling
GROUND_TRUTH_SETTINGS = {"ground_truth", "ground_truth_points", "ode_points", "ode_tolerance"}
NOT_IN_HASH = {
    "eval": {"chunk_size", *GROUND_TRUTH_SETTINGS},
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
    training_hash: str = ""  # key of its trained weights (the cell key without eval settings)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.run, self.dataset, self.seed)

    @property
    def root(self) -> Path:
        """The results folder the cell belongs to (<root>/<run>/<dataset>/seed_<s>)."""
        return self.directory.parents[2]

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


def _key(
    config: ExperimentConfig, run: RunConfig, dataset: str, seed: int, sections: Collection[str]
) -> str:
    key = {
        "key": HASH_VERSION,
        **{section: _settings_key(section, getattr(run, section)) for section in sections},
        "dataset": dataset,
        "seed": seed,
        "num_points": config.experiment.num_points,
    }
    point_file = (config.experiment.data_files or {}).get(dataset)
    if point_file is not None:  # a researcher's point file: its content is part of the key
        key["data_sha256"] = point_file["sha256"]
    return results.config_hash(key)


def cell_hash(config: ExperimentConfig, run: RunConfig, dataset: str, seed: int) -> str:
    """Key of a cell's result: what it was trained and sampled with, nothing cosmetic."""
    return _key(config, run, dataset, seed, SECTIONS)


def training_hash(config: ExperimentConfig, run: RunConfig, dataset: str, seed: int) -> str:
    """Key of a cell's trained weights: the cell key without the evaluation settings (no eval
    setting enters training), so cells that differ only in how they are evaluated share it."""
    return _key(config, run, dataset, seed, [section for section in SECTIONS if section != "eval"])


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
            training_hash(config, run, dataset, seed),
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
    results.write_json(root / EXPERIMENT_FILE, record, root=root)
    for run in config.runs:
        results.write_json(
            root / run.name / RUN_CONFIG_FILE,
            {**to_dict(run), "experiment": to_dict(config.experiment)},
            root=root,
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


def _identity(record: Any, cell: Cell) -> str | None:
    """Why a record is not this cell's own (stale or foreign), None if it is."""
    if not isinstance(record, Mapping):
        return None
    if record.get("config_hash") != cell.config_hash:
        return STALE
    where = (record.get("run"), record.get("dataset"), record.get("seed"))
    if where != cell.key:
        return f"foreign: its cell.json is of {where[0]} / {where[1]} / seed {where[2]}"
    return None


def _problem(record: Mapping[str, Any], cell: Cell) -> str | None:
    """Why a complete record does not count for `cell` (None: it counts)."""
    identity = _identity(record, cell)
    if identity:
        return identity
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
        if not number or not math.isfinite(value) or abs(value) > results.MAX_MAGNITUDE:
            return f"invalid: metric {name} = {value!r} in cell.json (expected a finite number)"
    return None


def read(cell: Cell) -> Found:
    """The cell's record if it is complete, current (hash) and this cell's; else the reason."""
    record, why = results.cell_problem(cell.directory, root=cell.root)
    if record is None:
        if (cell.directory / "cell.json").is_dir():
            return Found(cell, None, "invalid: cell.json is a directory, not a file")
        if not (cell.directory / "cell.json").exists():
            return Found(cell, None, NOT_FINISHED)
        return Found(cell, None, _identity(_record_of(cell), cell) or f"invalid: {why}")
    problem = _problem(record, cell)
    return Found(cell, None, problem) if problem else Found(cell, record)


def _record_of(cell: Cell) -> Any:
    """The cell.json of an unfinished cell, as far as it parses (None where it does not)."""
    try:
        return results.read_json(results.confined(cell.directory, "cell.json"))
    except results.ResultsError:
        return None


def batch_of(record: Mapping[str, Any], phase: str) -> Mapping[str, Any]:
    """The record of the batch in which a cell's `phase` ("training_time" or
    "inference_time") was measured: a cell evaluated again from its saved weights was sampled
    in another batch ("evaluation_batch") than the one it was trained in ("batch")."""
    again = record.get("evaluation_batch")
    if phase != "training_time" and isinstance(again, Mapping):
        return again
    batch = record.get("batch")
    return batch if isinstance(batch, Mapping) else {}


def is_done(cell: Cell) -> bool:
    """Finished or diverged under the cell's current config: nothing to (re)do."""
    return read(cell).record is not None


# --- writing ------------------------------------------------------------------------------


def _record(cell: Cell, status: Status) -> dict[str, Any]:
    return {
        "config_hash": cell.config_hash,
        **({"training_hash": cell.training_hash} if cell.training_hash else {}),
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
    *,
    evaluation: EvalConfig | None = None,
    extra: Mapping[str, Any] | None = None,
    kept: Mapping[str, tuple[int, str]] | None = None,
) -> None:
    """A finished cell: its arrays (None = absent), then cell.json with metrics (last).

    `evaluation`: the eval settings it was measured under (recorded, so that a later run with
    other eval settings knows what changed); `extra`: more fields of the record; `kept`: files
    of the cell left as they are (`results.write_cell`)."""
    record = _record(cell, FINISHED) | {"metrics": dict(metrics), "batch": dict(batch)}
    if evaluation is not None:
        record["eval_settings"] = to_dict(evaluation)
    record |= dict(extra or {})
    results.write_cell(cell.directory, dict(arrays), record, root=cell.root, kept=kept)


def write_diverged(cell: Cell, step: int, batch: Mapping[str, Any]) -> None:
    """A diverged cell: no arrays, no metrics, the step training (or sampling) diverged at."""
    record = _record(cell, DIVERGED) | {
        "diverged_at_step": int(step),
        "metrics": {},
        "batch": dict(batch),
    }
    results.write_cell(cell.directory, {}, record, root=cell.root)


def copy(source: Cell, target: Cell) -> None:
    """Copy a done cell to a cell of the same config in another run (cell.json last)."""
    results.copy_cell(source.directory, target.directory, {"run": target.run}, target.root)


# --- evaluating again from saved weights --------------------------------------------------

SAVED = ("losses.npy", "model_ema.npz")  # what a cell evaluated again keeps of its training
KEPT_METRICS = ("training_time", "eval_loss")  # measured in training, with the online weights


@dataclass(frozen=True)
class Saved:
    """A finished record of a cell's very training whose saved EMA weights can be evaluated
    again under other eval settings."""

    record: Mapping[str, Any]

    @property
    def kept(self) -> dict[str, tuple[int, str]]:
        """The files the cell keeps, with their recorded (size, SHA-256)."""
        return {name: (self.record["files"][name], self.record["sha256"][name]) for name in SAVED}

    def changes(self, run: RunConfig) -> list[str]:
        """'eval.key: old -> new' for each eval setting that differs from the record's."""
        return changes(self.record.get("eval_settings") or {}, to_dict(run.eval), "eval.")


def reusable(cell: Cell, run: RunConfig, num_points: int) -> tuple[Saved | None, str | None]:
    """The cell folder's finished record of this very training, if its saved weights can be
    evaluated again under `run`'s eval settings: (Saved, None). (None, why): a record of this
    training that cannot be (weights missing, changed or invalid; eval_loss not measurable
    alike). (None, None): no record of this training (none, another training, a diverged cell,
    or a record written before training keys were recorded, which is trained again).

    eval_loss is measured with the online weights, which are not saved: the recorded value is
    kept, which is right only while a fresh measurement would be made alike. No eval setting of
    the key enters it; eval.chunk_size does (t and eps are drawn pass by pass), so its passes
    of min(chunk_size, num_points) points must be unchanged."""
    record, _ = results.cell_record(cell.directory, cell.root)
    if (
        record is None
        or not cell.training_hash
        or record.get("training_hash") != cell.training_hash
        or record.get("status", FINISHED) != FINISHED
        or (record.get("run"), record.get("dataset"), record.get("seed")) != cell.key
    ):
        return None, None
    why = _unusable(cell, record, run, num_points)
    return (None, why) if why else (Saved(record), None)


def _unusable(cell: Cell, record: Mapping[str, Any], run: RunConfig, num_points: int) -> str | None:
    """Why a record of the cell's training cannot be evaluated again (None: it can)."""
    for name in SAVED:
        problem = results.kept_file_problem(cell.directory, dict(record), name)
        if problem:
            return problem
    metrics = record.get("metrics")
    metrics = metrics if isinstance(metrics, Mapping) else {}
    invalid = _invalid_metric({name: metrics.get(name) for name in KEPT_METRICS})
    if invalid:
        return invalid
    settings = record.get("eval_settings")
    before = settings.get("chunk_size") if isinstance(settings, Mapping) else None
    if not isinstance(before, int) or isinstance(before, bool):
        return "its record does not say how its eval_loss was measured (eval.chunk_size)"
    before, now = min(before, num_points), min(run.eval.chunk_size, num_points)
    if before != now:
        return (
            f"its eval_loss was measured in passes of {before} points, now {now} "
            "(eval.chunk_size): measuring it again needs the online weights, which are not saved"
        )
    try:
        results.read_npy(cell.directory / SAVED[0], (run.train.num_steps,))
        results.read_npz(cell.directory / SAVED[1])
    except results.ResultsError as error:
        return str(error)
    return None
