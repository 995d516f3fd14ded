"""Metric tables: per-seed values -> summaries and Holm-corrected comparisons, and their text.

`metric_tables` turns the finished cells into one `MetricTable` per table metric: a
`stats.Summary` (mean, 95% CI over seeds) per (run, dataset) and a `stats.Comparison` of each run
with the baseline, paired over the seeds both finished and Holm-corrected over all runs x
datasets of that metric (`compare_runs`). How the numbers are written is `report.text`'s concern
(labels, units and formats from the metric catalogue).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lowdiff import stats
from lowdiff.metrics import METRICS
from lowdiff.report.load import ExperimentResults

# The metrics of the report's tables, in order.
TABLE_METRICS: tuple[str, ...] = (
    "kl_divergence",
    "eval_loss",
    "modes_captured",
    "high_quality_fraction",
    "mode_tv_distance",
    "training_time",
    "inference_time",
)
ORACLE_METRICS = ("kl_divergence", "modes_captured", "high_quality_fraction", "mode_tv_distance")
ALPHA = 0.05


# --- statistics: per-seed values -> summaries and Holm-corrected comparisons -------------------

Values = Mapping[str, Mapping[str, Mapping[int, float]]]  # run -> dataset -> seed -> value


@dataclass(frozen=True)
class MetricTable:
    """One metric over the experiment: summaries per (run, dataset), comparisons vs baseline."""

    metric: str
    summaries: dict[tuple[str, str], stats.Summary]
    comparisons: dict[tuple[str, str], stats.Comparison]  # Holm-corrected as one family


def compare_runs(
    values: Values,
    reference: str,
    candidates: Sequence[str],
    *,
    lower_is_better: bool,
    alpha: float = ALPHA,
) -> dict[tuple[str, str], stats.Comparison]:
    """Each candidate vs `reference` per dataset, paired on their common seeds; one Holm family.

    Returns {(candidate, dataset): Comparison} for every pair that shares at least one seed.
    """
    keys, comparisons = [], []
    for run in candidates:
        for dataset, by_seed in values.get(run, {}).items():
            reference_values = values.get(reference, {}).get(dataset, {})
            common = sorted(seed for seed in by_seed if seed in reference_values)
            if not common:
                continue
            comparison = stats.paired_comparison(
                [by_seed[seed] for seed in common],
                [reference_values[seed] for seed in common],
                lower_is_better=lower_is_better,
                alpha=alpha,
            )
            keys.append((run, dataset))
            comparisons.append(comparison)
    corrected = stats.correct_family(comparisons, alpha=alpha) if comparisons else []
    return dict(zip(keys, corrected, strict=True))


def metric_values(loaded: ExperimentResults, metric: str) -> dict[str, dict[str, dict]]:
    return {
        run: {
            dataset: values
            for dataset in loaded.datasets
            if (values := loaded.values(metric, run, dataset))
        }
        for run in loaded.run_names
    }


def metric_tables(loaded: ExperimentResults) -> dict[str, MetricTable]:
    """Every table metric: summaries of each (run, dataset), comparisons with the baseline."""
    tables = {}
    for metric in TABLE_METRICS:
        values = metric_values(loaded, metric)
        summaries = {
            (run, dataset): stats.summarize(list(by_seed.values()))
            for run, by_dataset in values.items()
            for dataset, by_seed in by_dataset.items()
        }
        candidates = [run for run in loaded.run_names if run != loaded.baseline]
        comparisons = compare_runs(
            values, loaded.baseline, candidates, lower_is_better=_lower_is_better(metric)
        )
        tables[metric] = MetricTable(metric, summaries, comparisons)
    return tables


def _lower_is_better(metric: str) -> bool:
    direction = METRICS[metric].lower_is_better
    if direction is None:
        raise ValueError(f"metric {metric!r} has no direction; it cannot be compared")
    return direction
