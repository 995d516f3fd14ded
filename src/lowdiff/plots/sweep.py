"""Response curves of a sweep: each metric against the swept value, one panel per dataset.

A sweep (`[sweep]` / `--sweep`) makes one run per value of a setting; this figure puts those
runs back on an axis. Rows are metrics, columns datasets; each line is one swept run family
(the run as written, and the values of any other swept key), its points the seed means with
their 95% CI as error bars; the oracle floor is a dashed line. The swept values are placed at
equal spacing in the sweep's order (the values people sweep, 0, 0.01, 0.02, 0.05, 0.1, 0.2, are
neither linear nor logarithmic) and labelled with their values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lowdiff.plots import style
from lowdiff.plots.style import Color


@dataclass(frozen=True)
class Point:
    """One run's seed mean on one dataset, and its interval (None with one seed)."""

    mean: float
    low: float | None = None
    high: float | None = None


# [metric label][dataset][line label] -> one Point (or None: not finished) per swept value
Curves = Mapping[str, Mapping[str, Mapping[str, Sequence[Point | None]]]]


def _draw_line(
    ax: Axes, x: np.ndarray, points: Sequence[Point | None], color: Color, label: str
) -> None:
    shown = [(xi, p) for xi, p in zip(x, points, strict=True) if p is not None]
    if not shown:
        return
    xs = np.array([xi for xi, _ in shown])
    means = np.array([p.mean for _, p in shown])
    low = np.array([p.mean - p.low if p.low is not None else 0.0 for _, p in shown])
    high = np.array([p.high - p.mean if p.high is not None else 0.0 for _, p in shown])
    ax.errorbar(
        xs, means, yerr=np.vstack([low, high]), color=color, marker="o", ms=4, lw=1.5,
        capsize=3, label=label,
    )  # fmt: skip


def response_curves(
    curves: Curves,
    *,
    values: Sequence[str],
    xlabel: str,
    oracle: Mapping[str, Mapping[str, float]] | None = None,
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Rows = metrics, columns = datasets; x = the swept `values` (labels, in order);
    oracle[metric label][dataset] is drawn dashed where given."""
    metrics = list(curves)
    datasets = style.datasets_of(curves)
    lines = list(
        dict.fromkeys(line for by_d in curves.values() for d in by_d.values() for line in d)
    )
    colors = style.colors_for(lines, colors)
    fig, axes = style.new_figure(len(metrics), len(datasets))
    x = np.arange(len(values))
    for row, metric in enumerate(metrics):
        for col, dataset in enumerate(datasets):
            ax = axes[row, col]
            for line, points in curves[metric].get(dataset, {}).items():
                _draw_line(ax, x, points, colors[line], line)
            floor = (oracle or {}).get(metric, {}).get(dataset)
            if floor is not None:
                ax.axhline(floor, color=style.REFERENCE_COLOR, ls="--", lw=1.2)
            ax.set_xticks(x, list(values))
            ax.set_xlabel(xlabel)
    style.label_grid(axes, metrics, datasets)
    handles = style.run_handles(lines, colors)
    if oracle:
        handles.append(Line2D([], [], color=style.REFERENCE_COLOR, ls="--", label="oracle floor"))
    style.figure_legend(fig, handles, title="seed mean, whiskers: 95% CI")
    fig.suptitle(f"Metrics against {xlabel}")
    return fig
