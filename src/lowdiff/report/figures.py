"""The report's figures: what each one shows, whether it can be drawn, and drawing them.

`common_plans` lists the figures as a `FigurePlan` (file stem, title, caption, and a function
that draws it, or None with the reason it is skipped): the common ones (training loss, samples
with the data as ground truth, bars of every headline metric and of modes captured), the
figures of mixing weights chosen from the architecture registry (kind "branches": the weight
evolution; kind "gate": gated samples, loss, gate histograms and gate fields of the series
datasets; `mixing_figures`), and the reverse process of each dataset (`process_figures`).
Identical runs are drawn once. `write_figures` draws and saves them into <root>/figures/.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from lowdiff import data, plots
from lowdiff.metrics import METRICS
from lowdiff.report.document import Block, Heading, Image, Paragraph
from lowdiff.report.load import CellResult, ExperimentResults
from lowdiff.report.options import ReportOptions, divergence_note, representatives
from lowdiff.report.overview import headline_metrics
from lowdiff.report.tables import MetricTable
from lowdiff.report.text import clipped_interval, num_modes

if TYPE_CHECKING:  # only plots imports matplotlib
    from matplotlib.figure import Figure

NOTHING_FINISHED = "no finished cell to draw from"
FIRST_SEED_NOTE = "the first seed of each run and dataset (the next finished one if it is missing)"
SMOOTHING_NOTE = "seed mean smoothed with a Hanning window of 25 steps; the band spans the seeds"
SEED_DOTS_BELOW = 5  # per-seed dots beside the bars when there are fewer seeds than this
TRUTH_POINTS = 5000
SCATTER_POINTS = 5000  # per panel of the sample grid: enough to see every mode, light to embed


@dataclass(frozen=True)
class FigurePlan:
    """One figure: its file stem, title, description, and how to draw it (None: skipped)."""

    stem: str
    title: str
    caption: str
    build: Callable[[], Figure] | None
    skipped: str = NOTHING_FINISHED  # why it is not drawn, when build is None
    dpi: int = plots.style.DPI  # dense small multiples are saved at a lower resolution


@dataclass(frozen=True)
class Context:
    loaded: ExperimentResults
    tables: Mapping[str, MetricTable]
    colors: Mapping[str, str]
    options: ReportOptions

    @property
    def runs(self) -> list[str]:
        return representatives(self.loaded)


def nested(
    ctx: Context,
    runs: Sequence[str],
    datasets: Sequence[str],
    pick: Callable[[list[CellResult]], np.ndarray | None],
) -> dict[str, dict[str, np.ndarray]]:
    """[run][dataset] -> pick(finished cells), leaving out empty picks and empty runs."""
    nested = {}
    for run in runs:
        cells = {d: ctx.loaded.finished(run, d) for d in datasets}
        by_dataset = {d: value for d, c in cells.items() if (value := pick(c)) is not None}
        if by_dataset:
            nested[run] = by_dataset
    return nested


def _stacked_losses(cells: list[CellResult]) -> np.ndarray | None:
    losses = [cell.losses for cell in cells if cell.losses is not None]
    return np.stack(losses) if losses else None  # (seeds, steps)


def first_samples(cells: list[CellResult]) -> np.ndarray | None:
    return next((cell.samples for cell in cells if cell.samples is not None), None)  # (N, 2)


def truth_points(ctx: Context, datasets: Sequence[str]) -> dict[str, np.ndarray]:
    """The first training points of each dataset (the same points the models learned from)."""
    size = ctx.loaded.config.experiment.num_points
    return {d: data.load(d, size)[:TRUTH_POINTS] for d in datasets}


def loss_figure(ctx: Context, datasets: Sequence[str], stem: str, title: str) -> FigurePlan:
    curves = nested(ctx, ctx.runs, datasets, _stacked_losses)
    draw = partial(plots.loss_curves, curves, datasets=list(datasets), colors=ctx.colors)
    return FigurePlan(
        stem,
        title,
        "Training loss (MSE of the predicted noise) against training step, one panel per "
        f"dataset and one curve per run: {SMOOTHING_NOTE}.",
        draw if curves else None,
    )


def loss_difference_figure(ctx: Context) -> FigurePlan:
    baseline = ctx.loaded.baseline
    runs = [baseline, *(run for run in ctx.runs if run != baseline)]
    curves = nested(ctx, runs, ctx.loaded.datasets, _stacked_losses)
    draw = partial(
        plots.loss_differences, curves, baseline=baseline, datasets=ctx.loaded.datasets,
        colors=ctx.colors,
    )  # fmt: skip
    drawable = baseline in curves and len(curves) > 1
    return FigurePlan(
        "train_loss_difference",
        f"Training loss against {baseline}",
        f"Each run's training loss minus {baseline}'s, seed by seed (a seed fixes the data "
        "order and noise), Hanning-25 smoothed; the band is the 95% t interval over seeds and "
        f"the dashed zero line is {baseline}. Below zero: lower training loss at that step.",
        draw if drawable else None,
        "no other run with a finished cell beside the baseline's",
    )


def _modes_saturated(ctx: Context) -> bool:
    """Every finished cell captured all K modes of its dataset: a figure that cannot vary."""
    table = ctx.tables["modes_captured"]
    return all(
        value == num_modes(dataset)
        for run, dataset in table.summaries
        for value in ctx.loaded.values("modes_captured", run, dataset).values()
    )


def _samples_figure(ctx: Context) -> FigurePlan:
    loaded = ctx.loaded
    samples = nested(ctx, ctx.runs, loaded.datasets, first_samples)
    notes = {
        run: {d: note for d in loaded.datasets if (note := divergence_note(loaded, run, d))}
        for run in ctx.runs
    }
    notes = {run: by_d for run, by_d in notes.items() if by_d}
    # every run in the experiment's order, a run with only diverged cells included
    samples = {run: samples.get(run, {}) for run in ctx.runs if run in samples or run in notes}
    draw = partial(
        plots.sample_grid, samples, truth=truth_points(ctx, loaded.datasets), notes=notes,
        colors=ctx.colors, max_points=SCATTER_POINTS,
    )  # fmt: skip
    return FigurePlan(
        "generated_images",
        "Generated samples",
        "The training data (first row, grey) and the samples of every run (rows) on every "
        f"dataset (columns), from {FIRST_SEED_NOTE}.",
        draw if samples or notes else None,
    )


def _bar_inputs(ctx: Context, table: MetricTable) -> tuple[dict, dict, dict | None]:
    """means, clipped intervals and (with few seeds) per-seed values, [run][dataset]."""
    means: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, tuple[float, float]]] = {}
    seeds: dict[str, dict[str, list[float]]] = {}
    for (run, dataset), summary in table.summaries.items():
        if run not in ctx.runs:
            continue
        means.setdefault(run, {})[dataset] = summary.mean
        interval = clipped_interval(summary, table.metric, dataset)
        if interval is not None:
            intervals.setdefault(run, {})[dataset] = interval[:2]
        values = ctx.loaded.values(table.metric, run, dataset)
        seeds.setdefault(run, {})[dataset] = list(values.values())
    few = len(ctx.loaded.seeds) < SEED_DOTS_BELOW
    return means, intervals, seeds if few else None


def _metric_figure(ctx: Context, metric: str) -> FigurePlan:
    info = METRICS[metric]
    means, intervals, seeds = _bar_inputs(ctx, ctx.tables[metric])
    oracle = {
        d: v for d in ctx.loaded.datasets if (v := ctx.loaded.oracle_mean(d, metric)) is not None
    }
    unit = f" ({info.unit})" if info.unit else ""
    draw = partial(
        plots.metric_bars, means, ci=intervals or None, oracle=oracle or None, per_seed=seeds,
        bounds=info.bounds, ylabel=f"{info.label}{unit}", title=info.description,
        colors=ctx.colors,
    )  # fmt: skip
    stem = "kl_divergence_comparison" if metric == "kl_divergence" else f"{metric}_comparison"
    dots = "; dots are the seeds" if seeds else ""
    return FigurePlan(
        stem,
        info.label,
        f"Mean {info.label}{unit} per dataset and run with 95% CI whiskers over seeds (clipped "
        f"to the metric's range){dots}; the dashed line is the oracle floor (fresh draws of "
        "the true distribution).",
        draw if means else None,
    )


def _modes_figure(ctx: Context) -> FigurePlan:
    means, intervals, seeds = _bar_inputs(ctx, ctx.tables["modes_captured"])
    true_modes = {d: num_modes(d) for d in ctx.loaded.datasets}
    draw = partial(
        plots.mode_bars, means, true_modes=true_modes, ci=intervals or None, per_seed=seeds,
        colors=ctx.colors,
    )  # fmt: skip
    return FigurePlan(
        "modes_captured",
        "Modes captured",
        "Fraction of the K true mixture components captured per dataset and run (mean over "
        "seeds, 95% CI whiskers clipped to [0, K]); the dashed line marks all K modes.",
        draw if means else None,
    )


def common_plans(ctx: Context) -> list[FigurePlan]:
    plans = [
        loss_figure(ctx, ctx.loaded.datasets, "train_loss", "Training loss"),
        loss_difference_figure(ctx),
        _samples_figure(ctx),
    ]
    plans += [_metric_figure(ctx, m) for m in headline_metrics(ctx.tables)]
    if "modes_captured" in ctx.tables and ctx.tables["modes_captured"].summaries:
        if _modes_saturated(ctx):
            plans.append(
                FigurePlan(
                    "modes_captured",
                    "Modes captured",
                    "",
                    None,
                    "every run captured all K modes on every dataset in every seed, so the "
                    "figure could not vary; the coverage and precision metrics separate the runs",
                )  # fmt: skip
            )
        else:
            plans.append(_modes_figure(ctx))
    return plans


def write_figures(ctx: Context, plans: Sequence[FigurePlan]) -> list[Block]:
    """Draw and save every planned figure into <root>/figures/; blocks that show them."""
    blocks: list[Block] = [Heading(2, "Figures")]
    for plan in plans:
        name = plan.stem + ctx.options.figure_format
        blocks.append(Heading(3, f"{plan.title} ({name})"))
        if plan.build is None:
            blocks.append(Paragraph(f"Not drawn: {plan.skipped}."))
            continue
        plots.save_figure(plan.build(), ctx.loaded.root / "figures" / name, dpi=plan.dpi)
        blocks.append(Image(f"figures/{name}", plan.title, plan.caption))
    return blocks
