"""Figures of lowdiff experiments: numpy arrays in, `matplotlib.figure.Figure` out.

This is the only module that imports matplotlib. Figures are built on `Figure` with the Agg
canvas directly, never through pyplot, so they render headless and from worker threads and
leave no global state behind. Inputs are plain arrays, or dicts keyed by run name then dataset
name; dict order is drawing order. `save_figure` writes a PNG atomically.

Figures (SPEC §2-§3): `loss_curves` -> train_loss.png / dino_train_loss.png, `sample_grid` ->
generated_images.png, `weight_evolution` -> weight_evolution.png, `metric_bars` ->
kl_divergence_comparison.png, `mode_bars` -> modes captured, `gated_samples` ->
dino_generated_samples.png, `gate_histograms` -> dino_gating_weights_histogram.png, `gate_field`
-> the expert-specialisation view.

Conventions shared by every figure:
- a run keeps one colour everywhere: `run_colors` gives the baseline a fixed near-black and the
  other runs a qualitative map, in order. Compute it once from all runs of an experiment and
  pass it as `colors=` to every figure (by default each figure colours only the runs it gets);
- legends sit outside the panels and the layout is constrained, so nothing covers data;
- 2-D scatters have equal aspect and one fixed square view, [-6, 6]² unless the data need more;
  points left outside the view are counted in the panel, never dropped silently;
- loss curves are smoothed as SPEC §2 asks (Hanning window, 25 steps): a normalised
  `numpy.hanning` window, 'valid' convolution (`hanning_smooth`).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PathCollection
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from lowdiff import results

Color = str  # a hex colour, "#rrggbb"
Nested = Mapping[str, Mapping[str, np.ndarray]]  # [run][dataset] -> array

BASELINE = "baseline"
BASELINE_COLOR: Color = "#222222"
NEUTRAL_COLOR: Color = "#7f7f7f"  # points of a run without a gate
REFERENCE_COLOR: Color = "#111111"  # oracle floor / true-mode marks
GATE_CMAP = "coolwarm"
SCATTER_LIMIT = 6.0  # default half-width of every 2-D view
MAX_SCATTER_LIMIT = 20.0  # a diverged model must not shrink every other panel to a dot
PANEL_SIZE = (3.8, 3.0)  # inches (width, height) of one panel
SQUARE_PANEL = (2.6, 2.6)
DPI = 150


def run_colors(run_names: Iterable[str], *, baseline: str = BASELINE) -> dict[str, Color]:
    """One colour per run: `baseline` near-black, the others in order from tab10 (tab20 past 9).

    The greys of the qualitative maps are left out so that no run can be mistaken for the
    baseline. The result depends only on the order of `run_names`.
    """
    names = list(dict.fromkeys(run_names))
    others = [name for name in names if name != baseline]
    palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]
    if len(others) > len(palette):
        palette = [c for i, c in enumerate(colormaps["tab20"].colors) if i not in (14, 15)]
    cycle = itertools.cycle(palette)
    return {name: BASELINE_COLOR if name == baseline else to_hex(next(cycle)) for name in names}


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


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = DPI) -> Path:
    """Write `fig` as a PNG at `path` atomically (`results.atomic_write_bytes`).

    Readers never see a half-written figure; on failure any old file at `path` is left
    untouched. Missing parent directories are created.
    """
    path = Path(path)
    results.atomic_write_with(
        path, lambda buffer: fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    )
    return path


# --- shared pieces: layout, colours, legends, scatters, grouped bars -------------------------


def _new_figure(
    nrows: int, ncols: int, *, panel_size: tuple[float, float] = PANEL_SIZE
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure on the Agg canvas with an (nrows, ncols) array of axes."""
    if nrows < 1 or ncols < 1:
        raise ValueError("nothing to plot: the figure would have no panels")
    fig = Figure(figsize=(ncols * panel_size[0], nrows * panel_size[1]), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _panel_grid(
    n_panels: int, *, panel_size: tuple[float, float] = PANEL_SIZE
) -> tuple[Figure, list[Axes]]:
    """About-square grid of `n_panels` axes: 1×n up to 3, then 2×2, 2×3, 3×3, ...; no spares."""
    if n_panels == 1:  # a lone panel is the whole figure: give it room for titles and legend
        panel_size = (1.6 * panel_size[0], 1.6 * panel_size[1])
    ncols = n_panels if n_panels <= 3 else math.ceil(math.sqrt(n_panels))
    nrows = math.ceil(n_panels / ncols) if n_panels else 0
    fig, axes = _new_figure(nrows, ncols, panel_size=panel_size)
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        fig.delaxes(ax)
    return fig, flat[:n_panels]


def _datasets_of(nested: Mapping[str, Mapping[str, object]]) -> list[str]:
    """Dataset names in order of first appearance over the runs."""
    return list(dict.fromkeys(dataset for by_dataset in nested.values() for dataset in by_dataset))


def _colors_for(runs: Sequence[str], colors: Mapping[str, Color] | None) -> dict[str, Color]:
    """`colors` checked to cover every run, or `run_colors(runs)` when not given."""
    if colors is None:
        return run_colors(runs)
    missing = [run for run in runs if run not in colors]
    if missing:
        raise ValueError(f"colors has no entry for runs {missing}; give one for every run")
    return dict(colors)


def _run_handles(
    runs: Sequence[str], colors: Mapping[str, Color], *, patch: bool = False
) -> list[Artist]:
    """Legend entries, one per run in its colour: lines, or patches for bars."""
    if patch:
        return [Patch(facecolor=colors[run], label=run) for run in runs]
    return [Line2D([], [], color=colors[run], lw=2, label=run) for run in runs]


def _figure_legend(fig: Figure, handles: Sequence[Artist], title: str | None = None) -> None:
    """One legend for the whole figure, below the panels (it covers no data), in as many
    columns as fit the figure's width."""
    if not handles:
        return
    widest = max(len(handle.get_label()) for handle in handles)
    entry_width = 0.8 + 0.09 * widest  # inches per entry at the default 10 pt font
    columns = max(1, min(len(handles), int(fig.get_figwidth() // entry_width)))
    fig.legend(
        handles=list(handles), loc="outside lower center", ncols=columns, frameon=False, title=title
    )


def _scatter_limit(point_sets: Iterable[np.ndarray]) -> float:
    """Half-width of the shared square view: 6, or up to 20 where 1 % of some set lies beyond.

    A few stray points (a model that diverged on some samples) do not widen the view for every
    panel; `_scatter` counts them instead.
    """
    limit = SCATTER_LIMIT
    for points in point_sets:
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        finite = np.abs(points[np.isfinite(points).all(axis=1)])
        if finite.size:
            limit = max(limit, float(np.ceil(np.quantile(finite, 0.99))))
    return min(limit, MAX_SCATTER_LIMIT)


def _scatter(
    ax: Axes,
    points: np.ndarray,
    *,
    limit: float,
    max_points: int,
    color: Color | None = None,
    values: np.ndarray | None = None,
    size: float = 2.0,
) -> PathCollection:
    """Small-point scatter of the first `max_points` of (N, 2) `points` on [-limit, limit]².

    Coloured by `color`, or by `values` in [0, 1] on the gate colormap. The number of shown
    points outside the view (or not finite) is written in the panel's corner.
    """
    shown = np.asarray(points, dtype=float).reshape(-1, 2)[:max_points]  # (n, 2)
    if values is None:
        style = {"color": color}
    else:
        gate = np.asarray(values, dtype=float).reshape(-1)[:max_points]  # (n,)
        if len(gate) != len(shown):
            raise ValueError(f"{len(gate)} gate values for {len(shown)} points")
        style = {"c": gate, "cmap": GATE_CMAP, "vmin": 0.0, "vmax": 1.0}
    collection = ax.scatter(
        shown[:, 0], shown[:, 1], s=size, linewidths=0, rasterized=True, **style
    )
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")
    ax.set_xticks(np.linspace(-limit, limit, 5))
    ax.set_yticks(np.linspace(-limit, limit, 5))
    outside = int(np.sum(~(np.abs(shown) <= limit).all(axis=1)))  # NaN counts as outside
    if outside:
        note = f"{outside} of {len(shown)} outside view"
        ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, color="0.3")
    return collection


def _mean_with_band(
    ax: Axes, x: np.ndarray, per_seed: np.ndarray, *, color: Color, ls: str = "-"
) -> Line2D:
    """Seed mean of (seeds, n) `per_seed` as a line, its min-max over seeds as a light band."""
    (line,) = ax.plot(x, per_seed.mean(axis=0), color=color, ls=ls, lw=1.4)
    if len(per_seed) > 1:
        band = (per_seed.min(axis=0), per_seed.max(axis=0))
        ax.fill_between(x, *band, color=color, alpha=0.18, linewidth=0)
    return line


def _label_grid(axes: np.ndarray, row_labels: Sequence[str], column_titles: Sequence[str]) -> None:
    """Bold row labels down the first column, titles along the first row of an axes array."""
    for ax, label in zip(axes[:, 0], row_labels, strict=True):
        ax.set_ylabel(label, fontweight="bold")
    for ax, title in zip(axes[0, :], column_titles, strict=True):
        ax.set_title(title)


def _gate_colorbar(fig: Figure, axes: Sequence[Axes] | np.ndarray) -> None:
    """One colorbar for every gate-coloured panel: coolwarm over the fixed range [0, 1]."""
    mappable = ScalarMappable(Normalize(0.0, 1.0), GATE_CMAP)
    fig.colorbar(mappable, ax=axes, shrink=0.8, label="gate g (weight of expert 1)")


def _log_y_if_wide(ax: Axes, ratio: float = 10.0) -> None:
    """Log y axis, with plain tick labels, when the panel's positive lines span > `ratio`×."""
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    ys = np.concatenate(ys) if ys else np.array([])
    ys = ys[np.isfinite(ys)]
    if ys.size and ys.min() > 0 and ys.max() / ys.min() > ratio:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _grouped_bars(
    ax: Axes,
    means: Mapping[str, Mapping[str, float]],
    *,
    colors: Mapping[str, Color],
    ci: Mapping[str, Mapping[str, tuple[float, float]]] | None,
    reference: Mapping[str, float] | None,
    reference_label: str,
    group_labels: Mapping[str, str],
) -> None:
    """Bars grouped by dataset (x), one per run, CI whiskers, a dashed reference per group."""
    runs, groups = list(means), _datasets_of(means)
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
            yerr = np.clip(np.stack([heights - bounds[:, 0], bounds[:, 1] - heights]), 0, None)
        ax.bar(
            x,
            heights,
            width * 0.92,
            color=colors[run],
            label=run,
            yerr=yerr,
            capsize=2,
            error_kw={"elinewidth": 1, "ecolor": "0.25"},
        )
    if reference is not None:
        marked = [g for g in groups if g in reference]
        positions = np.array([groups.index(g) for g in marked], dtype=float)
        values = [reference[g] for g in marked]
        line = ax.hlines(
            values,
            positions - 0.45,
            positions + 0.45,
            colors=REFERENCE_COLOR,
            linestyles="--",
            lw=1.6,
            zorder=3,
            label=reference_label,
        )
        # a white halo keeps the dashed line visible where it crosses a dark bar
        line.set_path_effects([patheffects.withStroke(linewidth=3.2, foreground="white")])
    ax.set_xticks(range(len(groups)), [group_labels.get(g, g) for g in groups])
    ax.axhline(0.0, color="0.5", lw=0.8, zorder=0)


# --- the figures -----------------------------------------------------------------------------


def loss_curves(
    curves: Nested,
    *,
    window: int = 25,
    datasets: Sequence[str] | None = None,
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Training loss, one panel per dataset, one curve per run (SPEC train_loss.png).

    curves[run][dataset] is (seeds, steps). The curve is the Hanning-smoothed seed mean plotted
    at the window centres; the band is the min-max over seeds of the per-seed smoothed curves.
    The y axis is logarithmic where a panel's curves span more than a factor 10.
    """
    runs = list(curves)
    names = list(datasets) if datasets is not None else _datasets_of(curves)
    colors = _colors_for(runs, colors)
    fig, axes = _panel_grid(len(names))
    for ax, dataset in zip(axes, names, strict=True):
        for run in (run for run in runs if dataset in curves[run]):
            losses = np.atleast_2d(np.asarray(curves[run][dataset], dtype=float))  # (seeds, steps)
            smooth = hanning_smooth(losses, window)  # (seeds, steps - window + 1)
            steps = np.arange(smooth.shape[-1]) + (losses.shape[-1] - smooth.shape[-1]) // 2
            # smoothing is linear: the mean of the smoothed seeds = the smoothed seed mean
            _mean_with_band(ax, steps, smooth, color=colors[run]).set_label(run)
        _log_y_if_wide(ax)
        ax.set(title=dataset, xlabel="training step", ylabel="training loss (MSE)")
    _figure_legend(fig, _run_handles(runs, colors))
    fig.suptitle(f"Training loss (seed mean, Hanning-{window} smoothed)\nband = min–max over seeds")
    return fig


def sample_grid(
    samples: Nested,
    *,
    run_labels: Mapping[str, str] | None = None,
    max_points: int = 5000,
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Scatter of generated samples: rows = runs, columns = datasets (generated_images.png).

    samples[run][dataset] is (N, 2); the first `max_points` are drawn (samples are i.i.d.).
    """
    runs, names = list(samples), _datasets_of(samples)
    colors = _colors_for(runs, colors)
    labels = {run: run for run in runs} | dict(run_labels or {})
    limit = _scatter_limit(
        points for by_dataset in samples.values() for points in by_dataset.values()
    )
    fig, axes = _new_figure(len(runs), len(names), panel_size=SQUARE_PANEL)
    for (row, run), (col, dataset) in itertools.product(enumerate(runs), enumerate(names)):
        ax = axes[row, col]
        if dataset in samples[run]:
            _scatter(
                ax, samples[run][dataset], limit=limit, max_points=max_points, color=colors[run]
            )
        else:
            ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")
            ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", color="0.4")
        ax.label_outer()
    _label_grid(axes, [labels[run] for run in runs], names)
    fig.suptitle(f"Generated samples (up to {max_points} per model)")
    return fig


def metric_bars(
    means: Mapping[str, Mapping[str, float]],
    *,
    ci: Mapping[str, Mapping[str, tuple[float, float]]] | None,
    oracle: Mapping[str, float] | None,
    ylabel: str,
    title: str,
    reference_label: str = "oracle floor",
    group_labels: Mapping[str, str] | None = None,
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Grouped bars, datasets × runs, CI whiskers, the oracle floor dashed over each group.

    means[run][dataset] is the bar height, ci[run][dataset] = (low, high) its interval and
    oracle[dataset] the value a perfect generator gets (kl_divergence_comparison.png).
    """
    runs, groups = list(means), _datasets_of(means)
    colors = _colors_for(runs, colors)
    width = max(4.5, 1.2 + 0.28 * len(runs) * len(groups))
    fig, axes = _new_figure(1, 1, panel_size=(width, 3.8))
    ax = axes[0, 0]
    _grouped_bars(
        ax,
        means,
        colors=colors,
        ci=ci,
        reference=oracle,
        reference_label=reference_label,
        group_labels=dict(group_labels or {}),
    )
    ax.set(ylabel=ylabel, title=title)
    handles = _run_handles(runs, colors, patch=True)
    if oracle:
        handles.append(
            Line2D([], [], color=REFERENCE_COLOR, ls="--", lw=1.6, label=reference_label)
        )
    _figure_legend(fig, handles, title="whiskers: CI" if ci else None)
    return fig


def mode_bars(
    modes: Mapping[str, Mapping[str, float]],
    *,
    true_modes: Mapping[str, int],
    ci: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    fraction: bool = True,
    title: str = "Modes captured",
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Modes captured, datasets × runs, with the true number of modes K marked (via metric_bars).

    With `fraction` (default) bars are modes captured / K and the mark sits at 1, so datasets
    with K = 2 and K = 142 read on one axis; otherwise raw counts with the mark at K. Each
    group is labelled with its K either way.
    """
    missing = [d for d in _datasets_of(modes) if d not in true_modes]
    if missing:
        raise ValueError(f"true_modes has no K for datasets {missing}")
    scale = {d: 1.0 / k if fraction else 1.0 for d, k in true_modes.items()}
    means = {run: {d: v * scale[d] for d, v in by_d.items()} for run, by_d in modes.items()}
    scaled_ci = None
    if ci is not None:
        scaled_ci = {
            run: {d: (lo * scale[d], hi * scale[d]) for d, (lo, hi) in by_d.items()}
            for run, by_d in ci.items()
        }
    reference = {d: 1.0 if fraction else float(k) for d, k in true_modes.items()}
    return metric_bars(
        means,
        ci=scaled_ci,
        oracle=reference,
        ylabel="fraction of the K modes captured" if fraction else "modes captured",
        title=title,
        reference_label="all K modes" if fraction else "true modes K",
        group_labels={d: f"{d}\n(K = {k})" for d, k in true_modes.items()},
        colors=colors,
    )


def weight_evolution(weights: Nested, *, colors: Mapping[str, Color] | None = None) -> Figure:
    """Branch weights against timestep, one panel per dataset (SPEC §2 weight_evolution.png).

    weights[run][dataset] is (seeds, T, 2): the mean over samples of (w_global, w_local) at each
    sampling step; T-axis index 0 is the first step (t = T-1), index T-1 the last (t = 0). The
    x axis runs from T-1 (pure noise) on the left to 0 on the right. Solid = global, dashed =
    local, in the run's colour; lines are the seed mean, bands the min-max over seeds.
    """
    runs, names = list(weights), _datasets_of(weights)
    colors = _colors_for(runs, colors)
    fig, axes = _panel_grid(len(names))
    for ax, dataset in zip(axes, names, strict=True):
        last_t = 0
        for run in (run for run in runs if dataset in weights[run]):
            w = np.asarray(weights[run][dataset], dtype=float)
            w = w.reshape(-1, *w.shape[-2:])  # (seeds, T, 2); a lone (T, 2) is one seed
            t = np.arange(w.shape[1])[::-1]  # index i was sampled at t = T-1-i
            for branch, style in ((0, "-"), (1, "--")):  # (global, local)
                _mean_with_band(ax, t, w[:, :, branch], color=colors[run], ls=style)
            last_t = max(last_t, w.shape[1] - 1)
        ax.set_xlim(last_t, 0)  # noise on the left, data on the right: the order of sampling
        ax.axhline(0.5, color="0.75", lw=0.8, zorder=0)  # equal weighting
        ax.set(title=dataset, xlabel="timestep t (noise → data)", ylabel="mean weight")
    styles = [
        Line2D([], [], color="0.2", ls=ls, label=name)
        for ls, name in (("-", "global"), ("--", "local"))
    ]
    _figure_legend(fig, _run_handles(runs, colors) + styles)
    fig.suptitle("Branch weights during sampling (seed mean)\nband = min–max over seeds")
    return fig


def gated_samples(
    samples: Mapping[str, np.ndarray],
    gates: Mapping[str, np.ndarray],
    *,
    title: str,
    max_points: int = 5000,
) -> Figure:
    """One scatter per run of (N, 2) samples coloured by their (N,) gate in [0, 1].

    SPEC §3 dino_generated_samples.png. A run missing from `gates` (the baseline) is drawn in
    plain grey with "(no gate)" in its title. One colorbar serves all panels.
    """
    runs = list(samples)
    limit = _scatter_limit(samples.values())
    fig, axes = _panel_grid(len(runs), panel_size=(3.2, 3.2))
    for ax, run in zip(axes, runs, strict=True):
        gate = gates.get(run)
        style = {"color": NEUTRAL_COLOR} if gate is None else {"values": gate}
        _scatter(ax, samples[run], limit=limit, max_points=max_points, size=3.0, **style)
        ax.set_title(run if gate is not None else f"{run} (no gate)")
    if any(run in gates for run in runs):
        _gate_colorbar(fig, axes)
    fig.suptitle(title)
    return fig


def gate_histograms(
    gates: Mapping[str, np.ndarray], *, bins: int = 20, colors: Mapping[str, Color] | None = None
) -> Figure:
    """One histogram per run of gate values on fixed bins over [0, 1].

    SPEC §3 dino_gating_weights_histogram.png. Each panel states the mean gate and the
    fractions below 0.05 and above 0.95: a gate stuck at 0 or 1 means one expert does the work.
    """
    runs = list(gates)
    colors = _colors_for(runs, colors)
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig, axes = _panel_grid(len(runs))
    for ax, run in zip(axes, runs, strict=True):
        gate = np.asarray(gates[run], dtype=float).reshape(-1)  # (N,)
        fractions = np.full(gate.size, 1.0 / max(gate.size, 1))  # bar heights sum to 1
        ax.hist(gate, bins=edges, weights=fractions, color=colors[run], edgecolor="white")
        ax.set(xlim=(0.0, 1.0), title=run, xlabel="gate value g", ylabel="fraction of samples")
        ax.set_ylim(0.0, ax.get_ylim()[1] * 1.4)  # headroom for the note
        note = (
            f"mean {gate.mean():.2f}\n"
            f"g < 0.05: {np.mean(gate < 0.05):.1%}   g > 0.95: {np.mean(gate > 0.95):.1%}"
        )
        ax.text(0.5, 0.97, note, transform=ax.transAxes, ha="center", va="top", fontsize=8)
    fig.suptitle("Gate values at the last sampling step")
    return fig


def gate_field(
    fields: Mapping[str, Mapping[int, np.ndarray]],
    *,
    extent: tuple[float, float, float, float],
    overlay: Mapping[str, np.ndarray] | None = None,
    max_overlay_points: int = 3000,
) -> Figure:
    """Gate value over the plane: rows = datasets, columns = timesteps (expert specialisation).

    fields[dataset][t] is a (G, G) grid (row = y, col = x) covering extent = (xmin, xmax, ymin,
    ymax). Columns run from the largest t (noise) to the smallest (data). `overlay[dataset]`,
    if given, is drawn as a faint scatter of the dataset's points. One shared colorbar.
    """
    names = list(fields)
    timesteps = sorted({t for by_t in fields.values() for t in by_t}, reverse=True)
    fig, axes = _new_figure(len(names), len(timesteps), panel_size=SQUARE_PANEL)
    for (row, dataset), (col, t) in itertools.product(enumerate(names), enumerate(timesteps)):
        ax, field = axes[row, col], fields[dataset].get(t)
        if field is None:
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", color="0.4")
        else:
            ax.imshow(
                np.asarray(field),
                origin="lower",
                extent=extent,
                cmap=GATE_CMAP,
                vmin=0.0,
                vmax=1.0,
                interpolation="nearest",
            )
        if overlay is not None and dataset in overlay:
            points = np.asarray(overlay[dataset], dtype=float)[:max_overlay_points]  # (n, 2)
            ax.scatter(
                points[:, 0],
                points[:, 1],
                s=0.6,
                color="black",
                alpha=0.35,
                linewidths=0,
                rasterized=True,
            )
        ax.set(xlim=extent[:2], ylim=extent[2:], aspect="equal")
        ax.label_outer()
    _label_grid(axes, names, [f"t = {t}" for t in timesteps])
    _gate_colorbar(fig, axes)
    fig.suptitle("Gate over the plane: where each expert works, noise → data")
    return fig
