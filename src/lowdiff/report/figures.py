"""The report's figures: what each one shows, whether it can be drawn, and drawing them.

`figure_plans` lists every figure as a `FigurePlan` (file name, title, caption, and a function
that draws it, or None with the reason it is skipped): the common four (training loss, samples,
KL and modes-captured bars), the Series A branch weights when a run recorded two weights, and
the Series B dino figures and gate fields when a run recorded a gate. `write_figures` draws and
saves them into <root>/figures/ through `plots` and returns the blocks that show them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from matplotlib.figure import Figure

from lowdiff import plots
from lowdiff.report.document import Block, Heading, Image, Paragraph
from lowdiff.report.load import CellResult, ExperimentResults, weighted
from lowdiff.report.tables import MetricTable, num_modes

Pick = Callable[[list[CellResult]], "np.ndarray | None"]
NOTHING_FINISHED = "no finished cell to draw from"
FIRST_SEED_NOTE = "the first seed of each run and dataset (the next finished one if it is missing)"
SMOOTHING_NOTE = "seed mean smoothed with a Hanning window of 25 steps; the band spans the seeds"


@dataclass(frozen=True)
class FigurePlan:
    """One figure: its file name, title, description, and how to draw it (None: skipped)."""

    name: str
    title: str
    caption: str
    build: Callable[[], Figure] | None
    skipped: str = NOTHING_FINISHED  # why it is not drawn, when build is None


def _nested(
    loaded: ExperimentResults, runs: Sequence[str], datasets: Sequence[str], pick: Pick
) -> dict[str, dict[str, np.ndarray]]:
    """[run][dataset] -> pick(finished cells), leaving out empty picks and empty runs."""
    nested = {}
    for run in runs:
        by_dataset = {
            dataset: value
            for dataset in datasets
            if (value := pick(loaded.finished(run, dataset))) is not None
        }
        if by_dataset:
            nested[run] = by_dataset
    return nested


def _stacked_losses(cells: list[CellResult]) -> np.ndarray | None:
    losses = [cell.losses for cell in cells if cell.losses is not None]
    return np.stack(losses) if losses else None  # (seeds, steps)


def _first_samples(cells: list[CellResult]) -> np.ndarray | None:
    return next((cell.samples for cell in cells if cell.samples is not None), None)  # (N, 2)


def _stacked_traces(cells: list[CellResult]) -> np.ndarray | None:
    traces = [cell.weights["trace"] for cell in weighted(cells, 2)]
    return np.stack(traces) if traces else None  # (seeds, T, 2)


def _bar_inputs(table: MetricTable) -> tuple[dict, dict]:
    """means[run][dataset] and ci[run][dataset] = (low, high) for plots.metric_bars."""
    means: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, tuple[float, float]]] = {}
    for (run, dataset), summary in table.summaries.items():
        means.setdefault(run, {})[dataset] = summary.mean
        if summary.ci_low is not None and summary.ci_high is not None:
            intervals.setdefault(run, {})[dataset] = (summary.ci_low, summary.ci_high)
    return means, intervals


def _loss_figure(loaded: ExperimentResults, colors: Mapping[str, str]) -> FigurePlan:
    curves = _nested(loaded, loaded.run_names, loaded.datasets, _stacked_losses)
    return FigurePlan(
        "train_loss.png",
        "Training loss",
        "Training loss (MSE of the predicted noise) against training step, one panel per "
        f"dataset and one curve per run: {SMOOTHING_NOTE}.",
        partial(plots.loss_curves, curves, colors=colors) if curves else None,
    )


def _samples_figure(loaded: ExperimentResults, colors: Mapping[str, str]) -> FigurePlan:
    samples = _nested(loaded, loaded.run_names, loaded.datasets, _first_samples)
    return FigurePlan(
        "generated_images.png",
        "Generated samples",
        f"Samples of every run (rows) on every dataset (columns), from {FIRST_SEED_NOTE}.",
        partial(plots.sample_grid, samples, colors=colors) if samples else None,
    )


def _kl_figure(
    loaded: ExperimentResults, tables: Mapping[str, MetricTable], colors: Mapping[str, str]
) -> FigurePlan:
    means, intervals = _bar_inputs(tables["kl_divergence"])
    oracle = {
        dataset: value
        for dataset in loaded.datasets
        if (value := loaded.oracle_mean(dataset, "kl_divergence")) is not None
    }
    draw = partial(
        plots.metric_bars,
        means,
        ci=intervals or None,
        oracle=oracle or None,
        ylabel="KL (bits)",
        title="KL(data ‖ samples)",
        colors=colors,
    )
    return FigurePlan(
        "kl_divergence_comparison.png",
        "KL divergence",
        "Mean KL(data ‖ samples) in bits per dataset and run with 95% CI whiskers over seeds; "
        "the dashed line is the oracle floor (fresh draws of the true distribution). Lower is "
        "closer to the data.",
        draw if means else None,
    )


def _modes_figure(
    loaded: ExperimentResults, tables: Mapping[str, MetricTable], colors: Mapping[str, str]
) -> FigurePlan:
    means, intervals = _bar_inputs(tables["modes_captured"])
    true_modes = {dataset: num_modes(dataset) for dataset in loaded.datasets}
    draw = partial(
        plots.mode_bars, means, true_modes=true_modes, ci=intervals or None, colors=colors
    )
    return FigurePlan(
        "modes_captured.png",
        "Modes captured",
        "Fraction of the K true mixture components captured per dataset and run (mean over "
        "seeds, 95% CI whiskers); the dashed line marks all K modes.",
        draw if means else None,
    )


def _weight_figure(loaded: ExperimentResults, colors: Mapping[str, str]) -> FigurePlan:
    weights = _nested(loaded, loaded.runs_with_weights(2), loaded.datasets, _stacked_traces)
    return FigurePlan(
        "weight_evolution.png",
        "Branch weights during sampling (Series A)",
        "Mean weight of the global (solid) and local (dashed) branch over the samples at each "
        "sampling step, from t = T−1 (noise, left) to t = 0 (data, right), for every adaptive "
        "run; line = seed mean, band = min–max over seeds.",
        partial(plots.weight_evolution, weights, colors=colors) if weights else None,
    )


def _dino_gates(loaded: ExperimentResults, *, pooled: bool) -> dict[str, np.ndarray]:
    """run -> last-step dino gates (N,) of each gated run: the first seed, or all pooled."""
    gates = {}
    for run in loaded.runs_with_weights(1):
        cells = weighted(loaded.finished(run, "dino"), 1)
        if cells:
            chosen = cells if pooled else cells[:1]
            gates[run] = np.concatenate([cell.weights["final"][:, 0] for cell in chosen])
    return gates


def _dino_samples_figure(loaded: ExperimentResults) -> FigurePlan:
    samples = {
        run: points
        for run in loaded.run_names
        if (points := _first_samples(loaded.finished(run, "dino"))) is not None
    }
    gates = _dino_gates(loaded, pooled=False)
    draw = partial(plots.gated_samples, samples, gates, title="dino: gate at the last step")
    return FigurePlan(
        "dino_generated_samples.png",
        "dino samples coloured by the gate (Series B)",
        f"dino samples of every run, from {FIRST_SEED_NOTE}; gated runs are coloured by their "
        "gate g at the last sampling step (cool: g near 0, expert 2; warm: g near 1, expert "
        "1), runs without a gate are grey.",
        draw if samples else None,
    )


def _dino_loss_figure(loaded: ExperimentResults, colors: Mapping[str, str]) -> FigurePlan:
    curves = _nested(loaded, loaded.run_names, ["dino"], _stacked_losses)
    draw = partial(plots.loss_curves, curves, datasets=["dino"], colors=colors)
    return FigurePlan(
        "dino_train_loss.png",
        "dino training loss (Series B)",
        f"Training loss on dino per run: {SMOOTHING_NOTE}.",
        draw if curves else None,
    )


def _dino_histogram_figure(loaded: ExperimentResults, colors: Mapping[str, str]) -> FigurePlan:
    gates = _dino_gates(loaded, pooled=True)
    return FigurePlan(
        "dino_gating_weights_histogram.png",
        "dino gate histograms (Series B)",
        "Distribution of the gate g at the last sampling step over the dino samples of each "
        "gated run, pooled over seeds; mass piled at 0 or 1 means one expert does the work.",
        partial(plots.gate_histograms, gates, colors=colors) if gates else None,
        "no finished dino cell of a gated run",
    )


def _dino_figures(loaded: ExperimentResults, colors: Mapping[str, str]) -> list[FigurePlan]:
    plans = [
        _dino_samples_figure(loaded),
        _dino_loss_figure(loaded, colors),
        _dino_histogram_figure(loaded, colors),
    ]
    if "dino" not in loaded.datasets:
        absent = "dino is not a dataset of this experiment"
        plans = [FigurePlan(p.name, p.title, p.caption, None, absent) for p in plans]
    return plans


SPECIALISATION_DATASETS = ("dino", "moons")


def _field_inputs(
    loaded: ExperimentResults, run: str
) -> tuple[dict[str, dict[int, np.ndarray]], dict[str, np.ndarray], float | None]:
    """Gate fields [dataset][t] -> (G, G), overlay samples and extent, from the first seed."""
    fields, overlay, extent = {}, {}, None
    for dataset in SPECIALISATION_DATASETS:
        cell = next(
            (c for c in weighted(loaded.finished(run, dataset), 1) if "field" in c.weights),
            None,
        )
        if cell is None:
            continue
        weights = cell.weights
        timesteps = [int(t) for t in weights["field_timesteps"]]
        fields[dataset] = {t: weights["field"][i, :, :, 0] for i, t in enumerate(timesteps)}
        extent = float(weights["field_extent"])
        if cell.samples is not None:
            overlay[dataset] = cell.samples
    return fields, overlay, extent


def _specialisation_figures(loaded: ExperimentResults) -> list[FigurePlan]:
    """expert_specialisation.png for the first gated run, expert_specialisation_<run>.png after."""
    plans = []
    present = [d for d in SPECIALISATION_DATASETS if d in loaded.datasets]
    for index, run in enumerate(loaded.runs_with_weights(1)):
        name = "expert_specialisation.png" if index == 0 else f"expert_specialisation_{run}.png"
        fields, overlay, extent = _field_inputs(loaded, run)
        build = None
        if fields and extent is not None:
            box = (-extent, extent, -extent, extent)
            build = partial(plots.gate_field, fields, extent=box, overlay=overlay)
        why = "no recorded gate field for dino or moons"
        if not present:
            why = "neither dino nor moons is a dataset of this experiment"
        plans.append(
            FigurePlan(
                name,
                f"Expert specialisation of {run} (Series B)",
                f"Gate g of {run} over the plane at several timesteps (columns, noise → data) "
                f"for {' and '.join(fields) or 'dino and moons'} (rows), from the first seed, "
                "with that model's samples overlaid: warm regions are handled by expert 1, cool "
                "ones by expert 2; a uniform colour means no specialisation by region.",
                build,
                why,
            )
        )
    return plans


def figure_plans(
    loaded: ExperimentResults, tables: Mapping[str, MetricTable], colors: Mapping[str, str]
) -> list[FigurePlan]:
    """Every figure of the report: the common four, then Series A and B where they apply."""
    plans = [
        _loss_figure(loaded, colors),
        _samples_figure(loaded, colors),
        _kl_figure(loaded, tables, colors),
        _modes_figure(loaded, tables, colors),
    ]
    if loaded.runs_with_weights(2):
        plans.append(_weight_figure(loaded, colors))
    if loaded.runs_with_weights(1):
        plans += _dino_figures(loaded, colors) + _specialisation_figures(loaded)
    return plans


def write_figures(loaded: ExperimentResults, plans: Sequence[FigurePlan]) -> list[Block]:
    """Draw and save every planned figure into <root>/figures/; blocks that show them."""
    blocks: list[Block] = [Heading(2, "Figures")]
    for plan in plans:
        blocks.append(Heading(3, f"{plan.title} ({plan.name})"))
        if plan.build is None:
            blocks.append(Paragraph(f"Not drawn: {plan.skipped}."))
            continue
        plots.save_figure(plan.build(), loaded.root / "figures" / plan.name)
        blocks.append(Image(f"figures/{plan.name}", plan.title, plan.caption))
    return blocks
