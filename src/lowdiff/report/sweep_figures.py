"""The figures of a sweep: every headline metric against each swept setting, per dataset.

The runs a `[sweep]` made are recorded in experiment.json (`ExperimentConfig.sweep`: name, the
run as written, the swept values). For each swept key, the runs are grouped into lines by their
source run and the values of the other swept keys, and each line's points are the seed means
and clipped 95% CIs of `report.tables`; the oracle floor of each metric is drawn with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from lowdiff import plots
from lowdiff.config import SweptRun
from lowdiff.metrics import METRICS
from lowdiff.report.figures import Context, FigurePlan
from lowdiff.report.overview import headline_metrics
from lowdiff.report.text import clipped_interval


def _line_label(run: SweptRun, key: str) -> str:
    others = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in run.values.items() if k != key]
    return "-".join([run.source, *others])


def _point(ctx: Context, metric: str, run: str, dataset: str) -> plots.Point | None:
    summary = ctx.tables[metric].summaries.get((run, dataset))
    if summary is None:
        return None
    interval = clipped_interval(summary, metric, dataset)
    low, high = (None, None) if interval is None else interval[:2]
    return plots.Point(summary.mean, low, high)


def _curves(ctx: Context, key: str, values: Sequence[str], metrics: Sequence[str]) -> dict:
    """[metric label][dataset][line] -> a Point per swept value of `key`."""
    lines: dict[str, dict[str, str]] = {}  # line -> str(value) -> run name
    for run in ctx.loaded.config.sweep:
        lines.setdefault(_line_label(run, key), {})[str(run.values[key])] = run.name
    return {
        METRICS[metric].label: {
            dataset: {
                line: [_point(ctx, metric, runs[v], dataset) if v in runs else None for v in values]
                for line, runs in lines.items()
            }
            for dataset in ctx.loaded.datasets
        }
        for metric in metrics
    }


def _plan(ctx: Context, key: str) -> FigurePlan:
    values = list(dict.fromkeys(str(run.values[key]) for run in ctx.loaded.config.sweep))
    metrics = headline_metrics(ctx.tables)
    curves = _curves(ctx, key, values, metrics)
    oracle = {
        METRICS[m].label: {
            d: v for d in ctx.loaded.datasets if (v := ctx.loaded.oracle_mean(d, m)) is not None
        }
        for m in metrics
    }
    first = {_line_label(run, key): run.name for run in reversed(ctx.loaded.config.sweep)}
    colors = {line: ctx.colors[name] for line, name in first.items()}
    leaf = key.rsplit(".", 1)[-1]
    draw = partial(
        plots.response_curves, curves, values=values, xlabel=key, oracle=oracle, colors=colors
    )
    return FigurePlan(
        f"sweep_{leaf}",
        f"Metrics against {key}",
        f"Each headline metric (rows) against the swept {key} (equally spaced, in the sweep's "
        "order) on each dataset (columns): seed means with 95% CI whiskers (clipped to the "
        "metric's range); the dashed line is the oracle floor.",
        draw if metrics and ctx.loaded.cells else None,
    )


def sweep_plans(ctx: Context) -> list[FigurePlan]:
    """One response-curve figure per swept key (none without a sweep)."""
    keys = list(dict.fromkeys(key for run in ctx.loaded.config.sweep for key in run.values))
    return [_plan(ctx, key) for key in keys]
