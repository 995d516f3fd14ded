"""The report's answer first: the forest plot of paired effects (`figures/effects.png`), the
headline per run across datasets, the margins and design behind the verdicts, and what each
undecided comparison would take.

Everything here reads the decided comparisons of the headline metric (`tables.metric_tables`,
one Holm family, four verdicts by `lowdiff.decisions`) and the headline of each run
(`summary.run_headline`: gap to the oracle floor closed, probability of improvement, stratified
bootstrap interval; `lowdiff.headline`).
"""

from __future__ import annotations

from collections.abc import Mapping

from lowdiff import plots, stats, summary
from lowdiff.metrics import METRICS
from lowdiff.report.document import Block, Bullets, Heading, Image, Paragraph, Table
from lowdiff.report.load import ExperimentResults
from lowdiff.report.options import representatives
from lowdiff.report.tables import MetricTable
from lowdiff.report.text import format_number, power_text, with_unit

EFFECTS_METRIC = summary.HEADLINE_METRIC
FIGURE = "figures/effects.png"


def verdict_key(comparison: stats.Comparison) -> str:
    """better / worse / equivalent / undecided / past the oracle value (a short label)."""
    phrase = stats.verdict(comparison)
    if stats.is_past_oracle(phrase):
        return "past the oracle value"
    return {
        stats.BETTER: "better",
        stats.WORSE: "worse",
        stats.EQUIVALENT: "equivalent",
    }.get(phrase, "undecided")


def _note(comparison: stats.Comparison) -> str:
    key = verdict_key(comparison)
    power = comparison.power
    if key != "undecided" or power is None:
        return key
    needed = (
        power.seeds_for_equivalence
        if power.kind == "equivalence" and power.seeds_for_equivalence is not None
        else power.seeds_for_effect
    )
    return f"undecided ({'> 1000' if needed is None else f'~{needed}'} seeds)"


def effect_rows(
    loaded: ExperimentResults, comparisons: Mapping[tuple[str, str], stats.Comparison]
) -> list[plots.EffectRow]:
    """One row per representative run x dataset: the tested (floor-distance) difference."""
    rows = []
    for run in representatives(loaded):
        for dataset in loaded.datasets:
            comparison = comparisons.get((run, dataset))
            if comparison is None or run == loaded.baseline:
                continue
            floor_aware = comparison.distance_difference is not None
            low = comparison.distance_ci_low if floor_aware else comparison.ci_low
            high = comparison.distance_ci_high if floor_aware else comparison.ci_high
            key = verdict_key(comparison)
            rows.append(
                plots.EffectRow(
                    label=f"{run} on {dataset} (n = {comparison.n})",
                    mean=comparison.tested_difference,
                    low=low,
                    high=high,
                    margin=comparison.margin,
                    verdict="worse" if key == "past the oracle value" else key,
                    note=_note(comparison),
                )
            )
    return rows


def _headline_table(loaded: ExperimentResults) -> Table | None:
    rows = []
    for run in representatives(loaded):
        found = summary.run_headline(loaded, run)
        if found is None:
            continue
        gaps = [
            f"{found.gap_closed[d]:+.1%}" if d in found.gap_closed else "—" for d in loaded.datasets
        ]
        low, high = found.aggregate_ci
        p_low, p_high = found.aggregate_probability_ci
        rows.append(
            (
                run,
                *gaps,
                f"{found.aggregate_gap_closed:+.1%} [{low:+.1%}, {high:+.1%}]",
                f"{found.aggregate_probability:.2f} [{p_low:.2f}, {p_high:.2f}]",
            )
        )
    if not rows:
        return None
    header = ("run", *loaded.datasets, "mean over datasets [95% CI]", "P(improvement) [95% CI]")
    return Table(header, tuple(rows))


def _margins_text(loaded: ExperimentResults, metric: str) -> str:
    explicit = metric in loaded.config.experiment.margins
    parts = []
    for dataset in loaded.datasets:
        margin = loaded.margin(dataset, metric)
        text = "none" if margin is None else with_unit(format_number(margin, metric), metric)
        parts.append(f"{dataset} ±{text}")
    source = (
        "set in experiment.margins"
        if explicit
        else "by default 1.96 × √2 × the standard deviation of the metric's oracle estimator "
        "(fresh draws of the true distribution, oracle.json): a difference within it cannot be "
        "told from measuring the same distribution twice"
    )
    return f"Equivalence margins δ of {METRICS[metric].label} ({source}): " + "; ".join(parts)


def _design_text(loaded: ExperimentResults) -> str:
    design = loaded.design
    if not design.sequential:
        return (
            f"Fixed-sample tests at α = {design.alpha} (Holm over the table's family): a "
            "comparison is better or worse when the paired t-test says so, equivalent when two "
            "one-sided tests put the difference within ±δ, undecided otherwise."
        )
    return (
        f"Group-sequential design (seeds added in rounds of {design.round_seeds} up to "
        f"{design.max_seeds}): O'Brien-Fleming-type alpha spending (Lan & DeMets 1983) at "
        f"α = {design.alpha}, Holm across the family at each look, equivalence by two "
        "one-sided tests at the same looks; a comparison decided at a look stays decided "
        f"(docs/protocol.md). Its scope: {_scope(loaded)}; comparisons outside it are "
        "fixed-sample tests."
    )


def _scope(loaded: ExperimentResults) -> str:
    settings = loaded.config.experiment
    datasets = ", ".join(settings.sequential_datasets) or "none"
    runs = ", ".join(settings.sequential_runs) or "every run"
    return f"datasets {datasets}; runs {runs}"


def effects_blocks(loaded: ExperimentResults, tables: Mapping[str, MetricTable]) -> list[Block]:
    """The verdicts section: forest plot, headline table, margins, design, power statements."""
    table = tables.get(EFFECTS_METRIC)
    rows = effect_rows(loaded, table.comparisons) if table is not None else []
    if not rows:
        return []
    info = METRICS[EFFECTS_METRIC]
    unit = f" ({info.unit})" if info.unit else ""
    figure = plots.forest_plot(
        rows,
        xlabel=f"Δ distance to the oracle floor, run − {loaded.baseline}{unit}; < 0 is better",
        title=f"{info.label}: paired effects against {loaded.baseline}, 95% intervals",
    )
    plots.save_figure(figure, loaded.root / FIGURE)
    blocks: list[Block] = [
        Heading(2, "Verdicts"),
        Image(FIGURE, "Paired effects", "Shaded: the equivalence band ±δ of each row."),
        Paragraph(_design_text(loaded) + " " + _margins_text(loaded, EFFECTS_METRIC) + "."),
    ]
    headline = _headline_table(loaded)
    if headline is not None:
        blocks += [
            Paragraph(
                f"Headline: the share of the baseline's gap to the {info.label} oracle floor "
                "that each run closes (1 − mean distance of the run / mean distance of the "
                "baseline, over paired seeds; negative: farther), per dataset and averaged, "
                "with a stratified bootstrap interval (seed pairs resampled within each "
                "dataset), and the probability that the run beats the baseline on a seed pair."
            ),
            headline,
        ]
    blocks += _noise_blocks(loaded)
    shown = set(representatives(loaded))
    blocks += _power_blocks(
        {key: c for key, c in table.comparisons.items() if key[0] in shown}, EFFECTS_METRIC
    )
    return blocks


def _noise_row(loaded: ExperimentResults, run: str, dataset: str) -> tuple[str, ...] | None:
    by_seed = summary.repeat_values(loaded, EFFECTS_METRIC, run, dataset)
    sizes = {values.size for values in by_seed.values()}
    if len(by_seed) < 2 or len(sizes) != 1 or sizes.pop() < 2:
        return None
    split = stats.variance_split([by_seed[seed] for seed in sorted(by_seed)])
    mean_variance = split.between_seeds + split.within_model / split.repeats
    from_sampling = (split.within_model / split.repeats) / mean_variance if mean_variance else 0.0
    advice = (
        "more seeds" if from_sampling < 0.5 else "more samples per model (cheaper than training)"
    )
    number = lambda v: format_number(v, EFFECTS_METRIC)  # noqa: E731
    return (
        run,
        dataset,
        f"{split.seeds} × {split.repeats}",
        number(split.between_seeds**0.5),
        number(split.within_model**0.5),
        f"{from_sampling:.0%}",
        advice,
    )


def _noise_blocks(loaded: ExperimentResults) -> list[Block]:
    """The variance split between seeds and within a model (eval.sample_repeats > 1)."""
    rows = [
        row
        for run in representatives(loaded)
        for dataset in loaded.datasets
        if (row := _noise_row(loaded, run, dataset)) is not None
    ]
    if not rows:
        return []
    header = (
        "run", "dataset", "seeds × repeats", "sd between seeds", "sd within model",
        "share of the mean's variance from sampling", "shrinks the interval more",
    )  # fmt: skip
    lead = (
        f"Measurement noise apart from training noise ({METRICS[EFFECTS_METRIC].label}): each "
        "model was sampled eval.sample_repeats times with different sampling seeds. One-way "
        "random-effects split (method of moments): within = the mean variance over a model's "
        "repeats, between = the variance of the seed means − within / repeats (floored at 0). "
        "The variance of a run's mean over S seeds is between / S + within / (S × repeats): "
        "more seeds shrink both parts, more samples only the second."
    )
    return [Paragraph(lead), Table(header, tuple(rows))]


def _power_blocks(
    comparisons: Mapping[tuple[str, str], stats.Comparison], metric: str
) -> list[Block]:
    items = [
        f"{run} on {dataset}: {power_text(comparison, metric)}"
        for (run, dataset), comparison in comparisons.items()
        if verdict_key(comparison) == "undecided" and comparison.p_value is not None
    ]
    if not items:
        return []
    lead = (
        "Undecided comparisons, with the smallest effect their seeds detect at 80% power and "
        "the seeds (in all) that would decide them, at Holm's strictest level α / m (m tested "
        "comparisons in the family; a conservative count). These use the observed paired sd, "
        "itself "
        "uncertain with few seeds: the range over its 95% interval is given, and the observed "
        "difference may be far from the true one."
    )
    return [Paragraph(lead), Bullets(tuple(items))]


__all__ = ["effect_rows", "effects_blocks", "verdict_key"]
