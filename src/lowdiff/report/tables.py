"""Metric tables: per-seed values -> summaries and Holm-corrected comparisons, and their text.

`metric_tables` turns the finished cells into one `MetricTable` per table metric: a
`stats.Summary` (mean, 95% CI over seeds) per (run, dataset) and a `stats.Comparison` of each run
with the baseline, paired over the seeds both finished and Holm-corrected over all runs x
datasets of that metric (`compare_runs`). Every comparison is floor-aware: a metric whose
catalogue goal is "oracle" is judged by the distance to its oracle floor of that dataset
(oracle.json), so a run is "better" only when significantly closer to the floor and a run
significantly past it is said to be so, in the catalogue's words (`stats.verdict`); without a
floor such a metric is not judged. Metrics with goal "lower"/"higher" keep the plain direction.
How the numbers are written is `report.text`'s concern (labels, units and formats from the
metric catalogue).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lowdiff import stats
from lowdiff.metrics import METRICS
from lowdiff.report.load import ExperimentResults

# The columns of every run table, in order, and the number format of each.
TABLE_METRICS: tuple[str, ...] = (
    "kl_divergence",
    "eval_loss",
    "excess_eval_loss",
    "ode_kl_bits",
    "sample_log_density",
    "modes_captured",
    "modes_covered",
    "high_quality_fraction",
    "mode_tv_distance",
    "precision",
    "recall",
    "density",
    "coverage",
    "w2",
    "sliced_w2",
    "training_time",
    "inference_time",
)
# the metrics judged against their oracle floor (catalogue goal "oracle")
ORACLE_METRICS = tuple(m for m in TABLE_METRICS if METRICS[m].goal == "oracle")
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
    lower_is_better: bool | None = None,
    metric: str | None = None,
    oracle: Mapping[str, float | None] | None = None,
    alpha: float = ALPHA,
) -> dict[tuple[str, str], stats.Comparison]:
    """Each candidate vs `reference` per dataset, paired on their common seeds; one Holm family.

    Name the catalogue `metric` to judge it as the catalogue says: for goal "oracle" by the
    distance to `oracle[dataset]` (the dataset's oracle floor; None or absent: not judged),
    else by its direction. `lower_is_better` alone gives a plain direction (no catalogue).
    Returns {(candidate, dataset): Comparison} for every pair that shares at least one seed.
    """
    judge = _judge(metric, lower_is_better)
    keys, comparisons = [], []
    for run in candidates:
        for dataset, by_seed in values.get(run, {}).items():
            reference_values = values.get(reference, {}).get(dataset, {})
            common = sorted(seed for seed in by_seed if seed in reference_values)
            if not common:
                continue
            candidate = [by_seed[seed] for seed in common]
            baseline = [reference_values[seed] for seed in common]
            floor = None if oracle is None else oracle.get(dataset)
            keys.append((run, dataset))
            comparisons.append(judge(candidate, baseline, floor, alpha))
    corrected = stats.correct_family(comparisons, alpha=alpha) if comparisons else []
    return dict(zip(keys, corrected, strict=True))


Judge = Callable[[list[float], list[float], float | None, float], stats.Comparison]


def _judge(metric: str | None, lower_is_better: bool | None) -> Judge:
    """How one (candidate, baseline) pair is compared: by the floor, or by a direction."""
    if (metric is None) == (lower_is_better is None):
        raise ValueError(
            "give exactly one of metric (a METRICS name, judged as the catalogue says) or "
            f"lower_is_better (a plain direction); got {metric=}, {lower_is_better=}"
        )
    if metric is not None and metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    info = METRICS[metric] if metric is not None else None
    if info is None or info.goal != "oracle":
        direction = lower_is_better if info is None else info.goal == "lower"

        def plain(candidate, baseline, floor, alpha):
            return stats.paired_comparison(
                candidate, baseline, lower_is_better=direction, alpha=alpha
            )

        return plain
    past_side = {"lower": "below", "higher": "above", None: None}[info.improves]
    wording = {"below": info.below_oracle, "above": info.above_oracle}

    def floor_aware(candidate, baseline, floor, alpha):
        if floor is None:
            return stats.not_judged(candidate, baseline, alpha=alpha)
        return stats.paired_comparison(
            candidate,
            baseline,
            oracle=floor,
            past_side=past_side,
            past_wording=wording,
            alpha=alpha,
        )

    return floor_aware


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
        floors = {dataset: loaded.oracle_mean(dataset, metric) for dataset in loaded.datasets}
        comparisons = compare_runs(
            values, loaded.baseline, candidates, metric=metric, oracle=floors
        )
        tables[metric] = MetricTable(metric, summaries, comparisons)
    return tables


def _lower_is_better(metric: str) -> bool:
    """The direction in which `metric` improves (towards its floor, for oracle metrics).

    For labels only: comparisons of oracle metrics are made on the distance to the floor."""
    direction = METRICS[metric].lower_is_better
    if direction is None:
        raise ValueError(f"metric {metric!r} has no direction; it cannot be compared")
    return direction
