"""The ground-truth figure: each run's excess loss over the Bayes floor at every timestep.

`excess_by_timestep` -> excess_loss_by_timestep.png: one column per dataset; top row the excess
eps-MSE over the Bayes floor against t (seed mean, band = ± 1.96 standard errors over seeds),
one line per run; bottom row the paired difference run − baseline over the shared seeds (a
line below 0 means the run is closer to the Bayes-optimal denoiser at that noise level).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lowdiff.plots import style
from lowdiff.plots.style import Color

Curves = Mapping[str, Mapping[str, Mapping[int, np.ndarray]]]  # run -> dataset -> seed -> (T,)


def _band(ax: Axes, curves: np.ndarray, color: Color, label: str) -> None:
    """Seed mean of (S, T) curves with ± 1.96 standard errors (no band for one seed)."""
    mean = curves.mean(axis=0)
    steps = np.arange(len(mean))
    ax.plot(steps, mean, color=color, lw=1.5, label=label)
    if len(curves) > 1:
        half = 1.96 * curves.std(axis=0, ddof=1) / np.sqrt(len(curves))
        ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.2, lw=0)


def excess_by_timestep(curves: Curves, *, baseline: str, colors: Mapping[str, Color]) -> Figure:
    datasets = style.datasets_of(curves)
    has_pairs = any(run != baseline for run in curves)  # the bottom row needs a second run
    fig, axes = style.new_figure(2 if has_pairs else 1, len(datasets))
    for column, dataset in enumerate(datasets):
        top, bottom = axes[0, column], axes[-1, column]
        base = curves.get(baseline, {}).get(dataset, {})
        for run, by_dataset in curves.items():
            seeds = by_dataset.get(dataset, {})
            if not seeds:
                continue
            _band(top, np.stack(list(seeds.values())), colors[run], run)
            shared = [seed for seed in seeds if seed in base]
            if run != baseline and shared:
                differences = np.stack([seeds[s] - base[s] for s in shared])
                _band(bottom, differences, colors[run], run)
        top.set_title(dataset)
        top.set_ylabel("excess ε-MSE over the Bayes floor")
        if not has_pairs:
            top.set_xlabel("timestep t (0 = data)")
            continue
        bottom.axhline(0.0, color="0.5", lw=0.8, ls="--")
        bottom.set_ylabel(f"run − {baseline} (paired)")
        bottom.set_xlabel("timestep t (0 = data)")
    style.figure_legend(fig, style.run_handles(list(curves), colors))
    return fig
