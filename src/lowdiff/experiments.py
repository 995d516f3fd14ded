"""Run an experiment: packs of cells -> train -> evaluate -> write.

The cells (`lowdiff.cells.plan`) that are not done are grouped into *packs*: cells of one run
(same architecture and options, hence one batched engine call) of at most
`max_models_per_batch`. `run_pack` is the unit of work, self-contained for a worker process: it
loads its datasets, trains the pack as one computation, evaluates each model and writes each
cell atomically (`lowdiff.cells`). A model that diverges is written as a diverged cell; its
batch-mates are evaluated and kept. `execute` plans the packs, runs them in this process or
through an executor (`executor.map`), copies cells a run repeating another run's config shares
with it, and rewrites every run's final_info.json (`lowdiff.summary`). Running it again skips
every done cell, so an interrupted experiment resumes where it stopped and a changed run redoes
only its own cells; a pack stopped after a training checkpoint keeps its composition (its
finished cells trained again, not rewritten) so that it resumes from that checkpoint. A cell
whose folder holds a finished record of the same training with intact saved weights (only eval
settings changed: `cells.reusable`) is not trained: its pack (`Pack.reevaluate`) loads them and
is evaluated as a trained one.
Oracle floors: `lowdiff.oracle`; measurement: `lowdiff.metrics.measure`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowdiff import cells, compilation, data, oracle, ownership, provenance, results, summary
from lowdiff.cells import Cell, cell_hash, plan
from lowdiff.config import ExperimentConfig, RunConfig, check_resources
from lowdiff.engine import (
    Member,
    Trainer,
    TrainResult,
    repeat_generator,
    resolve_device,
    stream_generators,
)
from lowdiff.evaluation import eval_loss, field_timesteps, weight_field
from lowdiff.executors import Executor
from lowdiff.ground_truth import BatchTruth, measure_batch
from lowdiff.lock import RunLock
from lowdiff.machine import machine
from lowdiff.metrics import Reference, load_reference, measure
from lowdiff.models import Denoiser, build_model, load_weights
from lowdiff.precision import autocast
from lowdiff.progress import bar as tqdm
from lowdiff.progress import phase
from lowdiff.samplers import Samples, sample
from lowdiff.schedule import NoiseSchedule

__all__ = [
    "Executed",
    "Pack",
    "cell_hash",
    "evaluate_batch",
    "execute",
    "load_saved",
    "plan",
    "plan_packs",
    "run_pack",
]

log = logging.getLogger(__name__)

CHECKPOINTS = ".checkpoints"  # <root>/.checkpoints/: training states of the packs in progress


@functools.cache
def reference(name: str, num_points: int) -> Reference:
    """A dataset's training points and k-NN radii, loaded once per process."""
    return load_reference(name, num_points)


def register_point_files(config: ExperimentConfig) -> None:
    """The experiment's point-file datasets, in this process's registry (an executor's worker
    process starts without them)."""
    for name, entry in (config.experiment.data_files or {}).items():
        if name not in data.POINT_FILES:
            data.register_file(name, entry["path"])


# --- planning -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pack:
    """Cells of one run trained as one batched engine call (picklable: a unit of work)."""

    run: str
    cells: tuple[Cell, ...]
    # Cells already written, trained again only so that the pack keeps the composition of its
    # checkpoint (and resumes from it): they are not written again.
    done: tuple[Cell, ...] = ()
    # Evaluated again from the cells' saved EMA weights, not trained (`cells.reusable`).
    reevaluate: bool = False

    @property
    def to_write(self) -> tuple[Cell, ...]:
        return tuple(cell for cell in self.cells if cell not in self.done)

    @property
    def name(self) -> str:
        first = self.cells[0]
        more = f" and {len(self.cells) - 1} more" if len(self.cells) > 1 else ""
        return f"{self.run}: {first.dataset}/seed {first.seed}{more}"


def _work(
    config: ExperimentConfig,
    root: Path,
    force: bool,
    only: Collection[tuple[str, str]] | None = None,
) -> tuple[list[Cell], list[tuple[Cell, Cell]]]:
    """The cells to train and the (source, target) copies between cells of one config.

    Cells with one hash (a run repeating another run's settings) are trained once: the first
    done one, else the first one, is the source of the others that are not done (all, if
    `force`). `only`: just the cells of these (run, dataset) pairs (None: all)."""
    groups: dict[str, list[Cell]] = {}
    for cell in plan(config, root):
        if only is not None and (cell.run, cell.dataset) not in only:
            continue
        groups.setdefault(cell.config_hash, []).append(cell)
    to_train, copies = [], []
    for group in groups.values():
        done = [] if force else [cell for cell in group if cells.is_done(cell)]
        source = done[0] if done else group[0]
        if not done:
            to_train.append(source)
        copies += [(source, c) for c in group if c is not source and c not in done]
    return to_train, copies


def _chunks(config: ExperimentConfig, to_train: Sequence[Cell]) -> list[Pack]:
    size = config.experiment.max_models_per_batch
    grouped: dict[str, list[Cell]] = {}
    for cell in to_train:
        grouped.setdefault(cell.run, []).append(cell)
    return [
        Pack(run, tuple(group[i : i + size]))
        for run, group in grouped.items()
        for i in range(0, len(group), size)
    ]


def _packs(config: ExperimentConfig, to_train: Sequence[Cell], root: Path) -> list[Pack]:
    """Packs of at most max_models_per_batch cells of one run, in plan order.

    A pack of the full plan that has a checkpoint (it was stopped while training, or while its
    cells were written) keeps its composition, finished cells included, so that it resumes from
    that checkpoint; the other cells to train are packed as usual."""
    wanted = set(to_train)
    resumed = [
        Pack(pack.run, pack.cells, tuple(c for c in pack.cells if c not in wanted))
        for pack in _chunks(config, _work(config, root, True, None)[0])
        if wanted.intersection(pack.cells) and checkpoint_path(root, pack).is_file()
    ]
    taken = {cell for pack in resumed for cell in pack.cells}
    return resumed + _chunks(config, [cell for cell in to_train if cell not in taken])


def checkpoint_path(root: Path, pack: Pack) -> Path:
    """Where a pack's training state is saved while it trains (removed once it is written)."""
    key = results.config_hash([cell.config_hash for cell in pack.cells])
    return Path(root) / CHECKPOINTS / f"{pack.run}-{key}.npz"


def compile_scratch(root: Path) -> Path:
    """Where torch.compile's files go (train.compile, eval.compile): <root>/.checkpoints/compile,
    its folders made as real folders below root (no link followed); removed with the
    checkpoints."""
    folder = Path(root) / CHECKPOINTS / "compile"
    for sub in compilation.SCRATCH_VARIABLES.values():
        with results.confined_directory(root, folder / sub):
            pass
    return folder


def plan_packs(config: ExperimentConfig, root: Path, *, force: bool = False) -> list[Pack]:
    """The packs that train every cell not done yet (every cell, if `force`), run by run."""
    return _packs(config, _work(config, root, force, None)[0], Path(root))


# --- one pack: train, evaluate, write -----------------------------------------------------


@dataclass
class BatchOutputs:
    """What the evaluation of one trained batch produced, model axis first."""

    result: TrainResult
    eval_losses: np.ndarray  # (M,)
    samples: Samples
    field: np.ndarray | None  # (M, n_t, G, G, K) weights over the plane
    field_timesteps: list[int]
    device: torch.device
    truth: BatchTruth | None = None  # the ground truth (None: off, or no dataset with a law)
    saved: Sequence[cells.Saved] | None = None  # the records of models evaluated again


def _model_arrays(model: torch.nn.Module, index: int) -> dict[str, np.ndarray]:
    return {name: p.detach()[index].cpu().numpy() for name, p in model.named_parameters()}


def _weight_arrays(outputs: BatchOutputs, m: int, extent: float) -> dict[str, np.ndarray] | None:
    drawn = outputs.samples
    if drawn.weight_trace is None:
        return None
    weights = {"trace": drawn.weight_trace[m], "final": drawn.final_weights[m]}
    if getattr(drawn, "trace_timesteps", None) is not None:
        weights["trace_timesteps"] = np.asarray(drawn.trace_timesteps)
    if outputs.field is not None:
        weights["field"] = outputs.field[m]
        weights["field_timesteps"] = np.array(outputs.field_timesteps)
        weights["field_extent"] = np.array(extent)
    return weights


def _process_arrays(drawn: Samples, m: int) -> dict[str, np.ndarray] | None:
    """process.npz (C3): the reverse process of model m, from the sampler's snapshots."""
    snapshots = getattr(drawn, "snapshots", None)
    if snapshots is None:
        return None
    return {"timesteps": np.asarray(drawn.snapshot_timesteps), "points": snapshots[m]}


# What a cell evaluated again keeps of the record of the batch it was trained in
TRAINING = ("models", "training_time", "device", "machine")


def _batch_record(outputs: BatchOutputs, m: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model m's batch record and the record's other fields: a model evaluated again keeps its
    training batch's record and has its sampling batch's in "evaluation_batch"."""
    batch = {
        "models": len(outputs.eval_losses),
        "training_time": outputs.result.training_time,
        "inference_time": outputs.samples.inference_time,
        "device": str(outputs.device),
        "machine": machine(),  # where the bits came from (not part of the metrics or the key)
    }
    if outputs.saved is None:
        return batch, {}
    trained = outputs.saved[m].record.get("batch") or {}
    return {k: v for k, v in trained.items() if k in TRAINING}, {
        "evaluation_batch": {k: v for k, v in batch.items() if k != "training_time"}
    }


def write_model_cell(
    outputs: BatchOutputs,
    m: int,
    cell: Cell,
    run: RunConfig,
    truth: Reference,
    repeats: Sequence[np.ndarray] = (),
) -> None:
    """Measure model m of the batch and write its finished cell (cell.json last)."""
    result, drawn, num_models = outputs.result, outputs.samples, len(outputs.eval_losses)
    measured = {
        "training_time": result.training_time / num_models,
        "eval_loss": float(outputs.eval_losses[m]),
        "inference_time": drawn.inference_time / num_models,
        **measure(drawn.points[m], truth, run.eval.knn_k),
        "final_train_loss": float(result.losses[m, -min(100, result.losses.shape[1]) :].mean()),
    }
    arrays = {
        "losses.npy": result.losses[m],
        "samples.npy": drawn.points[m],
        "weights.npz": _weight_arrays(outputs, m, run.eval.field_extent),
        "process.npz": _process_arrays(drawn, m),
        "model_ema.npz": _model_arrays(result.ema_model, m),
        "repeats.npz": _repeat_metrics(measured, repeats, m, truth, run.eval.knn_k),
    }
    if outputs.truth is not None:
        measured |= outputs.truth.metrics(m)
        arrays |= outputs.truth.arrays(m)
    kept = None
    if outputs.saved is not None:  # evaluated again: its training's files and numbers kept
        saved = outputs.saved[m]
        measured |= {name: saved.record["metrics"][name] for name in cells.KEPT_METRICS}
        arrays = {name: value for name, value in arrays.items() if name not in cells.SAVED}
        kept = saved.kept
    batch, extra = _batch_record(outputs, m)
    cells.write_finished(cell, arrays, measured, batch, evaluation=run.eval, extra=extra, kept=kept)


def _evaluate(
    result: TrainResult,
    run: RunConfig,
    truths: Sequence[Reference],
    schedule: NoiseSchedule,
    device: torch.device,
    progress: bool = False,
    datasets: Sequence[str] = (),
    saved: Sequence[cells.Saved] | None = None,
    *,
    network: Denoiser,
) -> BatchOutputs:
    """Eval loss on the training points, samples (and weights), the weight field and (for
    `datasets`, one per model, when eval.ground_truth) the ground truth, batched.

    Models evaluated again from their `saved` records keep their recorded eval loss: it is
    measured with the online weights, which are not saved (`cells.reusable`)."""
    config, generators, quiet = run.eval, result.generators, not progress
    if saved is not None:
        losses = np.array([record.record["metrics"]["eval_loss"] for record in saved])
    else:
        points = torch.stack([torch.from_numpy(truth.points) for truth in truths]).to(device)
        eval_generators = [g["eval"] for g in generators]
        with phase(f"{run.name}: eval loss of {len(truths)} models", disable=quiet):
            losses = eval_loss(result.model, schedule, points, eval_generators, config.chunk_size)
    sample_generators = [g["sample"] for g in generators]
    # eval.precision = "bf16": the network in bf16 autocast; the sampler's state stays fp32
    with (
        phase(f"{run.name}: sampling {config.num_samples} points x {len(truths)}", disable=quiet),
        autocast(config.precision, device),
    ):
        drawn = sample(
            network,
            schedule,
            sample_generators,
            device,
            num_samples=config.num_samples,
            sampler=config.sampler,
            sampling_steps=config.sampling_steps,
            eta=config.eta,
            snapshots=config.process_snapshots,
            snapshot_points=config.process_points,
        )
    timesteps = field_timesteps(schedule.num_timesteps, config.field_timesteps)
    with autocast(config.precision, device):
        field = weight_field(
            result.ema_model, timesteps, config.field_resolution, config.field_extent, device
        )
    truth = None
    if config.ground_truth and datasets:
        with phase(f"{run.name}: ground truth of {len(truths)} models", disable=quiet):
            truth = measure_batch(
                result.ema_model,
                datasets,
                schedule.alpha_bar64.numpy(),
                drawn.points,
                config,
                device,
            )
    return BatchOutputs(result, losses, drawn, field, timesteps, device, truth, saved)


def evaluate_batch(
    result: TrainResult,
    run: RunConfig,
    batch: Sequence[Cell],
    truths: Sequence[Reference],
    schedule: NoiseSchedule,
    device: torch.device,
    progress: bool = False,
    *,
    keep: Collection[Cell] = (),
    saved: Sequence[cells.Saved] | None = None,
) -> dict[int, int]:
    """Evaluate a trained batch and write each of its cells but those in `keep` (already
    written); returns {model index: step} of the models diverged (in training, or with samples
    that are not finite). `saved`: the batch's records, when it is evaluated again from them."""
    diverged = {int(m): int(step) for m, step in (getattr(result, "diverged", None) or {}).items()}
    datasets = [cell.dataset for cell in batch]
    # the network that samples: the EMA model, compiled with eval.compile
    network = compilation.compiled(result.ema_model) if run.eval.compile else result.ema_model
    with compilation.scratch(compile_scratch(batch[0].root) if run.eval.compile else None):
        outputs = _evaluate(
            result, run, truths, schedule, device, progress, datasets, saved, network=network
        )
        repeats = sample_repeats(result, run, batch, schedule, device, network=network)
    for m in range(len(batch)):
        if m not in diverged and not np.isfinite(outputs.samples.points[m]).all():
            diverged[m] = run.train.num_steps  # trained, but sampling left the finite numbers
    metrics_bar = tqdm(batch, desc=f"{run.name}: metrics", unit="cell", disable=not progress)
    for m, cell in enumerate(metrics_bar):
        if cell in keep:
            continue
        if m in diverged:
            log.warning("%s diverged at step %d", cell.label(), diverged[m])
            cells.write_diverged(cell, diverged[m], _batch_record(outputs, m)[0])
        else:
            write_model_cell(outputs, m, cell, run, truths[m], repeats)
    return diverged


def sample_repeats(
    result: TrainResult,
    run: RunConfig,
    batch: Sequence[Cell],
    schedule: NoiseSchedule,
    device: torch.device,
    *,
    network: Denoiser,
) -> list[np.ndarray]:
    """eval.sample_repeats > 1: the batch's EMA models sampled again, once per repeat seed
    1..K-1 (`engine.repeat_generator`), each (M, N, 2); [] with one repeat."""
    drawn = []
    for repeat in range(1, run.eval.sample_repeats):
        generators = [repeat_generator(Member(c.dataset, c.seed), repeat, device) for c in batch]
        with autocast(run.eval.precision, device):  # as the cell's own sample
            points = sample(
                network,
                schedule,
                generators,
                device,
                num_samples=run.eval.num_samples,
                sampler=run.eval.sampler,
                sampling_steps=run.eval.sampling_steps,
                eta=run.eval.eta,
            ).points
        drawn.append(points)
    return drawn


def _repeat_metrics(
    own: Mapping[str, float], repeats: Sequence[np.ndarray], m: int, truth: Reference, k: int
) -> dict[str, np.ndarray] | None:
    """repeats.npz of model m: per metric, its value for every repeat (K,), repeat 0 first."""
    if not repeats:
        return None
    measured = [measure(points[m], truth, k) for points in repeats]
    return {
        name: np.array([own[name], *(values[name] for values in measured)])
        for name in measured[0]
        if name in own
    }


def run_pack(
    config: ExperimentConfig,
    root: Path,
    pack: Pack,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> None:
    """Train one pack, evaluate each model and write each cell atomically (a worker entry
    point: it needs nothing but its arguments and the files). Diverged models are written as
    diverged cells (the engine records a model's divergence and trains its batch-mates on).
    A pack to evaluate again (`Pack.reevaluate`) is not trained: its saved EMA weights are
    evaluated as freshly trained ones would be (`load_saved`)."""
    run, num_points = config.run(pack.run), config.experiment.num_points
    register_point_files(config)
    device = resolve_device(str(device or config.experiment.device))
    truths = [reference(c.dataset, num_points) for c in pack.cells]
    schedule = NoiseSchedule(run.schedule, device)
    if pack.reevaluate:
        result, saved = load_saved(run, pack.cells, num_points, device, progress)
        evaluate_batch(result, run, pack.cells, truths, schedule, device, progress, saved=saved)
        return
    tensors = {
        c.dataset: torch.from_numpy(t.points) for c, t in zip(pack.cells, truths, strict=True)
    }
    members = [Member(c.dataset, c.seed) for c in pack.cells]
    label = f"{run.name}: {len(members)} models" if progress else None
    scratch = compile_scratch(root) if run.train.compile else None
    trainer = Trainer(run.model, members, tensors, schedule, run.train, device, scratch)
    checkpoint = checkpoint_path(root, pack)  # a killed pack resumes from its last one
    with results.confined_directory(root, checkpoint.parent):  # a real folder, not a link
        pass
    result = trainer.run(progress=label, checkpoint=checkpoint)  # records divergence per model
    evaluate_batch(result, run, pack.cells, truths, schedule, device, progress, keep=pack.done)
    results.remove(checkpoint, root=root)


# --- a pack evaluated again from its saved weights ----------------------------------------


def _saved(cell: Cell, run: RunConfig, num_points: int) -> cells.Saved:
    """The cell's record of its training with usable saved weights (checked at planning and
    checked again here, where they are read), else a one-line error."""
    saved, why = cells.reusable(cell, run, num_points)
    if saved is None:
        raise results.ResultsError(
            f"{cell.directory}: its saved weights can no longer be evaluated again "
            f"({why or 'no record of this training'}); run again to train it"
        )
    return saved


def load_ema(
    run: RunConfig,
    batch: Sequence[Cell],
    generators: Sequence[dict[str, torch.Generator]],
    device: torch.device,
) -> Denoiser:
    """The saved EMA weights of `batch` (each cell's model_ema.npz, validated) as one batched
    model, built as training builds it: buffers (a plugin's among them) come from each model's
    "init" stream, the parameters from the files."""
    model = build_model(run.model, len(batch), run.schedule.num_timesteps).to(device)
    model.reset_parameters([streams["init"] for streams in generators])
    paths = [cell.directory / "model_ema.npz" for cell in batch]
    load_weights(model, [results.read_npz(path) for path in paths], paths)
    return model.requires_grad_(False)


def load_saved(
    run: RunConfig, batch: Sequence[Cell], num_points: int, device: torch.device, progress: bool
) -> tuple[TrainResult, list[cells.Saved]]:
    """What training left for `batch`, from its cells' files: their saved EMA weights and losses
    with each model's fresh streams (so its samples draw the numbers a freshly trained model's
    draw), and their records (losses, training time and eval_loss are kept: `cells.reusable`)."""
    saved = [_saved(cell, run, num_points) for cell in batch]
    members = [Member(cell.dataset, cell.seed) for cell in batch]
    generators = [stream_generators(member, device) for member in members]
    with phase(f"{run.name}: loading {len(members)} saved models", disable=not progress):
        ema = load_ema(run, batch, generators, device)
        losses = np.stack([results.read_npy(cell.directory / "losses.npy") for cell in batch])
    return TrainResult(members, None, ema, losses, 0.0, generators), saved


def _reusable(config: ExperimentConfig, candidates: Sequence[Cell]) -> list[Cell]:
    """The cells of `candidates` to evaluate again from their saved weights (logged, with the
    eval settings that changed). A record of a cell's training whose weights cannot be used is
    warned about; that cell is trained again."""
    found, changed = [], []
    for cell in candidates:
        run = config.run(cell.run)
        saved, why = cells.reusable(cell, run, config.experiment.num_points)
        if why:
            log.warning(
                "%s: training it again, its saved weights cannot be used (%s)", cell.label(), why
            )
        if saved is not None:
            found.append(cell)
            changed += [line for line in saved.changes(run) if line not in changed]
    if found:
        log.info(
            "re-evaluating %d cells from saved weights (eval settings changed: %s)",
            len(found),
            "; ".join(changed) or "none recorded",
        )
    return found


# --- the whole experiment -----------------------------------------------------------------


@dataclass(frozen=True)
class Executed:
    """What `execute` did: the cells it made (trained or copied; iterating over an `Executed`
    goes over them), those of them that diverged, and the packs that failed (name, error)."""

    made: list[Cell]
    diverged: list[Cell] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[Cell]:
        return iter(self.made)

    def __len__(self) -> int:
        return len(self.made)

    @property
    def ok(self) -> bool:
        return not self.diverged and not self.failed


def _run_locally(
    config: ExperimentConfig, root: Path, packs: Sequence[Pack], progress: bool, total: int
) -> None:
    todo = sum(len(pack.to_write) for pack in packs)
    bar = tqdm(total=total, initial=total - todo, desc="cells", unit="cell", disable=not progress)
    for pack in packs:
        run_pack(config, root, pack, progress=progress)
        summary.write_final_info(config, root, [pack.run])
        bar.update(len(pack.to_write))
    bar.close()


def execute(
    config: ExperimentConfig,
    root: Path,
    *,
    force: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
    only: Collection[tuple[str, str]] | None = None,
) -> Executed:
    """Make every cell of `config` under `root` that is not done (every cell, if `force`);
    with `only`, just the cells of those (run, dataset) pairs (a round of --until-decided).

    Packs run in this process, one after another, when `executor` is None, else through
    `executor.map(run_pack for this experiment, packs, names=...)`. Cells whose config repeats
    another cell's (a run that repeats another run's settings) are trained once and copied.
    """
    root = Path(root)
    compilation.import_dynamo()  # before the memory check's meta model imports it
    check_resources(config)  # device and memory, before anything is written
    check_cluster = getattr(executor, "check", None)  # an executor without one asks nothing
    if check_cluster is not None:
        check_cluster()  # the cluster answers and accepts the settings, before any write
    ownership.claim(config, root, force=force)  # one experiment per results directory
    root.mkdir(parents=True, exist_ok=True)
    with RunLock(root):  # one run per results directory; readers need no lock
        return _execute(config, root, force=force, progress=progress, executor=executor, only=only)


def _execute(
    config: ExperimentConfig,
    root: Path,
    *,
    force: bool,
    progress: bool,
    executor: Executor | None,
    only: Collection[tuple[str, str]] | None = None,
) -> Executed:
    device = str(resolve_device(config.experiment.device))
    cells.write_configs(config, root, provenance.record(device))
    to_train, copies = _work(config, root, force, only)
    again = [] if force else _reusable(config, to_train)
    to_train = [cell for cell in to_train if cell not in again]
    packs = [replace(pack, reevaluate=True) for pack in _chunks(config, again)]
    packs += _packs(config, to_train, root)
    total = len(config.runs) * len(config.experiment.datasets) * len(config.experiment.seeds)
    log.info(
        "%d cells to train, %d to evaluate again, %d to copy, of %d",
        len(to_train),
        len(again),
        len(copies),
        total,
    )
    truths = {
        name: reference(name, config.experiment.num_points) for name in config.experiment.datasets
    }
    with phase("oracle floors", disable=not progress):
        oracle.write_floors(config, truths, root)
    if any(run.eval.ground_truth for run in config.runs):
        with phase("ground truth (true laws)", disable=not progress):
            oracle.write_ground_truth(config, root)
    failed: list[tuple[str, str]] = []
    if executor is None:
        _run_locally(config, root, packs, progress, total - len(copies))
    else:
        # workers log to files: no progress bars there
        task = functools.partial(run_pack, config, root, progress=False)
        outcomes = executor.map(task, packs, names=[pack.name for pack in packs])
        failed = [(o.name, str(o.error)) for o in outcomes if not o.ok]
    for source, target in copies:
        if cells.is_done(source):
            cells.copy(source, target)
    summary.write_final_info(config, root)
    made = [cell for cell in [*again, *to_train] if cells.is_done(cell)]
    made += [target for source, target in copies if cells.is_done(target)]
    diverged = [cell for cell in made if cells.read(cell).status == cells.DIVERGED]
    if not failed:  # states of packs planned otherwise by a resume are of no use any more
        results.remove_tree(root / CHECKPOINTS, root=root)
    return Executed(made, diverged, failed)
