"""Run an experiment: every run x dataset x seed cell, batched, resumable, measured.

Cells of one run (same architecture and options) are trained as one batched engine call (split
into batches of at most `max_models_per_batch`). As soon as a batch is trained, each of its cells
is evaluated and written atomically, keyed by a hash of its resolved config (results.py). Running
the same experiment again skips every finished cell whose hash matches, so an interrupted run
resumes where it stopped and a changed run config redoes only that run's cells.

Every metric also gets an *oracle floor*: its value for fresh draws of the true distribution
measured against the same training points (SPEC §4), so a reader knows what "perfect" scores.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lowdiff import data, results, stats
from lowdiff.config import SECTIONS, ExperimentConfig, RunConfig, check_resources, to_dict
from lowdiff.engine import DivergenceError, Member, Trainer, TrainResult, resolve_device
from lowdiff.evaluation import Samples, eval_loss, field_timesteps, sample, weight_field
from lowdiff.metrics import METRICS, Reference, load_reference, measure
from lowdiff.schedule import NoiseSchedule

log = logging.getLogger(__name__)

HASH_VERSION = 2  # bump when the protocol's defaults or the cell contents change meaning


@dataclass(frozen=True)
class Cell:
    run: RunConfig
    dataset: str
    seed: int
    config_hash: str
    directory: Path


# Fields that change how a result is computed but not the result itself.
NOT_IN_HASH = {"eval": {"chunk_size"}, "train": {"checkpoint_every"}}


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
    return results.config_hash(key)


def plan(config: ExperimentConfig, root: Path) -> list[Cell]:
    """Every cell of the experiment, run by run, dataset by dataset, seed by seed."""
    return [
        Cell(
            run,
            dataset,
            seed,
            cell_hash(config, run, dataset, seed),
            results.cell_dir(root, run.name, dataset, seed),
        )
        for run in config.runs
        for dataset in config.experiment.datasets
        for seed in config.experiment.seeds
    ]


def load_bundles(config: ExperimentConfig) -> dict[str, Reference]:
    return {
        name: load_reference(name, config.experiment.num_points)
        for name in config.experiment.datasets
    }


def oracle_floors(
    config: ExperimentConfig, bundles: dict[str, Reference], root: Path
) -> dict[str, Any]:
    """Metrics of fresh true draws (seeds 1000, 1001, ...) against the training points; cached."""
    sizes = sorted({(run.eval.num_samples, run.eval.knn_k) for run in config.runs})
    num_samples, k = sizes[0]  # the floor is for the common sample size (the first if several)
    key = results.config_hash(
        {
            "n": config.experiment.num_points,
            "m": num_samples,
            "k": k,
            "draws": config.experiment.oracle_draws,
            "format": results.FORMAT,
        }
    )
    path = root / "oracle.json"
    try:
        cached = results.read_json(path)
    except results.ResultsError:
        cached = {}
    floors = cached.get("datasets", {}) if cached.get("key") == key else {}
    for name, bundle in bundles.items():
        if name in floors:
            continue
        draws = [
            measure(data.load(name, num_samples, seed=1000 + draw), bundle, k)
            for draw in range(config.experiment.oracle_draws)
        ]
        floors[name] = {
            metric: {
                "mean": float(np.mean([d[metric] for d in draws])),
                "std": float(np.std([d[metric] for d in draws])),
                "values": [d[metric] for d in draws],
            }
            for metric in draws[0]
        }
        results.write_json(
            path, {"key": key, "num_samples": num_samples, "k": k, "datasets": floors}
        )
    return floors


def _model_arrays(model: torch.nn.Module, index: int) -> dict[str, np.ndarray]:
    return {name: p.detach()[index].cpu().numpy() for name, p in model.named_parameters()}


@dataclass
class BatchOutputs:
    """What the evaluation of one trained batch produced, model axis first."""

    result: TrainResult
    eval_losses: np.ndarray  # (M,)
    samples: Samples
    field: np.ndarray | None  # (M, n_t, G, G, K) weights over the plane
    field_timesteps: list[int]
    device: torch.device


def _weight_arrays(outputs: BatchOutputs, m: int, extent: float) -> dict[str, np.ndarray] | None:
    drawn = outputs.samples
    if drawn.weight_trace is None:
        return None
    weights = {"trace": drawn.weight_trace[m], "final": drawn.final_weights[m]}
    if outputs.field is not None:
        weights["field"] = outputs.field[m]
        weights["field_timesteps"] = np.array(outputs.field_timesteps)
        weights["field_extent"] = np.array(extent)
    return weights


def write_model_cell(outputs: BatchOutputs, m: int, cell: Cell, bundle: Reference) -> None:
    """Measure model m of the batch and write its cell (cell.json last)."""
    result, drawn, num_models = outputs.result, outputs.samples, len(outputs.eval_losses)
    measured = {
        "training_time": result.training_time / num_models,
        "eval_loss": float(outputs.eval_losses[m]),
        "inference_time": drawn.inference_time / num_models,
        **measure(drawn.points[m], bundle, cell.run.eval.knn_k),
        "final_train_loss": float(result.losses[m, -min(100, result.losses.shape[1]) :].mean()),
    }
    batch = {
        "models": num_models,
        "training_time": result.training_time,
        "inference_time": drawn.inference_time,
        "device": str(outputs.device),
    }
    record = {"config_hash": cell.config_hash, "run": cell.run.name, "dataset": cell.dataset}
    record |= {"seed": cell.seed, "metrics": measured, "batch": batch}
    arrays = {
        "losses.npy": result.losses[m],
        "samples.npy": drawn.points[m],
        "weights.npz": _weight_arrays(outputs, m, cell.run.eval.field_extent),
        "model_ema.npz": _model_arrays(result.ema_model, m),
    }
    results.write_cell(cell.directory, arrays, record)


def evaluate_batch(
    result: TrainResult,
    cells: Sequence[Cell],
    bundles: dict[str, Reference],
    schedule: NoiseSchedule,
    device: torch.device,
) -> None:
    """Evaluate a trained batch and write each of its cells; a model whose samples are not
    finite is reported (DivergenceError) after the others are written."""
    config = cells[0].run.eval
    generators = result.generators
    points = torch.stack([torch.from_numpy(bundles[c.dataset].points) for c in cells]).to(device)
    eval_generators = [g["eval"] for g in generators]
    losses = eval_loss(result.model, schedule, points, eval_generators, config.chunk_size)
    sample_generators = [g["sample"] for g in generators]
    drawn = sample(result.ema_model, schedule, config.num_samples, sample_generators, device)
    timesteps = field_timesteps(schedule.num_timesteps, config.field_timesteps)
    field = weight_field(
        result.ema_model, timesteps, config.field_resolution, config.field_extent, device
    )
    outputs = BatchOutputs(result, losses, drawn, field, timesteps, device)
    diverged = [m for m in range(len(cells)) if not np.isfinite(drawn.points[m]).all()]
    for m, cell in enumerate(cells):
        if m not in diverged:
            write_model_cell(outputs, m, cell, bundles[cell.dataset])
    if diverged:
        names = ", ".join(
            f"{c.run.name} {c.dataset}/seed {c.seed}" for c in map(cells.__getitem__, diverged)
        )
        raise DivergenceError(f"sampling produced NaN/inf points for {names}")


def summarize_run(root: Path, config: ExperimentConfig, run: RunConfig) -> dict[str, Any]:
    """final_info.json content from the finished cells on disk: means, spread, per-seed values.

    Only cells whose config hash matches the run's current config count.
    """
    datasets, seeds = config.experiment.datasets, config.experiment.seeds
    info: dict[str, Any] = {}
    for dataset in datasets:
        records = [
            results.read_cell(results.cell_dir(root, run.name, dataset, seed)) for seed in seeds
        ]
        found = {seed: r for seed, r in zip(seeds, records, strict=True) if r is not None}
        if not found:
            continue
        names = list(next(iter(found.values()))["metrics"])
        entry: dict[str, Any] = {
            "means": {},
            "stds": {},
            "ci95": {},
            "per_seed": {},
            "seeds": list(found),
        }
        for metric in names:
            values = [found[seed]["metrics"][metric] for seed in found]
            summary = stats.summarize(values)
            entry["means"][metric] = summary.mean
            entry["stds"][metric] = summary.std
            entry["ci95"][metric] = (
                None if summary.ci_low is None else [summary.ci_low, summary.ci_high]
            )
            entry["per_seed"][metric] = {
                str(seed): v for seed, v in zip(found, values, strict=True)
            }
        info[dataset] = entry
    return info


def write_configs(config: ExperimentConfig, root: Path) -> None:
    results.write_json(root / "experiment.json", to_dict(config))
    for run in config.runs:
        results.write_json(
            root / run.name / "config.json",
            {**to_dict(run), "experiment": to_dict(config.experiment)},
        )


def batches(cells: Sequence[Cell], size: int) -> list[list[Cell]]:
    """Group the missing cells run by run (same shape) into engine calls of at most `size`."""
    grouped: dict[str, list[Cell]] = {}
    for cell in cells:
        grouped.setdefault(cell.run.name, []).append(cell)
    return [group[i : i + size] for group in grouped.values() for i in range(0, len(group), size)]


def _refresh_final_info(config: ExperimentConfig, root: Path, run_names: set[str]) -> None:
    for name in run_names:
        info = summarize_run(root, config, config.run(name))
        results.write_json(root / name / "final_info.json", info)


def _train_batch(
    batch: list[Cell], bundles: dict[str, Reference], device: torch.device, progress: bool
) -> None:
    """Train one engine batch of cells of the same run, then evaluate and write each cell."""
    run = batch[0].run
    schedule = NoiseSchedule(run.schedule, device)
    tensors = {name: torch.from_numpy(bundles[name].points) for name in {c.dataset for c in batch}}
    members = [Member(c.dataset, c.seed) for c in batch]
    label = f"{run.name}: {len(batch)} models" if progress else None
    trainer = Trainer(run.model, members, tensors, schedule, run.train, device)
    result = trainer.run(progress=label)  # diverged models are recorded, batch-mates kept
    try:
        evaluate_batch(result, batch, bundles, schedule, device)
    except DivergenceError as error:
        if not result.diverged:
            raise DivergenceError(f"run {run.name!r}: {error}") from error
        where = ", ".join(f"{members[m].label()} at step {s}" for m, s in result.diverged.items())
        raise DivergenceError(
            f"run {run.name!r}: training diverged (NaN/inf loss) for {where}; "
            "try a lower train.learning_rate or train.grad_clip"
        ) from error


def _copy_finished_twins(cells: Sequence[Cell], missing: list[Cell]) -> list[Cell]:
    """Fill missing cells from finished cells of the same config (another run repeating it);
    returns the cells still missing."""
    finished = {c.config_hash: c for c in cells if c not in missing}
    for cell in missing:
        if cell.config_hash in finished:
            source = finished[cell.config_hash].directory
            results.copy_cell(source, cell.directory, {"run": cell.run.name})
    return [c for c in missing if c.config_hash not in finished]


def execute(
    config: ExperimentConfig, root: Path, *, force: bool = False, progress: bool = True
) -> list[Cell]:
    """Run every missing cell of `config` under `root`; returns the cells it (re)made.

    Cells whose resolved config is identical to another cell's (a run that repeats another
    run's settings, like runs 2-4 of the dual-scale series) are trained once and copied.
    """
    check_resources(config)  # device and memory, before anything is written
    root.mkdir(parents=True, exist_ok=True)
    write_configs(config, root)
    cells = plan(config, root)
    missing = [c for c in cells if force or results.read_cell(c.directory, c.config_hash) is None]
    missing = _copy_finished_twins(cells, missing)
    log.info("%d of %d cells to run", len(missing), len(cells))
    device = resolve_device(config.experiment.device)
    bundles = load_bundles(config)
    oracle_floors(config, bundles, root)
    done = len(cells) - len(missing)
    bar = tqdm(total=len(cells), initial=done, desc="cells", unit="cell", disable=not progress)
    first_of_hash: dict[str, Cell] = {}
    for cell in missing:
        first_of_hash.setdefault(cell.config_hash, cell)
    unique = list(first_of_hash.values())
    for batch in batches(unique, config.experiment.max_models_per_batch):
        _train_batch(batch, bundles, device, progress)
        hashes = {cell.config_hash: cell for cell in batch}
        copies = [c for c in missing if c.config_hash in hashes and c not in batch]
        for cell in copies:
            source = hashes[cell.config_hash].directory
            results.copy_cell(source, cell.directory, {"run": cell.run.name})
        _refresh_final_info(config, root, {c.run.name for c in batch + copies})
        bar.update(len(batch) + len(copies))
    bar.close()
    _refresh_final_info(config, root, {run.name for run in config.runs})
    return missing


__all__ = ["METRICS", "Cell", "cell_hash", "execute", "plan", "summarize_run"]
