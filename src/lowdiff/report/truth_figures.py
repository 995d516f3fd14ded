"""The report's ground-truth figure, drawn when cells recorded loss_by_timestep.npz.

Chosen by the files on disk, not by run names: cells trained before the ground truth existed
(or whose dataset has no known law) have no such file and are left out, and with none at all
the figure says it is not available and why.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from lowdiff import plots, results
from lowdiff.report.figures import Context, FigurePlan

FILE = "loss_by_timestep.npz"


def _excess(directory: Path) -> np.ndarray | None:
    arrays = results.read_npz(directory / FILE)
    if "model" not in arrays or "floor" not in arrays:
        return None
    return np.asarray(arrays["model"], dtype=float) - np.asarray(arrays["floor"], dtype=float)


def excess_curves(ctx: Context) -> dict[str, dict[str, dict[int, np.ndarray]]]:
    """run -> dataset -> seed -> the excess loss at every timestep, where recorded."""
    curves: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    for run in ctx.runs:
        for dataset in ctx.loaded.datasets:
            for cell in ctx.loaded.finished(run, dataset):
                if cell.has(FILE) and (excess := _excess(cell.directory)) is not None:
                    curves.setdefault(run, {}).setdefault(dataset, {})[cell.seed] = excess
    return curves


def truth_plans(ctx: Context) -> list[FigurePlan]:
    curves = excess_curves(ctx)
    draw = partial(
        plots.excess_by_timestep, curves, baseline=ctx.loaded.baseline, colors=ctx.colors
    )
    return [
        FigurePlan(
            "excess_loss_by_timestep",
            "Excess loss over the Bayes floor by timestep",
            "Top: each run's ε-MSE minus the Bayes-optimal ε-MSE of the true law at every "
            "timestep t, on the same fresh true draws (seed mean; band ± 1.96 standard errors "
            "over seeds). Bottom: the paired difference run − baseline over the shared seeds. "
            "How to read: the floor is the loss no denoiser can beat, so the top row is all "
            "that training can still remove; a bottom-row curve below 0 marks the noise levels "
            "(small t: local detail, large t: global structure) where that run denoises better "
            "than the baseline.",
            draw if curves else None,
            skipped="not available (no cell recorded loss_by_timestep.npz: cells trained "
            "before the ground truth existed, or eval.ground_truth = false; "
            "`lowdiff remeasure --ground-truth` adds it to cells that kept their EMA weights)",
        )
    ]
