"""Pictures of the reverse process: samples at chosen timesteps, as a grid and as an animation.

A process is the pair (timesteps (P,), points (P, n, 2)) a cell stores in process.npz: snapshot
i is the state entering the sampling step at timesteps[i] (the first is the initial noise at
t = T-1), and the last snapshot is the final samples, marked by timestep -1. `process_grid` draws
rows = runs and columns = snapshots (noise → data, as tiny-diffusion's figures do);
`save_process_animation` writes the frames of one process as an animated GIF with matplotlib's
`PillowWriter` (Pillow only, no external binary), atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.figure import Figure

from lowdiff import results
from lowdiff.plots import style
from lowdiff.plots.style import Color

Process = tuple[np.ndarray, np.ndarray]  # timesteps (P,), points (P, n, 2)


def step_label(t: int) -> str:
    """'t = 99' for a snapshot entering step t; 'samples' for the final state (t = -1)."""
    return "samples" if int(t) < 0 else f"t = {int(t)}"


def _checked(run: str, process: Process) -> tuple[np.ndarray, np.ndarray]:
    timesteps = np.asarray(process[0]).reshape(-1)  # (P,)
    points = np.asarray(process[1], dtype=float)  # (P, n, 2)
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] != timesteps.size:
        raise ValueError(
            f"{run}: expected timesteps (P,) and points (P, n, 2), got {timesteps.shape} and "
            f"{points.shape}"
        )
    return timesteps, points


def process_grid(
    processes: Mapping[str, Process],
    *,
    title: str,
    max_points: int = 400,
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Samples at each recorded timestep: rows = runs, columns = snapshots, noise → data.

    processes[run] = (timesteps (P,), points (P, n, 2)). The first `max_points` points of each
    snapshot are drawn on one shared square view. Runs recorded at other timesteps than the
    first run say their own timestep in each panel.
    """
    runs = list(processes)
    if not runs:
        raise ValueError("nothing to plot: no process given")
    checked = {run: _checked(run, processes[run]) for run in runs}
    colors = style.colors_for(runs, colors)
    columns = max(t.size for t, _ in checked.values())
    limit = style.scatter_limit(points.reshape(-1, 2) for _, points in checked.values())
    fig, axes = style.new_figure(len(runs), columns, panel_size=style.SMALL_PANEL)
    reference = checked[runs[0]][0]
    for row, run in enumerate(runs):
        timesteps, points = checked[run]
        for col in range(columns):
            ax = axes[row, col]
            if col >= timesteps.size:
                fig.delaxes(ax)
                continue
            style.scatter(ax, points[col], limit=limit, max_points=max_points, color=colors[run])
            ax.set_xticks([])
            ax.set_yticks([])
            same = col < reference.size and reference[col] == timesteps[col]
            if row == 0 or not same:
                ax.set_title(step_label(timesteps[col]), fontsize=8)
        axes[row, 0].set_ylabel(run, fontweight="bold", fontsize=8)
    fig.suptitle(title)
    return fig


def save_process_animation(
    process: Process,
    path: str | os.PathLike[str],
    *,
    title: str,
    max_points: int = 1000,
    color: Color = style.BASELINE_COLOR,
    fps: float = 2.0,
    dpi: int = 60,
) -> Path:
    """An animated GIF of one reverse process (one frame per snapshot), written atomically."""
    timesteps, points = _checked(title, process)
    path = Path(path)
    fig, axes = style.new_figure(1, 1, panel_size=(3.0, 3.0))
    ax = axes[0, 0]
    limit = style.scatter_limit([points.reshape(-1, 2)])
    writer = PillowWriter(fps=fps)
    with tempfile.TemporaryDirectory() as folder:
        temporary = Path(folder) / "animation.gif"
        with writer.saving(fig, str(temporary), dpi):
            for t, frame in zip(timesteps, points, strict=True):
                ax.clear()
                style.scatter(ax, frame, limit=limit, max_points=max_points, color=color)
                ax.set_title(f"{title}: {step_label(t)}", fontsize=9)
                writer.grab_frame()
        results.atomic_write_bytes(path, temporary.read_bytes())
    return path
