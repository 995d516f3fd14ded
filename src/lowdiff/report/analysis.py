"""The report's analysis in words, every direction taken from `stats.verdict` alone.

The summary: per metric a `tally` of the verdicts against the baseline, and per run and dataset
the KL and modes-captured verdicts with their numbers (`summary_items`). Runs are chosen by the
mixing their architecture declares (`lowdiff.architectures`): branch weights (where the
seed-mean first branch weight shifts during sampling, `weight_shift`, and KL against the
baseline and against the run whose declaration says its weights are constant, if any) and gates
(modes and KL against the baseline and, per seed, whether the experts specialise, `gate_stats`,
`classify_gate`, by the thresholds defined here and stated in the report's text). Units come
from the metric catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lowdiff import stats
from lowdiff.architectures import constant_mixing
from lowdiff.report.document import Block, Bullets, Heading, Paragraph, comma_list
from lowdiff.report.load import CellResult, ExperimentResults
from lowdiff.report.options import representatives, runs_by_kind, weight_cells
from lowdiff.report.tables import MetricTable, compare_runs, metric_values
from lowdiff.report.text import describe_comparison, format_number, num_modes, with_unit

# Gates: how the last-step gate is classified (stated in the report's text).
GATE_STUCK_STD = 0.05  # std below this and mean in GATE_MIDDLE: no specialisation
GATE_MIDDLE = (0.4, 0.6)
GATE_EXTREME = 0.05  # g < 0.05 or g > 0.95 counts as "at 0" / "at 1"
GATE_ONE_EXPERT = 0.9  # more than this fraction at one end: one expert does all the work
GATE_SMALL_VARIATION = 0.1  # region spread and timestep change both below: little variation
# Branch weights: a change of the first weight below this from start to end is "barely changes".
WEIGHT_SMALL_CHANGE = 0.05


SUMMARY_METRICS = {"kl_divergence": "KL", "modes_captured": "modes captured"}


def summary_items(
    comparisons: Mapping[str, Mapping[tuple[str, str], stats.Comparison]],
    runs: Sequence[str],
    datasets: Sequence[str],
) -> list[str]:
    """One line per (run, dataset): the KL and modes-captured verdicts vs the baseline.

    `comparisons[metric][(run, dataset)]` are Holm-corrected comparisons (`compare_runs`).
    """
    items = []
    for run in runs:
        for dataset in datasets:
            parts = []
            for metric, label in SUMMARY_METRICS.items():
                comparison = comparisons.get(metric, {}).get((run, dataset))
                text = (
                    describe_comparison(comparison, metric)
                    if comparison is not None
                    else "not compared (no seed finished in both runs)"
                )
                parts.append(f"{label} vs baseline: {text}")
            items.append(f"{run} on {dataset}: " + "; ".join(parts))
    return items


def tally(comparisons: Mapping[tuple[str, str], stats.Comparison], label: str) -> str:
    """'KL: better (significant) for a on b; no significant difference in 3 of 4 ...'."""
    groups: dict[str, list[str]] = {}
    for (run, dataset), comparison in comparisons.items():
        groups.setdefault(stats.verdict(comparison), []).append(f"{run} on {dataset}")
    if not comparisons:
        return f"{label}: no comparison could be made."
    parts = [
        f"{phrase} for {comma_list(names)}"
        if phrase in (stats.BETTER, stats.WORSE)
        else f"{phrase} in {len(names)} of {len(comparisons)}"
        for phrase, names in sorted(groups.items())
    ]
    return f"{label}: " + "; ".join(parts) + "."


def weight_shift(trace: np.ndarray, names: Sequence[str] = ("w_global", "w_local")) -> str:
    """Where the balance of a (T, 2) trace of two branch weights (`names`, e.g. w_global and
    w_local) shifts; row i is t = T-1-i."""
    first, second = (name.removeprefix("w_") for name in names)
    w_global = np.asarray(trace, dtype=float)[:, 0]  # (T,)
    t = w_global.size - 1 - np.arange(w_global.size)  # the timestep of each row
    start, end = w_global[0], w_global[-1]
    text = (
        f"{names[0]} goes from {start:.2f} at t = {t[0]} to {end:.2f} at t = 0 "
        f"(range {w_global.min():.2f}–{w_global.max():.2f})"
    )
    if abs(end - start) < WEIGHT_SMALL_CHANGE:
        text += f"; the balance barely changes (|change| < {WEIGHT_SMALL_CHANGE})"
    else:
        towards = second if end < start else first
        halfway = start + (end - start) / 2.0
        reached = (w_global - halfway) * np.sign(end - start) >= 0.0  # (T,) past the halfway
        text += (
            f"; the balance shifts towards the {towards} branch as sampling nears the data, "
            f"half of the change reached by t = {t[int(np.argmax(reached))]}"
        )
    above = w_global > 0.5
    crossings = np.flatnonzero(above[1:] != above[:-1])  # row i -> i + 1 crosses 0.5
    if crossings.size:
        more = f" ({crossings.size} crossings)" if crossings.size > 1 else ""
        text += f"; it first crosses 0.5 at t = {t[crossings[0] + 1]}{more}"
    else:
        side = first if above.all() else second
        text += f"; the {side} branch keeps the larger weight at every step"
    return text


def _fixed_run(loaded: ExperimentResults) -> str | None:
    """The first branch-weight run whose weights are constant by its architecture's declaration
    (`Mixing.constant_when`): the learned-weight runs' second reference."""
    return next(
        (
            run
            for run in runs_by_kind(loaded, "branches")
            if constant_mixing(loaded.config.run(run).model.arch, loaded.config.run(run).model)
        ),
        None,
    )


def _kl_verdicts(
    base: stats.Comparison | None, fixed: stats.Comparison | None, fixed_name: str | None
) -> str:
    against_base = describe_comparison(base, "kl_divergence") if base else "not compared"
    text = f"KL vs baseline: {against_base}"
    if fixed_name is None:
        return text + "; there is no fixed-weight run to compare with."
    against_fixed = describe_comparison(fixed, "kl_divergence") if fixed else "not compared"
    text += f"; KL vs {fixed_name} (fixed weights): {against_fixed}"
    both = base is not None and fixed is not None
    both = both and stats.verdict(base) == stats.BETTER == stats.verdict(fixed)
    if both:
        return text + f"; so it beats both the baseline and {fixed_name} on KL."
    return text + f"; so it is not shown to beat both the baseline and {fixed_name} on KL."


def _branch_blocks(loaded: ExperimentResults, tables: Mapping[str, MetricTable]) -> list[Block]:
    adaptive = [run for run in runs_by_kind(loaded, "branches") if run != _fixed_run(loaded)]
    names = loaded.mixing(adaptive[0]).names if adaptive else ("w_global", "w_local")
    fixed = _fixed_run(loaded)
    kl = metric_values(loaded, "kl_divergence")
    floors = {d: loaded.oracle_mean(d, "kl_divergence") for d in loaded.datasets}
    vs_fixed = (
        compare_runs(kl, fixed, adaptive, metric="kl_divergence", oracle=floors) if fixed else {}
    )
    blocks: list[Block] = [
        Heading(3, f"Branch weights ({', '.join(names)})"),
        Paragraph(
            f"For each adaptive run: how the seed-mean weight {names[0]} ({names[1]} = 1 − "
            f"{names[0]}) moves from the first sampling step (t = T−1, noise) to the last (t = 0); "
            f"a start-to-end change under {WEIGHT_SMALL_CHANGE} counts as no shift. KL is "
            "compared with the baseline (the Holm family of the tables)"
            + (
                f" and with the fixed-weight run {fixed} (paired over the same seeds; a separate "
                "Holm family of all adaptive runs × datasets)."
                if fixed
                else "; the experiment has no fixed-weight run to compare with."
            )
        ),
    ]
    for dataset in loaded.datasets:
        items = []
        for run in adaptive:
            cells = weight_cells(loaded, run, dataset)
            traces = [c.weights["trace"] for c in cells if "trace" in c.weights]
            shift = (
                weight_shift(np.mean(traces, axis=0), names) if traces else "no recorded weights"
            )
            base = tables["kl_divergence"].comparisons.get((run, dataset))
            items.append(
                f"{run}: {shift}. {_kl_verdicts(base, vs_fixed.get((run, dataset)), fixed)}"
            )
        blocks += [Heading(4, dataset), Bullets(tuple(items))]
    return blocks


@dataclass(frozen=True)
class GateStats:
    """The last-step gate of one model, and how much the gate varies over plane and time."""

    mean: float
    std: float
    at_zero: float  # fraction of samples with g < GATE_EXTREME
    at_one: float  # fraction with g > 1 - GATE_EXTREME
    region_spread: float | None  # P95 - P5 of the gate over the plane at t = 0
    timestep_change: float | None  # |mean gate at t = 0 - mean gate at t = T-1|


def gate_stats(weights: Mapping[str, np.ndarray]) -> GateStats:
    """GateStats from a dual-expert cell's weights.npz (final (N, 1), trace (T, 1), field)."""
    gate = np.asarray(weights["final"], dtype=float)[..., 0].reshape(-1)  # (N,)
    change = None
    if "trace" in weights:
        trace = np.asarray(weights["trace"], dtype=float)[:, 0]  # (T,), row 0 = t = T-1
        change = abs(float(trace[-1] - trace[0]))
    spread = None
    if "field" in weights and "field_timesteps" in weights:
        last = int(np.argmin(weights["field_timesteps"]))  # the field at the smallest t (0)
        plane = np.asarray(weights["field"], dtype=float)[last, :, :, 0]  # (G, G)
        spread = float(np.percentile(plane, 95) - np.percentile(plane, 5))
    return GateStats(
        mean=float(gate.mean()),
        std=float(gate.std()),
        at_zero=float(np.mean(gate < GATE_EXTREME)),
        at_one=float(np.mean(gate > 1.0 - GATE_EXTREME)),
        region_spread=spread,
        timestep_change=change,
    )


def classify_gate(gate: GateStats) -> str:
    """The specialisation of one model's gate, by the thresholds stated in the report."""
    if gate.std < GATE_STUCK_STD and GATE_MIDDLE[0] <= gate.mean <= GATE_MIDDLE[1]:
        return "no specialisation (gate stuck near 0.5)"
    if gate.at_one > GATE_ONE_EXPERT:
        return "one expert does all the work (expert 1, g near 1)"
    if gate.at_zero > GATE_ONE_EXPERT:
        return "one expert does all the work (expert 2, g near 0)"
    if gate.std < GATE_STUCK_STD:
        return f"no specialisation (a nearly constant blend, g ≈ {gate.mean:.2f})"
    if gate.region_spread is None and gate.timestep_change is None:
        return "the gate varies, but no field or trace was recorded to say where"
    region, time = gate.region_spread or 0.0, gate.timestep_change or 0.0
    if max(region, time) < GATE_SMALL_VARIATION:
        return "little variation by region or by timestep"
    return "specialises mainly by region" if region >= time else "specialises mainly by timestep"


def _mean_of(values: Iterable[float | None], spec: str = ".2f") -> str:
    present = [value for value in values if value is not None]
    return format(float(np.mean(present)), spec) if present else "not recorded"


def _gate_text(cells: Sequence[CellResult]) -> str:
    """Per-seed gate classification, grouped, and the seed-averaged numbers behind it."""
    per_seed = [(cell.seed, gate_stats(cell.weights)) for cell in cells]
    groups: dict[str, list[int]] = {}
    for seed, gate in per_seed:
        groups.setdefault(classify_gate(gate), []).append(seed)
    labels = "; ".join(
        label
        if len(per_seed) == 1
        else f"{label} (seed{'s' if len(seeds) > 1 else ''} {comma_list(seeds)})"
        for label, seeds in groups.items()
    )
    gates = [gate for _, gate in per_seed]
    numbers = (
        f"mean g {_mean_of(g.mean for g in gates)}, std {_mean_of(g.std for g in gates)}, "
        f"g < {GATE_EXTREME}: {_mean_of((g.at_zero for g in gates), '.0%')}, "
        f"g > {1 - GATE_EXTREME}: {_mean_of((g.at_one for g in gates), '.0%')}, "
        f"region spread {_mean_of(g.region_spread for g in gates)}, "
        f"timestep change {_mean_of(g.timestep_change for g in gates)}"
    )
    if len(gates) > 1:
        numbers += f" (averaged over {len(gates)} seeds)"
    return f"gate: {labels}; {numbers}"


def _versus_baseline(
    loaded: ExperimentResults, table: MetricTable, run: str, dataset: str, label: str
) -> str:
    ours = table.summaries.get((run, dataset))
    theirs = table.summaries.get((loaded.baseline, dataset))
    comparison = table.comparisons.get((run, dataset))
    if ours is None or theirs is None or comparison is None:
        return f"{label}: not compared (no seed finished in both runs)"
    suffix = f" of {num_modes(dataset)}" if table.metric == "modes_captured" else ""
    means = (
        f"{with_unit(format_number(ours.mean, table.metric), table.metric)}{suffix} vs "
        f"{with_unit(format_number(theirs.mean, table.metric), table.metric)}"
    )
    described = describe_comparison(comparison, table.metric)
    return f"{label} {means} (baseline): {described}"


GATE_INTRO = (
    "For each gated run: modes captured and KL against the baseline, and whether the experts "
    "specialise, judged per seed from the gate g at the last sampling step (t = 0): std < "
    "{stuck} with mean in [{low}, {high}] is no specialisation; more than {one:.0%} of the "
    "samples with g < {extreme} (or > {high_end}) means one expert does all the work. "
    "Otherwise the variation is split into region (P95 − P5 of the gate over the plane at "
    "t = 0) and timestep (|mean gate at t = 0 − mean gate at t = T−1|); the larger one "
    "dominates, and both under {small} is little variation."
)


def _gate_blocks(loaded: ExperimentResults, tables: Mapping[str, MetricTable]) -> list[Block]:
    intro = GATE_INTRO.format(
        stuck=GATE_STUCK_STD,
        low=GATE_MIDDLE[0],
        high=GATE_MIDDLE[1],
        one=GATE_ONE_EXPERT,
        extreme=GATE_EXTREME,
        high_end=1 - GATE_EXTREME,
        small=GATE_SMALL_VARIATION,
    )
    blocks: list[Block] = [Heading(3, "Gates"), Paragraph(intro)]
    for dataset in loaded.datasets:
        items = []
        for run in runs_by_kind(loaded, "gate"):
            cells = [c for c in weight_cells(loaded, run, dataset) if "final" in c.weights]
            parts = [
                _versus_baseline(loaded, tables["modes_captured"], run, dataset, "modes captured"),
                _versus_baseline(loaded, tables["kl_divergence"], run, dataset, "KL"),
                _gate_text(cells) if cells else "gate: not recorded",
            ]
            items.append(f"{run}: " + "; ".join(parts) + ".")
        blocks += [Heading(4, dataset), Bullets(tuple(items))]
    return blocks


def analysis_blocks(loaded: ExperimentResults, tables: Mapping[str, MetricTable]) -> list[Block]:
    candidates = [run for run in representatives(loaded) if run != loaded.baseline]
    blocks: list[Block] = [Heading(2, "Analysis"), Heading(3, "Verdicts against the baseline")]
    if not candidates:
        blocks.append(Paragraph("Only the baseline was run: there is nothing to compare."))
    else:
        comparisons = {metric: tables[metric].comparisons for metric in SUMMARY_METRICS}
        tallies = [tally(comparisons[m], label) for m, label in SUMMARY_METRICS.items()]
        blocks.append(Paragraph(" ".join(tallies)))
        blocks.append(Bullets(tuple(summary_items(comparisons, candidates, loaded.datasets))))
    if runs_by_kind(loaded, "branches"):
        blocks += _branch_blocks(loaded, tables)
    if runs_by_kind(loaded, "gate"):
        blocks += _gate_blocks(loaded, tables)
    return blocks
