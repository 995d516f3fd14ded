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
from dataclasses import dataclass, replace

import numpy as np

from lowdiff import decisions, stats
from lowdiff.metrics import METRICS
from lowdiff.report.load import ExperimentResults

# The columns of every run table, in order, and the number format of each.
TABLE_METRICS: tuple[str, ...] = (
    "kl_divergence",
    "eval_loss",
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
    margins: Mapping[str, float | None] | None = None,
    design: decisions.Design | Callable[[str, str], decisions.Design] | None = None,
    power: bool = True,
) -> dict[tuple[str, str], stats.Comparison]:
    """Each candidate vs `reference` per dataset, paired on their common seeds; one Holm family.

    Name the catalogue `metric` to judge it as the catalogue says: for goal "oracle" by the
    distance to `oracle[dataset]` (the dataset's oracle floor; None or absent: not judged),
    else by its direction. `lower_is_better` alone gives a plain direction (no catalogue).
    Returns {(candidate, dataset): Comparison} for every pair that shares at least one seed.
    Each is decided by `decisions.decide_family` (four verdicts): `margins[dataset]` is the
    equivalence margin of the tested difference (None: no equivalence test), `design` the
    sequential design, for all or per (candidate, dataset) (None: a fixed-sample test at
    `alpha`); `power=False` skips the power statements of undecided comparisons (simulations).
    """
    judge = _judge(metric, lower_is_better)
    keys, comparisons, tested = [], [], []
    for run in candidates:
        for dataset in values.get(run, {}):
            candidate, baseline = paired(values, run, reference, dataset)
            if not candidate:
                continue
            floor = None if oracle is None else oracle.get(dataset)
            keys.append((run, dataset))
            comparisons.append(judge(candidate, baseline, floor, alpha))
            tested.append(tested_differences(candidate, baseline, floor, metric))
    margin_of = [None if margins is None else margins.get(dataset) for _, dataset in keys]
    design = design or decisions.Design(alpha=alpha)
    designs = [design if isinstance(design, decisions.Design) else design(*key) for key in keys]
    decided = decide(comparisons, tested, margin_of, designs, power=power)
    return dict(zip(keys, decided, strict=True))


def decide(
    comparisons: Sequence[stats.Comparison],
    tested: Sequence[np.ndarray],
    margins: Sequence[float | None],
    designs: Sequence[decisions.Design],
    *,
    power: bool = True,
) -> list[stats.Comparison]:
    """One family: Holm-corrected (`stats.correct_family`, for the adjusted p's shown) and
    decided by `decisions.decide_family` (better / worse / equivalent / undecided, at the
    design's looks); `tested` holds each comparison's per-seed tested differences."""
    if not comparisons:
        return []
    corrected = stats.correct_family(comparisons, alpha=designs[0].alpha)
    decided = decisions.decide_family(tested, margins, designs, power=power)
    return [
        _with_decision(comparison, decision, margin, design)
        for comparison, decision, margin, design in zip(
            corrected, decided, margins, designs, strict=True
        )
    ]


def paired(values: Values, run: str, reference: str, dataset: str) -> tuple[list, list]:
    """(candidate, reference) values over the seeds both finished, in seed order."""
    by_seed = values.get(run, {}).get(dataset, {})
    reference_values = values.get(reference, {}).get(dataset, {})
    common = sorted(seed for seed in by_seed if seed in reference_values)
    return [by_seed[s] for s in common], [reference_values[s] for s in common]


def tested_differences(
    candidate: list[float], baseline: list[float], floor: float | None, metric: str | None
) -> np.ndarray:
    """Per seed, the difference the verdict is about: of distances to the floor, or raw."""
    candidate_values, baseline_values = np.asarray(candidate), np.asarray(baseline)
    if metric is not None and METRICS[metric].goal == "oracle":
        if floor is None:
            return np.zeros(0)  # not judged
        return np.abs(candidate_values - floor) - np.abs(baseline_values - floor)  # (n,)
    return candidate_values - baseline_values


def _with_decision(
    comparison: stats.Comparison,
    decision: decisions.Decision,
    margin: float | None,
    design: decisions.Design,
) -> stats.Comparison:
    """The comparison re-marked by the family's decision (fixed sample: the same Holm test)."""
    if comparison.oracle is None and comparison.lower_is_better is None:
        return comparison  # not judged: no floor
    return replace(
        comparison,
        significant=decision.significant,
        equivalent=decision.equivalent,
        margin=margin,
        equivalence_p=decision.equivalence_p,
        decided_at=decision.decided_at,
        nominal_alpha=decision.nominal_alpha,
        max_seeds=design.max_seeds,
        power=decision.power,
    )


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


def metric_tables(
    loaded: ExperimentResults, metrics: Sequence[str] = TABLE_METRICS
) -> dict[str, MetricTable]:
    """Every table metric (or `metrics`): summaries of each (run, dataset), comparisons with
    the baseline."""
    tables = {}
    for metric in metrics:
        values = metric_values(loaded, metric)
        summaries = {
            (run, dataset): stats.summarize(list(by_seed.values()))
            for run, by_dataset in values.items()
            for dataset, by_seed in by_dataset.items()
        }
        candidates = [run for run in loaded.run_names if run != loaded.baseline]
        floors = {dataset: loaded.oracle_mean(dataset, metric) for dataset in loaded.datasets}
        comparisons = compare_runs(
            values,
            loaded.baseline,
            candidates,
            metric=metric,
            oracle=floors,
            margins={dataset: loaded.margin(dataset, metric) for dataset in loaded.datasets},
            design=lambda run, dataset: loaded.design_for(run, loaded.baseline, dataset),
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
