"""Measure finished cells again from their saved samples: a metric change costs minutes.

`remeasure(root)` re-runs today's `metrics.measure` on every finished cell's samples.npy and
rewrites its cell.json (atomically; the rest of the record, including times and losses, kept),
then the oracle floors, every run's final_info.json and the report. No training, no sampling.
Cells without samples (diverged, or written without them) are listed as skipped.

With `ground_truth=True` it also measures the ground truth (`lowdiff.ground_truth`: excess
loss by timestep, ODE likelihood, sample log-density) of every finished cell that kept its EMA
weights (model_ema.npz), so cells trained before those metrics existed get them without
re-training; cells without weights are listed as skipped for it.
"""

from __future__ import annotations

import sys
import tempfile
import types
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowdiff import results
from lowdiff.progress import bar

__all__ = ["Remeasured", "remeasure"]


@dataclass
class Remeasured:
    """What `remeasure` did: cells measured again, and cells skipped with the reason."""

    measured: list[str]
    skipped: list[str]


def _lock(root: Path) -> AbstractContextManager[Any]:
    """The results directory's run lock, where this installation has one."""
    try:
        from lowdiff.lock import RunLock
    except ImportError:
        return nullcontext()
    return RunLock(root)


def _ground_truth(cell: Any, samples: Any) -> tuple[dict[str, float], dict[str, Any], str | None]:
    """The ground-truth metrics of one cell from its EMA weights and the arrays to save beside
    them (file name -> arrays), or why not."""
    import torch

    from lowdiff import api, truth
    from lowdiff.ground_truth import measure_batch

    if not (cell.directory / "model_ema.npz").is_file():
        return {}, {}, "no model_ema.npz, no ground truth"
    model = api.load(cell.directory)
    try:
        truth.law_of(cell.dataset)
    except truth.NoLawError as error:
        return {}, {}, str(error)
    measured = measure_batch(
        model.network,
        [cell.dataset],
        model.schedule.alpha_bar64.numpy(),
        samples[None],
        model.run.eval,
        torch.device("cpu"),
    )
    return measured.metrics(0), measured.arrays(0), None


def _remeasure_cells(
    loaded: Any, references: dict[str, Any], progress: bool, ground_truth: bool = False
) -> Remeasured:
    from lowdiff import metrics

    done = Remeasured(
        [], [f"{m.run} {m.dataset}/seed {m.seed}: {m.reason}" for m in loaded.missing]
    )
    cells = list(loaded.cells.values())
    for cell in bar(cells, desc="remeasure", unit="cell", disable=not progress):
        label = f"{cell.run} {cell.dataset}/seed {cell.seed}"
        if cell.record.get("status", "finished") != "finished":
            done.skipped.append(f"{label}: {cell.record['status']}, no samples to measure")
            continue
        if not cell.has("samples.npy"):
            done.skipped.append(f"{label}: no samples.npy")
            continue
        try:
            samples = results.read_npy(cell.directory / "samples.npy", (None, 2))
        except results.ResultsError as error:
            done.skipped.append(f"{label}: invalid ({error})")
            continue
        k = loaded.config.run(cell.run).eval.knn_k
        measured = metrics.measure(samples, references[cell.dataset], k)
        record = dict(cell.record)
        if ground_truth:
            found, arrays, why = _ground_truth(cell, samples)
            measured |= found
            files, digests = dict(record.get("files", {})), dict(record.get("sha256", {}))
            for name, content in arrays.items():
                path = results.confined(cell.directory, name)
                files[name] = results.write_npz(path, content, root=loaded.root)
                digests[name] = results.file_digest(path)
            record |= {"files": files, "sha256": digests}
            if why:
                done.skipped.append(f"{label}: {why}")
        record["metrics"] = {**cell.record["metrics"], **measured}
        results.write_json(cell.directory / "cell.json", record, root=loaded.root)
        done.measured.append(label)
    return done


def remeasure(
    root: str | Path, *, progress: bool = False, report: bool = True, ground_truth: bool = False
) -> Remeasured:
    """Measure every finished cell again from its samples.npy with today's `metrics.measure`.

    Rewrites each cell.json (atomically, the rest of the record kept; metrics that `measure`
    does not return, such as times and losses, are kept as they were), the oracle floors and
    every run's final_info.json, then the report. No training, no sampling.
    """
    from lowdiff import metrics, oracle, summary
    from lowdiff.report.load import load_results

    root = Path(root)
    summary.read_config(root)  # a results directory: refused before the lock creates anything
    with _lock(root):
        loaded = load_results(root)
        config = loaded.config
        references = {
            name: metrics.load_reference(name, config.experiment.num_points)
            for name in config.experiment.datasets
        }
        done = _remeasure_cells(loaded, references, progress, ground_truth)
        with tempfile.TemporaryDirectory(dir=root) as scratch:  # recomputed, then swapped in
            oracle.write_floors(config, references, Path(scratch))
            oracle.keep_ground_truth(root, Path(scratch))
            wanted = config.run(config.experiment.baseline).eval.ground_truth
            if ground_truth or wanted:  # a lost or damaged ground-truth block is computed again
                oracle.write_ground_truth(config, Path(scratch))
            results.atomic_write_bytes(
                root / "oracle.json", (Path(scratch) / "oracle.json").read_bytes(), root=root
            )
        summary.write_final_info(config, root)
    if report:
        from lowdiff.report import write_report

        write_report(root)
    return done


class _CallableModule(types.ModuleType):
    """This module, callable as its function: `import lowdiff.remeasure` binds the name
    `lowdiff.remeasure` to the module (the import system sets it on the package), which
    would otherwise hide the API function `lowdiff.remeasure(root)` of the same name."""

    def __call__(self, root: str | Path, **options: Any) -> Remeasured:
        return remeasure(root, **options)


sys.modules[__name__].__class__ = _CallableModule
