"""Figures of mixing weights: branch weights over the sampling steps, and gates.

`weight_evolution` -> weight_evolution.png (protocol §2: branch weights against timestep, from the
end of the diffusion process to its beginning), `gated_samples` -> <dataset>_generated_samples.png
(protocol §3: samples coloured by their gate at the last step), `gate_histograms` ->
<dataset>_gating_weights_histogram.png, `gate_field` -> the expert-specialisation view (gate
value over the plane at several timesteps). The names of the weights come from the caller
(the architecture's declaration), never from the width of an array.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lowdiff.plots import style
from lowdiff.plots.style import Color, Nested

GATE_LABEL = "gate g (weight of expert 1)"
BRANCH_STYLES = ("-", "--", ":", "-.")


def weight_evolution(
    weights: Nested,
    *,
    names: Sequence[str] = ("w_global", "w_local"),
    colors: Mapping[str, Color] | None = None,
) -> Figure:
    """Branch weights against timestep, one panel per dataset (protocol §2 weight_evolution.png).

    weights[run][dataset] is (seeds, T, K): the mean over samples of each branch weight at each
    sampling step, named by `names` (K of them); T-axis index 0 is the first step (t = T-1),
    index T-1 the last (t = 0). The x axis runs from T-1 (pure noise) on the left to 0 on the
    right. One line style per branch, in the run's colour; lines are the seed mean, bands the
    min-max over seeds.
    """
    runs, datasets = list(weights), style.datasets_of(weights)
    colors = style.colors_for(runs, colors)
    fig, axes = style.panel_grid(len(datasets))
    for ax, dataset in zip(axes, datasets, strict=True):
        last_t = 0
        for run in (run for run in runs if dataset in weights[run]):
            w = np.asarray(weights[run][dataset], dtype=float)
            w = w.reshape(-1, *w.shape[-2:])  # (seeds, T, K); a lone (T, K) is one seed
            if w.shape[-1] != len(names):
                raise ValueError(f"{run}/{dataset}: {w.shape[-1]} weights for names {names}")
            t = np.arange(w.shape[1])[::-1]  # index i was sampled at t = T-1-i
            for branch, ls in zip(range(w.shape[-1]), itertools.cycle(BRANCH_STYLES)):
                style.mean_with_band(ax, t, w[:, :, branch], color=colors[run], ls=ls)
            last_t = max(last_t, w.shape[1] - 1)
        ax.set_xlim(last_t, 0)  # noise on the left, data on the right: the order of sampling
        ax.axhline(1.0 / len(names), color="0.75", lw=0.8, zorder=0)  # equal weighting
        ax.set(title=dataset, xlabel="timestep t (noise → data)", ylabel="mean weight")
    branches = [
        Line2D([], [], color="0.2", ls=ls, label=name)
        for ls, name in zip(itertools.cycle(BRANCH_STYLES), names)
    ]
    style.figure_legend(fig, style.run_handles(runs, colors) + branches)
    fig.suptitle("Branch weights during sampling (seed mean)\nband = min–max over seeds")
    return fig


def gated_samples(
    samples: Mapping[str, np.ndarray],
    gates: Mapping[str, np.ndarray],
    *,
    title: str,
    truth: np.ndarray | None = None,
    max_points: int = 5000,
    label: str = GATE_LABEL,
) -> Figure:
    """One scatter per run of (N, 2) samples coloured by their (N,) gate in [0, 1].

    protocol §3 dino_generated_samples.png. A run missing from `gates` (the baseline) is drawn in
    plain grey with "(no gate)" in its title; `truth`, if given, is a first panel of the
    dataset's training points. One colorbar serves all panels.
    """
    runs = list(samples)
    panels = (["data (training)"] if truth is not None else []) + runs
    limit = style.scatter_limit(list(samples.values()) + ([truth] if truth is not None else []))
    fig, axes = style.panel_grid(len(panels), panel_size=(3.0, 3.0))
    for ax, run in zip(axes, panels, strict=True):
        if run not in samples:  # the ground-truth panel
            style.scatter(ax, truth, limit=limit, max_points=max_points, color=style.TRUTH_COLOR)
            ax.set_title(run)
            continue
        gate = gates.get(run)
        shade = {"color": style.NEUTRAL_COLOR} if gate is None else {"values": gate}
        style.scatter(ax, samples[run], limit=limit, max_points=max_points, size=3.0, **shade)
        ax.set_title(run if gate is not None else f"{run} (no gate)")
    if any(run in gates for run in runs):
        style.gate_colorbar(fig, axes, label)
    fig.suptitle(title)
    return fig


def gate_histograms(
    gates: Mapping[str, np.ndarray],
    *,
    bins: int = 20,
    colors: Mapping[str, Color] | None = None,
    title: str = "Gate values at the last sampling step",
) -> Figure:
    """One histogram per run of gate values on fixed bins over [0, 1].

    protocol §3 dino_gating_weights_histogram.png. Each panel states the mean gate and the
    fractions below 0.05 and above 0.95: a gate stuck at 0 or 1 means one expert does the work.
    """
    runs = list(gates)
    colors = style.colors_for(runs, colors)
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig, axes = style.panel_grid(len(runs))
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
    fig.suptitle(title)
    return fig


def gate_field(
    fields: Mapping[str, Mapping[int, np.ndarray]],
    *,
    extent: tuple[float, float, float, float],
    overlay: Mapping[str, np.ndarray] | None = None,
    max_overlay_points: int = 3000,
    label: str = GATE_LABEL,
) -> Figure:
    """Gate value over the plane: rows = datasets, columns = timesteps (expert specialisation).

    fields[dataset][t] is a (G, G) grid (row = y, col = x) covering extent = (xmin, xmax, ymin,
    ymax). Columns run from the largest t (noise) to the smallest (data). `overlay[dataset]`,
    if given, is drawn as a faint scatter of the dataset's points. One shared colorbar.
    """
    datasets = list(fields)
    timesteps = sorted({t for by_t in fields.values() for t in by_t}, reverse=True)
    fig, axes = style.new_figure(len(datasets), len(timesteps), panel_size=style.SQUARE_PANEL)
    for (row, dataset), (col, t) in itertools.product(enumerate(datasets), enumerate(timesteps)):
        ax, field = axes[row, col], fields[dataset].get(t)
        if field is None:
            style.panel_note(ax, "not recorded")
        else:
            ax.imshow(
                np.asarray(field), origin="lower", extent=extent, cmap=style.GATE_CMAP,
                vmin=0.0, vmax=1.0, interpolation="nearest",
            )  # fmt: skip
        if overlay is not None and dataset in overlay:
            points = np.asarray(overlay[dataset], dtype=float)[:max_overlay_points]  # (n, 2)
            ax.scatter(
                points[:, 0], points[:, 1], s=0.6, color="black", alpha=0.35, linewidths=0,
                rasterized=True,
            )  # fmt: skip
        ax.set(xlim=extent[:2], ylim=extent[2:], aspect="equal")
        ax.label_outer()
    style.label_grid(axes, datasets, [f"t = {t}" for t in timesteps])
    style.gate_colorbar(fig, axes, label)
    fig.suptitle("Gate over the plane: where each expert works, noise → data")
    return fig
