"""Metric tables: per-seed values -> summaries and Holm-corrected comparisons, and their text.

`metric_tables` turns the finished cells into one `MetricTable` per table metric: a
`stats.Summary` (mean, 95% CI over seeds) per (run, dataset) and a `stats.Comparison` of each run
with the baseline, paired over the seeds both finished and Holm-corrected over all runs x
datasets of that metric (`compare_runs`). The second half formats those numbers for the report
(`format_number`, `format_summary`, `format_delta`, `describe_comparison`), with the column
metrics, their number formats, the significance level and the mark of a significant difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lowdiff import data, stats
from lowdiff.metrics import METRICS
from lowdiff.report.load import ExperimentResults

# The columns of every run table, in order, and the number format of each.
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
FORMATS = {
    "kl_divergence": ".3f",
    "eval_loss": ".4f",
    "modes_captured": ".1f",
    "high_quality_fraction": ".3f",
    "mode_tv_distance": ".3f",
    "training_time": ".3g",
    "inference_time": ".3g",
}
ALPHA = 0.05
MARK = "*"  # significant after Holm correction


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


# --- formatting of numbers and comparisons ------------------------------------------------------


def format_number(value: float, metric: str, *, signed: bool = False) -> str:
    text = format(value, ("+" if signed else "") + FORMATS.get(metric, ".3g"))
    return text.replace("-", "−")  # a real minus sign reads better in tables


def _half_width(summary: stats.Summary) -> float | None:
    if summary.ci_low is None or summary.ci_high is None:
        return None
    return (summary.ci_high - summary.ci_low) / 2.0


def format_summary(summary: stats.Summary, metric: str, num_seeds: int) -> str:
    """'mean ± half-CI', '(n = 2 of 3 seeds)' when seeds are missing, '(1 seed)' for one."""
    half = _half_width(summary)
    text = format_number(summary.mean, metric)
    text += " (1 seed, no interval)" if half is None else f" ± {format_number(half, metric)}"
    if summary.n < num_seeds and summary.n > 1:
        text += f" (n = {summary.n} of {num_seeds})"
    return text


def format_delta(comparison: stats.Comparison, metric: str) -> str:
    """'Δ −0.120* better' where the corrected test says so, else 'Δ −0.120' (+ 'untested')."""
    text = f"Δ {format_number(comparison.mean_difference, metric, signed=True)}"
    phrase = stats.verdict(comparison)
    if phrase == stats.BETTER:
        return f"{text}{MARK} better"
    if phrase == stats.WORSE:
        return f"{text}{MARK} worse"
    if phrase in (stats.NOT_TESTED_SINGLE_SEED, stats.NOT_TESTED_ZERO_VARIANCE):
        return f"{text} (untested)"
    return text


def describe_comparison(comparison: stats.Comparison, metric: str, unit: str = "") -> str:
    """The verdict with its numbers: 'better (significant) (Δ −0.12 bits, 95% CI [...], p = ..)'."""
    delta = format_number(comparison.mean_difference, metric, signed=True) + unit
    details = [f"Δ {delta}"]
    if comparison.ci_low is not None and comparison.ci_high is not None and comparison.n > 1:
        low, high = (format_number(v, metric) for v in (comparison.ci_low, comparison.ci_high))
        details.append(f"uncorrected 95% CI [{low}, {high}]")
    if comparison.p_value_adjusted is not None:
        details.append(f"Holm-adjusted p = {comparison.p_value_adjusted:.3g}")
    details.append(f"{comparison.n} paired seed{'s' if comparison.n != 1 else ''}")
    return f"{stats.verdict(comparison)} ({', '.join(details)})"


def num_modes(dataset: str) -> int:
    return data.get_dataset(dataset).components.num_components
