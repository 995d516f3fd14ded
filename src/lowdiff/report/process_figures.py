"""Pictures of the reverse process, from each cell's process.npz (C3: timesteps (P,), points
(P, n, 2)); a cell without one is skipped quietly.

`process_plans`: one figure per dataset, reverse_process_<dataset>, rows = runs (identical runs
once), columns = the recorded timesteps from noise to samples, from the first seed that has a
process. `animation_blocks` (only with `ReportOptions.animate`): one GIF per run of the reverse
process on the first series dataset, first seed, written with matplotlib's PillowWriter.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from lowdiff import plots
from lowdiff.report.document import Block, Heading, Image
from lowdiff.report.figures import FIRST_SEED_NOTE, Context, FigurePlan
from lowdiff.report.options import series_datasets

PROCESS_DPI = 150  # small panels: at less, their labels are a few pixels high


def first_process(ctx: Context, run: str, dataset: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(timesteps, points) of the first finished seed of (run, dataset) with a process.npz."""
    for cell in ctx.loaded.finished(run, dataset):
        if cell.process is not None:
            return cell.process["timesteps"], cell.process["points"]
    return None


def process_plans(ctx: Context) -> list[FigurePlan]:
    """reverse_process_<dataset> for each dataset with a recorded process (others: none)."""
    plans = []
    for dataset in ctx.loaded.datasets:
        processes = {
            run: process for run in ctx.runs if (process := first_process(ctx, run, dataset))
        }
        if not processes:
            continue
        draw = partial(
            plots.process_grid, processes, title=f"{dataset}: reverse process", colors=ctx.colors
        )
        plans.append(
            FigurePlan(
                f"reverse_process_{dataset}",
                f"Reverse process on {dataset}",
                f"Samples of each run (rows) at the recorded timesteps of sampling (columns, "
                f"from the initial noise to the final samples), from {FIRST_SEED_NOTE}.",
                draw,
                dpi=PROCESS_DPI,
            )
        )
    return plans


def animation_blocks(ctx: Context) -> list[Block]:
    """One GIF per run of its reverse process on the first series dataset (first seed)."""
    datasets = series_datasets(ctx.loaded, ctx.options)
    if not datasets:
        return []
    dataset, blocks = datasets[0], []
    for run in ctx.runs:
        process = first_process(ctx, run, dataset)
        if process is None:
            continue
        name = f"figures/reverse_process_{run}_{dataset}.gif"
        plots.save_process_animation(
            process, ctx.loaded.root / name, title=run, color=ctx.colors[run]
        )
        title = f"Reverse process of {run} on {dataset} (animation)"
        blocks += [Heading(3, title), Image(name, title, "One frame per recorded timestep.")]
    return blocks
