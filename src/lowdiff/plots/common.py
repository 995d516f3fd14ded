"""Figures every experiment gets: training loss, sample grids, and metric bars.

`loss_curves` -> train_loss.png (protocol §2: one panel per dataset, one curve per run, Hanning
window 25), `sample_grid` -> generated_images.png (rows = runs, columns = datasets, with the
dataset's training points as a ground-truth row), `metric_bars` -> kl_divergence_comparison.png
(grouped bars with CI whiskers clipped to the metric's range, per-seed dots, oracle floor), and
`mode_bars` -> modes captured. Inputs are plain arrays, or dicts keyed by run name then dataset
name; dict order is drawing order.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from lowdiff.plots import style
from lowdiff.plots.style import Color, Nested

Bounds = tuple[float | None, float | None]
PerRunDataset = Mapping[str, Mapping[str, object]]


def hanning_smooth(values: np.ndarray, window: int = 25) -> np.ndarray:
    """Smooth along the last axis: normalised `numpy.hanning(window)`, 'valid' convolution.

    The output has `steps - window + 1` points on the last axis. A series shorter than the
    window is smoothed with a window of its own length; windows under 3 points (the end points
    of a Hanning window are 0) return an unsmoothed copy.
    """
    values = np.asarray(values, dtype=float)
    window = min(window, values.shape[-1])
    if window < 3:
        return values.copy()
    kernel = np.hanning(window)
    kernel /= kernel.sum()
    return np.apply_along_axis(np.convolve, -1, values, kernel, mode="valid")


def loss_curves(
    curves: Nested,
    *,
    window: int = 25,
    datasets: Sequence[str] | None = None,
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Training loss, one panel per dataset, one curve per run (protocol §2: train_loss.png).

    curves[run][dataset] is (seeds, steps). The curve is the Hanning-smoothed seed mean plotted
    at the window centres, without seed bands: bands of runs that differ by less than their
    spread overlap into one grey area (`loss_differences` shows the differences and their
    spread). The y axis is logarithmic where a panel's curves span more than a factor 10.
    """
    runs = list(curves)
    names = list(datasets) if datasets is not None else style.datasets_of(curves)
    colors = style.colors_for(runs, colors)
    fig, axes = style.panel_grid(len(names))
    for ax, dataset in zip(axes, names, strict=True):
        for run in (run for run in runs if dataset in curves[run]):
            losses = np.atleast_2d(np.asarray(curves[run][dataset], dtype=float))  # (seeds, steps)
            smooth = hanning_smooth(losses, window)  # (seeds, steps - window + 1)
            steps = np.arange(smooth.shape[-1]) + (losses.shape[-1] - smooth.shape[-1]) // 2
            # smoothing is linear: the mean of the smoothed seeds = the smoothed seed mean
            ax.plot(steps, smooth.mean(axis=0), color=colors[run], lw=1.4, label=run)
        style.log_y_if_wide(ax)
        ax.set(title=dataset, xlabel="training step", ylabel="training loss (MSE)")
    style.figure_legend(fig, style.run_handles(runs, colors))
    fig.suptitle(f"Training loss (seed mean, Hanning-{window} smoothed)")
    return fig


def paired_loss_difference(
    run: np.ndarray, baseline: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothed per-seed differences run - baseline of (seeds, steps) curves paired by row:
    (steps, mean, half-width of the 95% t interval over seeds; 0 for one seed)."""
    seeds = min(len(run), len(baseline))
    length = min(run.shape[-1], baseline.shape[-1])
    difference = hanning_smooth(run[:seeds, :length] - baseline[:seeds, :length], window)
    steps = np.arange(difference.shape[-1]) + (length - difference.shape[-1]) // 2
    mean = difference.mean(axis=0)
    if seeds < 2:
        return steps, mean, np.zeros_like(mean)
    sem = difference.std(axis=0, ddof=1) / np.sqrt(seeds)
    return steps, mean, stats.t.ppf(0.975, seeds - 1) * sem


def loss_differences(
    curves: Nested,
    *,
    baseline: str,
    window: int = 25,
    datasets: Sequence[str] | None = None,
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Training loss minus the baseline's, seed by seed (same seed = same data order and noise),
    smoothed; one panel per dataset, one line per run with its 95% interval over seeds, and the
    baseline as the zero line. Below zero: the run trains to a lower loss at that step."""
    runs = [run for run in curves if run != baseline]
    names = list(datasets) if datasets is not None else style.datasets_of(curves)
    colors = style.colors_for([baseline, *runs], colors)
    fig, axes = style.panel_grid(len(names))
    for ax, dataset in zip(axes, names, strict=True):
        reference = curves.get(baseline, {}).get(dataset)
        for run in (r for r in runs if reference is not None and dataset in curves[r]):
            pair = (
                np.atleast_2d(np.asarray(c, dtype=float)) for c in (curves[run][dataset], reference)
            )
            steps, mean, half = paired_loss_difference(*pair, window)
            ax.plot(steps, mean, color=colors[run], lw=1.4, label=run)
            ax.fill_between(steps, mean - half, mean + half, color=colors[run], alpha=0.15, lw=0)
        ax.axhline(0.0, color=colors[baseline], lw=1.0, ls="--")
        ax.set(title=dataset, xlabel="training step", ylabel=f"loss − {baseline}'s")
    style.figure_legend(fig, style.run_handles([baseline, *runs], colors))
    fig.suptitle(f"Training loss minus {baseline}'s (paired by seed, Hanning-{window} smoothed)")
    return fig


TRUTH_ROW = "data"


def sample_grid(
    samples: Nested,
    *,
    truth: Mapping[str, np.ndarray] | None = None,
    notes: Mapping[str, Mapping[str, str]] | None = None,
    run_labels: Mapping[str, str] | None = None,
    max_points: int = 5000,
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Scatter of generated samples: rows = runs, columns = datasets (generated_images.png).

    samples[run][dataset] is (N, 2); the first `max_points` are drawn (samples are i.i.d.).
    `truth[dataset]`, if given, is drawn as a first row "data" (the training points, grey) so a
    reader can judge the samples by eye. A panel without samples shows `notes[run][dataset]`
    (e.g. "diverged at step 120") or "not run".
    """
    runs = list(samples) + [run for run in (notes or {}) if run not in samples]
    names = list(dict.fromkeys(style.datasets_of(samples) + style.datasets_of(notes or {})))
    colors = style.colors_for(runs, colors)
    labels = {run: run for run in runs} | dict(run_labels or {})
    shown_truth = {d: truth[d] for d in names if truth and d in truth}
    limit = style.scatter_limit(
        [p for by_dataset in samples.values() for p in by_dataset.values()]
        + list(shown_truth.values())
    )
    rows = ([TRUTH_ROW] if shown_truth else []) + runs
    fig, axes = style.new_figure(len(rows), len(names), panel_size=style.SQUARE_PANEL)
    for (row, run), (col, dataset) in itertools.product(enumerate(rows), enumerate(names)):
        ax = axes[row, col]
        if run == TRUTH_ROW and shown_truth:
            points, color = shown_truth.get(dataset), style.TRUTH_COLOR
        else:
            points, color = samples.get(run, {}).get(dataset), colors[run]
        if points is not None:
            style.scatter(ax, points, limit=limit, max_points=max_points, color=color)
        else:
            style.set_view(ax, limit)
            style.panel_note(ax, (notes or {}).get(run, {}).get(dataset, "not run"))
        ax.label_outer()
    row_labels = [TRUTH_ROW + " (training)" if r == TRUTH_ROW else labels[r] for r in rows]
    style.label_grid(axes, row_labels, names)
    fig.suptitle(f"Generated samples (up to {max_points} per model)")
    return fig


def _whiskers(heights: np.ndarray, bounds: np.ndarray, clip: Bounds) -> np.ndarray:
    """(2, n) whisker lengths of intervals `bounds` (n, 2), clipped to the metric's range."""
    low, high = clip
    bounds = np.clip(bounds, -np.inf if low is None else low, np.inf if high is None else high)
    return np.clip(np.stack([heights - bounds[:, 0], bounds[:, 1] - heights]), 0, None)


def _seed_dots(ax: Axes, x: float, values: Sequence[float], width: float) -> None:
    """The per-seed values beside a bar's mean: small hollow dots spread across the bar."""
    values = np.asarray(values, dtype=float)
    offsets = np.linspace(-0.25, 0.25, len(values)) * width if len(values) > 1 else [0.0]
    ax.scatter(
        x + np.asarray(offsets), values, s=9, facecolors="white", edgecolors="0.1",
        linewidths=0.7, zorder=4,
    )  # fmt: skip


def _reference_lines(
    ax: Axes, groups: list[str], reference: Mapping[str, float], label: str
) -> None:
    marked = [g for g in groups if g in reference]
    positions = np.array([groups.index(g) for g in marked], dtype=float)
    values = [reference[g] for g in marked]
    line = ax.hlines(
        values, positions - 0.45, positions + 0.45, colors=style.REFERENCE_COLOR,
        linestyles="--", lw=1.6, zorder=3, label=label,
    )  # fmt: skip
    # a white halo keeps the dashed line visible where it crosses a dark bar
    line.set_path_effects([patheffects.withStroke(linewidth=3.2, foreground="white")])


def _grouped_bars(
    ax: Axes,
    means: Mapping[str, Mapping[str, float]],
    *,
    colors: Mapping[str, Color],
    ci: Mapping[str, Mapping[str, tuple[float, float]]] | None,
    per_seed: PerRunDataset | None,
    clip: Bounds,
) -> list[str]:
    """Bars grouped by dataset (x), one per run, clipped CI whiskers, per-seed dots."""
    runs, groups = list(means), style.datasets_of(means)
    if not groups:
        raise ValueError("nothing to plot: no (run, dataset) value in means")
    width = 0.8 / len(runs)
    for index, run in enumerate(runs):
        present = [g for g in groups if g in means[run]]
        x = np.array([groups.index(g) for g in present]) + (index - (len(runs) - 1) / 2) * width
        heights = np.array([means[run][g] for g in present], dtype=float)
        yerr = None
        if ci is not None and run in ci:
            bounds = np.array([ci[run].get(g, (np.nan, np.nan)) for g in present], dtype=float)
            yerr = _whiskers(heights, bounds.reshape(-1, 2), clip)
        ax.bar(
            x, heights, width * 0.92, color=colors[run], label=run, yerr=yerr, capsize=2,
            error_kw={"elinewidth": 1, "ecolor": "0.25"},
        )  # fmt: skip
        for position, group in zip(x, present, strict=True):
            if per_seed is not None and group in per_seed.get(run, {}):
                _seed_dots(ax, position, per_seed[run][group], width)
    ax.axhline(0.0, color="0.5", lw=0.8, zorder=0)
    return groups


def metric_bars(
    means: Mapping[str, Mapping[str, float]],
    *,
    ci: Mapping[str, Mapping[str, tuple[float, float]]] | None,
    oracle: Mapping[str, float] | None,
    ylabel: str,
    title: str,
    per_seed: PerRunDataset | None = None,
    bounds: Bounds = (None, None),
    reference_label: str = "oracle floor",
    group_labels: Mapping[str, str] | None = None,
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Grouped bars, datasets × runs, CI whiskers, the oracle floor dashed over each group.

    means[run][dataset] is the bar height, ci[run][dataset] = (low, high) its interval, clipped
    to the metric's `bounds` (a fraction never gets a whisker below 0), per_seed[run][dataset]
    the seeds' values drawn as dots on the bar (give them when seeds are few), and
    oracle[dataset] the value a perfect generator gets (kl_divergence_comparison.png).
    """
    runs = list(means)
    colors = style.colors_for(runs, colors)
    width = max(4.5, 1.2 + 0.28 * len(runs) * len(style.datasets_of(means)))
    fig, axes = style.new_figure(1, 1, panel_size=(width, 3.8))
    ax = axes[0, 0]
    groups = _grouped_bars(ax, means, colors=colors, ci=ci, per_seed=per_seed, clip=bounds)
    if oracle is not None:
        _reference_lines(ax, groups, oracle, reference_label)
    labels = dict(group_labels or {})
    ax.set_xticks(range(len(groups)), [labels.get(g, g) for g in groups])
    # wrapped to the panel (about 11 characters per inch at the title's 12 pt): never cut off
    ax.set(ylabel=ylabel, title=textwrap.fill(title, width=max(30, int(11 * width))))
    handles = style.run_handles(runs, colors, patch=True)
    if oracle:
        handles.append(
            Line2D([], [], color=style.REFERENCE_COLOR, ls="--", lw=1.6, label=reference_label)
        )
    notes = (["whiskers: 95% CI"] if ci else []) + (["dots: seeds"] if per_seed else [])
    style.figure_legend(fig, handles, title=", ".join(notes) or None)
    return fig


def _scaled(
    nested: Mapping[str, Mapping[str, object]] | None, scale: Mapping[str, float]
) -> dict[str, dict[str, np.ndarray]] | None:
    if nested is None:
        return None
    return {
        run: {d: np.asarray(v, dtype=float) * scale[d] for d, v in by_d.items()}
        for run, by_d in nested.items()
    }


def mode_bars(
    modes: Mapping[str, Mapping[str, float]],
    *,
    true_modes: Mapping[str, int],
    ci: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    per_seed: PerRunDataset | None = None,
    fraction: bool = True,
    title: str = "Modes captured",
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Modes captured, datasets × runs, with the true number of modes K marked (via metric_bars).

    With `fraction` (default) bars are modes captured / K and the mark sits at 1, so datasets
    with K = 2 and K = 142 read on one axis; otherwise raw counts with the mark at K. Whiskers
    are clipped to [0, K]. Each group is labelled with its K either way.
    """
    missing = [d for d in style.datasets_of(modes) if d not in true_modes]
    if missing:
        raise ValueError(f"true_modes has no K for datasets {missing}")
    scale = {d: 1.0 / k if fraction else 1.0 for d, k in true_modes.items()}
    clipped = None
    if ci is not None:  # clip to [0, K] per dataset before scaling
        clipped = {
            run: {d: tuple(np.clip(v, 0.0, true_modes[d])) for d, v in by_d.items()}
            for run, by_d in ci.items()
        }
    reference = {d: 1.0 if fraction else float(k) for d, k in true_modes.items()}
    return metric_bars(
        _scaled(modes, scale),
        ci=_scaled(clipped, scale),
        per_seed=_scaled(per_seed, scale),
        oracle=reference,
        bounds=(0.0, 1.0) if fraction else (0.0, None),
        ylabel="fraction of the K modes captured" if fraction else "modes captured",
        title=title,
        reference_label="all K modes" if fraction else "true modes K",
        group_labels={d: f"{d}\n(K = {k})" for d, k in true_modes.items()},
        colors=colors,
    )
