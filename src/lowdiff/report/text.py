"""Numbers and comparisons as report text, with labels, units and formats from `METRICS`.

Every metric is shown with its catalogue format and unit; an interval of a bounded metric is
clipped to its range (`METRICS[m].bounds`; modes captured also to the dataset's K) and then
written as [low, high], since a clipped interval is no longer mean ± half-width. With one seed
a value has no interval and a comparison no test: the report says so once, not in every cell.
Times are written as measured: the wall clock of the batch that trained (or sampled) the model,
with the number of models in that batch, never a per-model share with an invented ±.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from lowdiff import data, decisions, stats
from lowdiff.cells import batch_of
from lowdiff.metrics import METRICS
from lowdiff.report.load import CellResult

STAR = "★"  # better by the corrected, floor-aware test
WORSE_MARK = "▼"  # worse by the same test
EQUIVALENT_MARK = "≈"  # equivalent within the margin (TOST)


def verdict_mark(comparison: stats.Comparison) -> str:
    """★ better, ▼ worse, ≈ equivalent, '' otherwise (undecided, untested, past the oracle)."""
    phrase = stats.verdict(comparison)
    return {stats.BETTER: STAR, stats.WORSE: WORSE_MARK, stats.EQUIVALENT: EQUIVALENT_MARK}.get(
        phrase, ""
    )


def num_modes(dataset: str) -> int:
    return data.get_dataset(dataset).components.num_components


def format_number(value: float, metric: str, *, signed: bool = False) -> str:
    spec = METRICS[metric].format if metric in METRICS else ".3g"
    text = format(value, ("+" if signed else "") + spec)
    return text.replace("-", "−")  # a real minus sign reads better in tables


def with_unit(text: str, metric: str) -> str:
    unit = METRICS[metric].unit if metric in METRICS else ""
    return f"{text} {unit}" if unit else text


def metric_title(metric: str) -> str:
    """Column title: label, unit and the direction of improvement (↓ lower, ↑ higher)."""
    info = METRICS[metric]
    unit = f" ({info.unit})" if info.unit else ""
    return info.label + unit + {True: " ↓", False: " ↑", None: ""}[info.lower_is_better]


def bounds_of(metric: str, dataset: str) -> tuple[float | None, float | None]:
    low, high = METRICS[metric].bounds if metric in METRICS else (None, None)
    if metric == "modes_captured":
        high = float(num_modes(dataset))
    return low, high


def clipped_interval(
    summary: stats.Summary, metric: str, dataset: str
) -> tuple[float, float, bool] | None:
    """(low, high, clipped): the summary's CI clipped to the metric's range; None without one."""
    if summary.ci_low is None or summary.ci_high is None:
        return None
    low, high = bounds_of(metric, dataset)
    new_low = summary.ci_low if low is None else max(summary.ci_low, low)
    new_high = summary.ci_high if high is None else min(summary.ci_high, high)
    return new_low, new_high, (new_low, new_high) != (summary.ci_low, summary.ci_high)


def format_summary(summary: stats.Summary, metric: str, dataset: str, num_seeds: int) -> str:
    """'mean ± half-CI', 'mean [low, high]' when clipped, just 'mean' with one seed;
    '(n = 2 of 3)' when seeds are missing."""
    text = format_number(summary.mean, metric)
    interval = clipped_interval(summary, metric, dataset)
    if interval is not None:
        low, high, clipped = interval
        if clipped:
            text += f" [{format_number(low, metric)}, {format_number(high, metric)}]"
        else:
            text += f" ± {format_number((high - low) / 2.0, metric)}"
    if metric == "modes_captured":
        text += f" of {num_modes(dataset)}"
    if 1 <= summary.n < num_seeds:
        text += f" (n = {summary.n} of {num_seeds})"
    return text


def format_delta(comparison: stats.Comparison, metric: str) -> str:
    """'Δ −0.120 ★ better' where the corrected test says so, 'Δ +0.1 worse (significant)' the
    other way, else plain 'Δ −0.120' (untested single seeds are said once, elsewhere)."""
    text = f"Δ {format_number(comparison.mean_difference, metric, signed=True)}"
    phrase = stats.verdict(comparison)
    if phrase == stats.BETTER:
        return f"{text} {STAR} better"
    if phrase == stats.WORSE:
        return f"{text} {WORSE_MARK} worse"
    if phrase == stats.EQUIVALENT:
        return f"{text} {EQUIVALENT_MARK} equivalent"
    if stats.is_past_oracle(phrase):
        return f"{text} past the oracle value (significant)"
    return text


def describe_comparison(comparison: stats.Comparison, metric: str) -> str:
    """The verdict with its numbers: 'better (significant) (Δ −0.12 bits, 0.10 bits closer to
    the oracle value 0.02 bits, uncorrected 95% CI [...], Holm-adjusted p = ..)'; a single
    paired seed has no test, so just 'Δ −0.12 bits' (the report says so once)."""
    number = partial(_with_unit_number, metric=metric)
    delta = f"Δ {number(comparison.mean_difference, signed=True)}"
    if comparison.n < 2:
        return delta
    details = [delta]
    low, high = comparison.ci_low, comparison.ci_high
    if comparison.distance_difference is not None:
        side = "closer to" if comparison.distance_difference < 0 else "farther from"
        change = number(abs(comparison.distance_difference))
        details.append(f"{change} {side} the oracle value {number(comparison.oracle)}")
        low, high = comparison.distance_ci_low, comparison.distance_ci_high
    if low is not None and high is not None:
        what = " of the distance change" if comparison.distance_difference is not None else ""
        bounds = ", ".join(format_number(v, metric) for v in (low, high))
        details.append(f"uncorrected 95% CI{what} [{bounds}]")
    if comparison.p_value_adjusted is not None:
        details.append(f"Holm-adjusted p = {comparison.p_value_adjusted:.3g}")
    if comparison.past_significant and comparison.past_p_value_adjusted is not None:
        details.append(f"past the oracle value: p = {comparison.past_p_value_adjusted:.3g}")
    if comparison.margin is not None:
        details.append(f"margin ±{number(comparison.margin)}")
    if comparison.equivalence_p is not None:
        details.append(f"TOST p = {comparison.equivalence_p:.3g}")
    details.append(f"{comparison.n} paired seeds")
    if comparison.max_seeds is not None:
        details.append(f"sequential design up to {comparison.max_seeds} seeds")
    phrase = stats.verdict(comparison)
    if phrase == stats.NO_DIFFERENCE and comparison.p_value is not None:
        details.append(power_text(comparison, metric))
    return f"{phrase} ({', '.join(details)})"


def _seeds(count: int | None) -> str:
    return f"more than {decisions.MAX_SEEDS_STATED}" if count is None else f"{count}"


def seeds_needed_text(comparison: stats.Comparison) -> str:
    """'about 14 seeds to decide the observed difference (7–93 over the sd's 95% interval)':
    the seeds (in all, not more) that 80 % power would take, for the difference or, when the
    observed difference lies within the margin, for equivalence."""
    power = comparison.power
    if not isinstance(power, decisions.PowerStatement):
        return "no estimate: fewer than 2 seeds or no spread"
    if power.kind == "equivalence" and power.seeds_for_equivalence is not None:
        return f"about {power.seeds_for_equivalence} seeds to show equivalence"
    low, high = power.seeds_for_effect_range
    if power.seeds_for_effect is None:
        return (
            f"{_seeds(None)} seeds to decide the observed difference: it is too small "
            "to tell from zero, and no margin makes it equivalent"
        )
    return (
        f"about {power.seeds_for_effect} seeds to decide the observed difference "
        f"({_seeds(low)}–{_seeds(high)} over the sd's 95% interval)"
    )


def power_text(comparison: stats.Comparison, metric: str) -> str:
    """The smallest effect the seeds detect with 80 % power, and the seeds needed."""
    power = comparison.power
    if not isinstance(power, decisions.PowerStatement):
        return seeds_needed_text(comparison)
    detectable = (
        "—"
        if power.minimum_detectable is None
        else _with_unit_number(power.minimum_detectable, metric=metric)
    )
    return (
        f"{power.n} seeds detect {detectable} with 80% power at α = {power.alpha:.2g} (paired sd "
        f"{_with_unit_number(power.sd, metric=metric)}, 95% interval "
        f"{format_number(power.sd_low, metric)}–{format_number(power.sd_high, metric)}); "
        + seeds_needed_text(comparison)
    )


def _with_unit_number(value: float, *, metric: str, signed: bool = False) -> str:
    return with_unit(format_number(value, metric, signed=signed), metric)


def _span(values: Sequence[float], spec: str) -> str:
    low, high = min(values), max(values)
    return format(low, spec) if low == high else f"{low:{spec}}–{high:{spec}}"


def measured_time(cells: Sequence[CellResult], phase: str) -> str | None:
    """'41.2 s / batch of 8' from cell.json "batch" (phase: training_time / inference_time).

    The wall clock of the batch each seed was trained or sampled in, as measured, with the
    number of models that shared it; several batches show their range. None without records.
    """
    batches = [batch_of(cell.record, phase) for cell in cells]
    times = [float(b[phase]) for b in batches if phase in b]
    models = [int(b["models"]) for b in batches if "models" in b]
    if not times:
        return None
    size = f" / batch of {_span(models, 'd')}" if models else ""
    return f"{_span(times, '.1f')} s{size}"
