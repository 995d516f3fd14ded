"""Figures of mixing weights, chosen from the architecture registry (`lowdiff.architectures`).

Runs whose architecture declares mixing of kind "branches" get the weight-evolution figure
(protocol §2), with the branch names of the declaration. Runs of kind "gate" get, for each figure
dataset (a report option; default dino), the samples coloured by the gate, the training loss and
the gate histograms (protocol §3), and one expert-specialisation view per run (gate over the plane
at several timesteps, for the figure datasets). No figure is chosen from an array's width.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from lowdiff import plots
from lowdiff.report.figures import (
    FIRST_SEED_NOTE,
    Context,
    FigurePlan,
    first_samples,
    loss_figure,
    truth_points,
)
from lowdiff.report.options import (
    figure_datasets,
    representatives,
    runs_by_kind,
    weight_cells,
)


def branch_plans(ctx: Context) -> list[FigurePlan]:
    """weight_evolution.png for the runs that mix branches (empty when there are none)."""
    runs = runs_by_kind(ctx.loaded, "branches")
    if not runs:
        return []
    mixing = ctx.loaded.mixing(runs[0])
    weights = {}
    for run in runs:
        by_dataset = {
            d: np.stack([c.weights["trace"] for c in cells])  # (seeds, T, K)
            for d in ctx.loaded.datasets
            if (cells := [c for c in weight_cells(ctx.loaded, run, d) if "trace" in c.weights])
        }
        if by_dataset:
            weights[run] = by_dataset
    names = ", ".join(mixing.names)
    draw = partial(plots.weight_evolution, weights, names=mixing.names, colors=ctx.colors)
    return [
        FigurePlan(
            "weight_evolution",
            "Branch weights during sampling",
            f"Mean branch weights ({names}: {mixing.meaning}) over the samples at each sampling "
            "step, from t = T−1 (noise, left) to t = 0 (data, right), one line style per branch "
            "and one colour per run; line = seed mean, band = min–max over seeds.",
            draw if weights else None,
        )
    ]


def _gates(ctx: Context, dataset: str, *, pooled: bool) -> dict[str, np.ndarray]:
    """run -> last-step gates (N,) of each gated run: the first seed, or all seeds pooled."""
    gates = {}
    for run in runs_by_kind(ctx.loaded, "gate"):
        cells = [c for c in weight_cells(ctx.loaded, run, dataset) if "final" in c.weights]
        if cells:
            chosen = cells if pooled else cells[:1]
            gates[run] = np.concatenate([cell.weights["final"][:, 0] for cell in chosen])
    return gates


def _gate_dataset_plans(ctx: Context, dataset: str, label: str) -> list[FigurePlan]:
    samples = {
        run: points
        for run in representatives(ctx.loaded)
        if (points := first_samples(ctx.loaded.finished(run, dataset))) is not None
    }
    first, pooled = _gates(ctx, dataset, pooled=False), _gates(ctx, dataset, pooled=True)
    truth = truth_points(ctx, [dataset])[dataset]
    scatter = partial(
        plots.gated_samples, samples, first, title=f"{dataset}: {label} at the last step",
        truth=truth,
    )  # fmt: skip
    histogram = partial(
        plots.gate_histograms, pooled, colors=ctx.colors, title=f"{dataset}: {label} values"
    )
    return [
        FigurePlan(
            f"{dataset}_generated_samples",
            f"{dataset} samples coloured by the {label}",
            f"The {dataset} training data and the samples of every run, from {FIRST_SEED_NOTE}; "
            f"gated runs are coloured by their {label} at the last sampling step (cool: near 0, "
            "warm: near 1), runs without one are grey.",
            scatter if samples else None,
        ),
        loss_figure(ctx, [dataset], f"{dataset}_train_loss", f"{dataset} training loss"),
        FigurePlan(
            f"{dataset}_gating_weights_histogram",
            f"{dataset} {label} histograms",
            f"Distribution of the {label} at the last sampling step over the {dataset} samples of "
            "each gated run, pooled over seeds; mass piled at 0 or 1 means one expert does the "
            "work.",
            histogram if pooled else None,
            f"no finished {dataset} cell of a gated run",
        ),
    ]


def _field_plan(ctx: Context, run: str, index: int, datasets, label: str) -> FigurePlan:
    fields, overlay, extent = {}, {}, None
    for dataset in datasets:
        cells = [c for c in weight_cells(ctx.loaded, run, dataset) if "field" in c.weights]
        if not cells:
            continue
        weights = cells[0].weights
        times = [int(t) for t in weights["field_timesteps"]]
        fields[dataset] = {t: weights["field"][i, :, :, 0] for i, t in enumerate(times)}
        extent = float(weights["field_extent"])
        if cells[0].samples is not None:
            overlay[dataset] = cells[0].samples
    build = None
    if fields and extent is not None:
        box = (-extent, extent, -extent, extent)
        build = partial(plots.gate_field, fields, extent=box, overlay=overlay)
    stem = "expert_specialisation" if index == 0 else f"expert_specialisation_{run}"
    return FigurePlan(
        stem,
        f"Expert specialisation of {run}",
        f"The {label} of {run} over the plane at several timesteps (columns, noise → data) for "
        f"{' and '.join(fields) or ' and '.join(datasets)} (rows), from the first seed, with "
        "that model's samples overlaid: warm regions go to expert 1, cool ones to expert 2; a "
        "uniform colour means no specialisation by region.",
        build,
        f"no recorded {label} field for {' or '.join(datasets)}",
    )


def gate_plans(ctx: Context) -> list[FigurePlan]:
    """The gate figures of every figure dataset and each gated run's specialisation view."""
    runs = runs_by_kind(ctx.loaded, "gate")
    if not runs:
        return []
    label = ctx.loaded.mixing(runs[0]).names[0]
    datasets = figure_datasets(ctx.loaded, ctx.options)
    plans = [plan for d in datasets for plan in _gate_dataset_plans(ctx, d, label)]
    plans += [_field_plan(ctx, run, i, datasets, label) for i, run in enumerate(runs)]
    return plans
