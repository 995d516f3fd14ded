"""The claims of an experiment's write-up, checked against our seeds: the report's claims section.

Claims live in a data file next to the experiment files, `experiments/<name>.claims.toml`
(`<name>` is the experiment's name in experiment.json). `find_claims` looks, in order, for an
explicit path (`ReportOptions.claims`), for `claims.toml` inside the results directory, and for
`experiments/<name>.claims.toml` in the results directory or any folder above it (so
`results/NAME/` and `runs/NAME/` of a checkout both find the repository's file).
No file: no section.

A claim (one `[[claim]]` table) has an `id`, its `text`, a `kind`, the `candidates` (runs) and
the `comparison` run(s), and optionally the write-up's numbers `reported` ({dataset: value}, or
{run: {dataset: value}} per candidate), `expected` ("better" / "worse", or {dataset: ...}) and a
`note`. Kinds:

- "difference": for each candidate, comparison run and dataset, our mean ± 95% CI beside the
  write-up's number, whether that number lies inside our seeds' range, the paired difference
  (candidate − comparison over common seeds) and the Holm-corrected p — Holm over every tested
  comparison of the claims file, one family — and a verdict: confirmed (significant in the
  expected direction), contradicted (significant the other way), equivalent (the difference is
  shown to lie within ±margin, by TOST), past the oracle value, or undecided with the seeds a
  decision would take (`lowdiff.decisions`). A claim may set its own `margin` (in the metric's
  unit); else the experiment's `margins`, else the default from the oracle estimator's spread.
  The test is the report's own (`tables.compare_runs`): for a metric with an oracle value
  (goal "oracle", e.g. KL) it is floor-aware, comparing the distance to the dataset's oracle
  floor, so a KL below the floor is over-sharp, not better; without a floor such a metric is
  not tested. `metric` may list several names: the first one the results hold is used (e.g.
  coverage, else modes captured).
- "weight_shift": the change of the first branch weight from t = T−1 to t = 0 per dataset
  (mean ± 95% CI over seeds), and the spread of those means across datasets.
- "time_ratio": the ratio of a time (training_time or inference_time), candidate / comparison,
  from the per-model time of each distinct batch (batch wall clock / models in it; the cells
  of one batch share one measurement, so each batch counts once), beside the write-up's ratio.
- "bimodal_gate": per run and dataset, the bimodality coefficient b = (g1² + 1) / (g2 + 3) of
  the last-step gate values (g1 skewness, g2 excess kurtosis; b > 5/9, the value of a uniform
  distribution, suggests two modes), averaged over seeds, with the fractions of gates below 0.1
  and above 0.9.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from lowdiff import stats
from lowdiff.cells import batch_of
from lowdiff.metrics import METRICS
from lowdiff.report.document import Block, Bullets, Heading, Paragraph, Table
from lowdiff.report.load import ExperimentResults
from lowdiff.report.options import run_groups, weight_cells
from lowdiff.report.tables import (
    ALPHA,
    compare_runs,
    decide,
    metric_values,
    paired,
    tested_differences,
)
from lowdiff.report.text import format_number, format_summary, seeds_needed_text

KINDS = ("difference", "weight_shift", "time_ratio", "bimodal_gate")
DIRECTIONS = ("better", "worse")
CONFIRMED = "confirmed"
UNDECIDED = "undecided"
EQUIVALENT = "equivalent (no difference beyond the margin)"
CONTRADICTED = "contradicted (significant the other way)"
NOT_TESTED = "not tested"  # fewer than 2 paired seeds, no variation, or no oracle value
NOT_COMPARED = "—"  # no seed of both runs finished
PAST_ORACLE = "past the oracle value (significant)"
BIMODAL = 5.0 / 9.0  # bimodality coefficient of a uniform distribution


@dataclass(frozen=True, kw_only=True)
class Claim:
    id: str
    text: str
    kind: str = "difference"
    metric: tuple[str, ...] = ("kl_divergence",)
    candidates: tuple[str, ...]
    comparison: tuple[str, ...] = ()
    reported: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # run -> dataset
    expected: Mapping[str, str] = field(default_factory=dict)  # dataset -> better / worse
    default_expected: str = "better"
    reported_ratio: float | None = None
    note: str = ""
    margin: float | None = None  # equivalence margin of this claim (the metric's unit)


# --- the claims file -----------------------------------------------------------------------------


def find_claims(root: Path, name: str, explicit: Path | None = None) -> Path | None:
    """The claims file of experiment `name` for the results in `root` (rule: module docstring)."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"claims file {explicit} does not exist")
        return Path(explicit)
    if (Path(root) / "claims.toml").is_file():
        return Path(root) / "claims.toml"
    for folder in [Path(root).resolve(), *Path(root).resolve().parents]:
        candidate = folder / "experiments" / f"{name}.claims.toml"
        if candidate.is_file():
            return candidate
    return None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}: expected a name or a list of names, got {value!r}")
    return tuple(values)


def _reported(value: Any, candidates: Sequence[str], where: str) -> dict[str, dict[str, float]]:
    """{dataset: number} for every candidate, or {run: {dataset: number}} as given."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a table of numbers, got {value!r}")
    if not value:
        return {}
    if all(isinstance(v, dict) for v in value.values()):
        return {run: {d: float(x) for d, x in by_d.items()} for run, by_d in value.items()}
    return {run: {d: float(x) for d, x in value.items()} for run in candidates}


def _expected(value: Any, where: str) -> tuple[dict[str, str], str]:
    table = value if isinstance(value, dict) else {}
    default = value if isinstance(value, str) else "better"
    bad = [v for v in [default, *table.values()] if v not in DIRECTIONS]
    if bad:
        raise ValueError(f"{where}: expected direction {bad[0]!r}; valid: {', '.join(DIRECTIONS)}")
    return dict(table), default


def _claim(raw: dict[str, Any], where: str) -> Claim:
    known = {"id", "text", "kind", "metric", "candidates", "comparison", "reported", "expected"}
    unknown = sorted(set(raw) - known - {"reported_ratio", "note", "margin"})
    if unknown:
        raise ValueError(
            f"{where}: unknown keys {unknown}; valid: {sorted(known)}, margin, note, reported_ratio"
        )
    for key in ("id", "text", "candidates"):
        if key not in raw:
            raise ValueError(f"{where}: missing key {key!r}")
    kind = raw.get("kind", "difference")
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    candidates = _strings(raw["candidates"], f"{where}.candidates")
    expected, default = _expected(raw.get("expected", "better"), f"{where}.expected")
    ratio = raw.get("reported_ratio")
    margin = raw.get("margin")
    if margin is not None and (
        isinstance(margin, bool)
        or not isinstance(margin, int | float)
        or not np.isfinite(margin)
        or margin < 0
    ):
        raise ValueError(f"{where}.margin: must be a finite number >= 0, got {margin!r}")
    return Claim(
        id=str(raw["id"]),
        text=str(raw["text"]),
        kind=kind,
        metric=_strings(raw.get("metric", "kl_divergence"), f"{where}.metric"),
        candidates=candidates,
        comparison=_strings(raw.get("comparison", []), f"{where}.comparison"),
        reported=_reported(raw.get("reported", {}), candidates, f"{where}.reported"),
        expected=expected,
        default_expected=default,
        reported_ratio=None if ratio is None else float(ratio),
        note=str(raw.get("note", "")),
        margin=None if margin is None else float(margin),
    )


def load_claims(path: Path) -> list[Claim]:
    """Every claim of a claims file, checked; a ValueError names the claim and the problem."""
    with open(path, "rb") as file:
        raw = tomllib.load(file)
    claims = raw.get("claim")
    if not isinstance(claims, list):
        raise ValueError(f"{path}: expected [[claim]] tables")
    return [_claim(entry, f"{path}: claim {entry.get('id', i)}") for i, entry in enumerate(claims)]


# --- difference claims: floor-aware paired tests, one Holm family -------------------------------


@dataclass(frozen=True)
class Row:
    claim: Claim
    metric: str
    run: str
    reference: str
    dataset: str
    comparison: stats.Comparison | None  # on the floor distance for oracle metrics


def _metric_of(claim: Claim, loaded: ExperimentResults) -> str | None:
    """The first of the claim's metrics that some cell recorded."""
    return next(
        (m for m in claim.metric if any(m in c.metrics for c in loaded.cells.values())), None
    )


def _compare(
    loaded: ExperimentResults, metric: str, run: str, reference: str, dataset: str
) -> tuple[stats.Comparison, np.ndarray] | None:
    """The report's comparison of `run` with `reference` on one dataset (`tables.compare_runs`:
    floor-aware for metrics with an oracle value), uncorrected, with its per-seed tested
    differences; None without a common seed."""
    by_run = metric_values(loaded, metric)
    values = {r: {dataset: by_run.get(r, {}).get(dataset, {})} for r in (run, reference)}
    floor = loaded.oracle_mean(dataset, metric)
    found = compare_runs(values, reference, [run], metric=metric, oracle={dataset: floor})
    comparison = found.get((run, dataset))
    if comparison is None:
        return None
    candidate, baseline = paired(values, run, reference, dataset)
    return comparison, tested_differences(candidate, baseline, floor, metric)


def _datasets(claim: Claim, loaded: ExperimentResults) -> list[str]:
    named = {d for by_d in claim.reported.values() for d in by_d} | set(claim.expected)
    return [d for d in loaded.datasets if d in named] or list(loaded.datasets)


def difference_rows(claims: Sequence[Claim], loaded: ExperimentResults) -> list[Row]:
    """Every (claim, candidate, comparison run, dataset) of the difference claims, Holm-corrected
    as one family over the claims file."""
    rows, tested = [], []
    for claim in (c for c in claims if c.kind == "difference"):
        metric = _metric_of(claim, loaded)
        if metric is None:
            continue
        for run in claim.candidates:
            for reference in claim.comparison:
                for dataset in _datasets(claim, loaded):
                    found = _compare(loaded, metric, run, reference, dataset)
                    row = Row(claim, metric, run, reference, dataset, found and found[0])
                    rows.append(row)
                    if found is not None:
                        tested.append((row, found[1]))
    margins = [_margin(row.claim, loaded, row.dataset, row.metric) for row, _ in tested]
    decided = decide(
        [row.comparison for row, _ in tested],
        [differences for _, differences in tested],
        margins,
        [loaded.design_for(row.run, row.reference, row.dataset) for row, _ in tested],
    )
    fixed = {id(row): c for (row, _), c in zip(tested, decided, strict=True)}
    return [replace(row, comparison=fixed.get(id(row))) for row in rows]


def _margin(claim: Claim, loaded: ExperimentResults, dataset: str, metric: str) -> float | None:
    return claim.margin if claim.margin is not None else loaded.margin(dataset, metric)


def claim_verdict(comparison: stats.Comparison | None, expected: str) -> str:
    """confirmed / contradicted / equivalent / past the oracle value / undecided, from the
    family's decision (`stats.verdict`)."""
    if comparison is None:
        return NOT_COMPARED
    phrase = stats.verdict(comparison)
    if phrase in (stats.BETTER, stats.WORSE):
        return CONFIRMED if (phrase == stats.BETTER) == (expected == "better") else CONTRADICTED
    if stats.is_past_oracle(phrase):
        return PAST_ORACLE
    if phrase == stats.EQUIVALENT:
        return EQUIVALENT
    return NOT_TESTED if comparison.p_value is None else UNDECIDED


def _inside(values: Sequence[float], reported: float | None, metric: str) -> str:
    if reported is None:
        return "—"
    if not values:
        return "no seeds"
    low, high = min(values), max(values)
    where = "inside" if low <= reported <= high else "outside"
    return f"{where} [{format_number(low, metric)}, {format_number(high, metric)}]"


def _row_cells(row: Row, loaded: ExperimentResults) -> tuple[str, ...]:
    values = metric_values(loaded, row.metric).get(row.run, {}).get(row.dataset, {})
    summary = stats.summarize(list(values.values())) if values else None
    ours = format_summary(summary, row.metric, row.dataset, len(loaded.seeds)) if summary else "—"
    reported = row.claim.reported.get(row.run, {}).get(row.dataset)
    expected = row.claim.expected.get(row.dataset, row.claim.default_expected)
    comparison = row.comparison
    if comparison is None:
        delta, p_value = "not compared (no common seed)", "—"
    else:
        delta = format_number(comparison.mean_difference, row.metric, signed=True)
        adjusted = comparison.p_value_adjusted
        p_value = "—" if adjusted is None else f"{adjusted:.3g}"
    return (
        row.dataset,
        f"{row.run} vs {row.reference}",
        "—" if reported is None else format_number(reported, row.metric),
        ours,
        _inside(list(values.values()), reported, row.metric),
        delta,
        p_value,
        _verdict_text(comparison, expected),
    )


def _verdict_text(comparison: stats.Comparison | None, expected: str) -> str:
    """'better: confirmed'; an untested comparison says why ('not tested (single seed...)')."""
    verdict = claim_verdict(comparison, expected)
    if verdict == NOT_TESTED and comparison is not None:
        verdict += f" ({stats.verdict(comparison)})"
    if verdict == UNDECIDED and comparison is not None:
        verdict += f" ({seeds_needed_text(comparison)})"
    if comparison is not None and comparison.margin is not None:
        verdict += f"; δ = ±{comparison.margin:.3g}"
    return f"{expected}: {verdict}"


ROW_HEADER = (
    "dataset", "runs", "write-up", "ours (mean ± 95% CI)", "write-up vs our seeds",
    "Δ (paired)", "Holm p", "expected: verdict",
)  # fmt: skip


def _difference_blocks(claim: Claim, rows: Sequence[Row], loaded: ExperimentResults) -> list[Block]:
    mine = [row for row in rows if row.claim is claim]
    if not mine:
        return [Paragraph(f"Not checked: none of {', '.join(claim.metric)} was measured.")]
    metric = mine[0].metric
    floor = " (the test is floor-aware: it compares |value − oracle floor|)"
    floors = [loaded.oracle_mean(d, metric) for d in loaded.datasets]
    has_floor = any(value is not None for value in floors)
    aware = floor if METRICS[metric].goal == "oracle" and has_floor else ""
    lead = Paragraph(f"Metric: {METRICS[metric].label}{aware}.")
    return [lead, Table(ROW_HEADER, tuple(_row_cells(row, loaded) for row in mine))]


# --- measured statements where no test fits ----------------------------------------------------


def _mean_ci(values: Sequence[float], spec: str = ".2f") -> str:
    summary = stats.summarize(list(values))
    if summary.ci_low is None:
        return format(summary.mean, spec)
    return f"{summary.mean:{spec}} (95% CI {summary.ci_low:{spec}} to {summary.ci_high:{spec}})"


def _groups_of(runs: Sequence[str], loaded: ExperimentResults) -> list[list[str]]:
    """The claim's runs, identical ones (same configuration) joined in one group."""
    groups = [[r for r in g if r in runs] for g in run_groups(loaded)]
    named = [g for g in groups if g]
    return named + [[r] for r in runs if r not in loaded.run_names]


def weight_shift_items(claim: Claim, loaded: ExperimentResults) -> list[str]:
    """Per run (identical runs once): the first branch weight's change from t = T−1 to t = 0
    on each dataset, and how much those changes differ across datasets."""
    items = []
    for group in _groups_of(claim.candidates, loaded):
        run, means, parts = group[0], {}, []
        for dataset in loaded.datasets:
            cells = [c for c in weight_cells(loaded, run, dataset) if "trace" in c.weights]
            changes = [float(c.weights["trace"][-1, 0] - c.weights["trace"][0, 0]) for c in cells]
            if changes:
                means[dataset] = float(np.mean(changes))
                parts.append(f"{dataset} {_mean_ci(changes, '+.3f')}")
        if not parts:
            continue
        mixing = loaded.mixing(run) if run in loaded.run_names else None
        name = mixing.names[0] if mixing else "the first branch weight"
        spread = max(means.values()) - min(means.values())
        items.append(
            f"{' = '.join(group)}: change of {name} from t = T−1 to t = 0 (mean over seeds): "
            + "; ".join(parts)
            + f"; the datasets' means differ by up to {spread:.3f}"
        )
    return items or ["no recorded branch weights for the claim's runs"]


def _batch_times(loaded: ExperimentResults, run: str, phase: str) -> list[float]:
    """Per-model time of each distinct batch the run's cells were made in (batch wall clock /
    models in it): cells of one batch share one measurement, so each batch counts once."""
    batches = {
        (float(b[phase]), int(b["models"]))
        for dataset in loaded.datasets
        for cell in loaded.finished(run, dataset)
        if phase in (b := batch_of(cell.record, phase)) and int(b.get("models", 0)) > 0
    }
    return [time / models for time, models in sorted(batches)]


def time_ratio_items(claim: Claim, loaded: ExperimentResults) -> list[str]:
    """Per candidate and comparison run: the ratio of their per-model batch times."""
    phase, items = claim.metric[0], []
    for run in claim.candidates:
        for reference in claim.comparison:
            ours, theirs = _batch_times(loaded, run, phase), _batch_times(loaded, reference, phase)
            if not ours or not theirs:
                continue
            ratio = float(np.mean(ours) / np.mean(theirs))
            text = (
                f"{run} / {reference}: {METRICS[phase].label} ratio {ratio:.2f} (per model: "
                f"{np.mean(ours):.1f} s over {len(ours)} batch(es) vs {np.mean(theirs):.1f} s "
                f"over {len(theirs)}; one measurement per batch, so no interval across seeds)"
            )
            if claim.reported_ratio is not None:
                text += f"; the write-up says {claim.reported_ratio:g}×"
            items.append(text)
    return items or [f"no measured {phase} batches for the claim's runs"]


def bimodality(gate: np.ndarray) -> float:
    """Bimodality coefficient (g1² + 1) / (g2 + 3) of gate values; > 5/9 suggests two modes."""
    values = np.asarray(gate, dtype=float).reshape(-1)
    if np.ptp(values) == 0.0:
        return 0.0  # a constant gate: one mode (skewness and kurtosis undefined)
    skew = float(scipy.stats.skew(values))
    excess = float(scipy.stats.kurtosis(values))
    return (skew**2 + 1.0) / (excess + 3.0)


def bimodal_gate_items(claim: Claim, loaded: ExperimentResults) -> list[str]:
    items = []
    for run in claim.candidates:
        for dataset in loaded.datasets:
            cells = [c for c in weight_cells(loaded, run, dataset) if "final" in c.weights]
            gates = [c.weights["final"][:, 0] for c in cells]
            if not gates:
                continue
            coefficients = [bimodality(g) for g in gates]
            low = np.mean([np.mean(g < 0.1) for g in gates])
            high = np.mean([np.mean(g > 0.9) for g in gates])
            above = sum(b > BIMODAL for b in coefficients)
            items.append(
                f"{run} on {dataset}: bimodality coefficient {_mean_ci(coefficients, '.2f')}, "
                f"above 5/9 in {above} of {len(gates)} seed(s); gate < 0.1: {low:.0%}, "
                f"> 0.9: {high:.0%}"
            )
    return items or ["no recorded gate for the claim's runs"]


MEASURED = {
    "weight_shift": weight_shift_items,
    "time_ratio": time_ratio_items,
    "bimodal_gate": bimodal_gate_items,
}

INTRO = (
    "Each claim of the write-up, checked against our seeds. For a claimed difference: our mean "
    "± 95% CI beside the write-up's single number, whether that number lies inside the range of "
    "our seeds, the paired difference (candidate − comparison over common seeds) and its p, "
    "Holm-corrected over the {family} tested comparisons of this section, at α = {alpha}. "
    "Verdict: confirmed (significant in the claimed direction), contradicted (significant the "
    "other way), equivalent (the difference is shown, by two one-sided tests, to lie within "
    "± the margin δ given per row), past the oracle value, or undecided with the seeds a "
    "decision would take; — where no seed of both runs has finished. For metrics with an "
    "oracle value the test compares the distance to the oracle floor. Claims that are not a "
    "metric difference get a measured statement instead of a test."
)


def claims_blocks(claims: Sequence[Claim], loaded: ExperimentResults, source: str) -> list[Block]:
    """The claims section: one subsection per claim, a table or measured statements."""
    rows = difference_rows(claims, loaded)
    family = sum(row.comparison is not None and row.comparison.p_value is not None for row in rows)
    blocks: list[Block] = [
        Heading(2, "Claims"),
        Paragraph(INTRO.format(family=family, alpha=ALPHA) + f" Claims file: {source}."),
    ]
    for claim in claims:
        blocks.append(Heading(3, f"{claim.id}: {claim.text}"))
        if claim.note:
            blocks.append(Paragraph(claim.note))
        if claim.kind == "difference":
            blocks += _difference_blocks(claim, rows, loaded)
        else:
            blocks.append(Bullets(tuple(MEASURED[claim.kind](claim, loaded))))
            blocks += _reported_blocks(claim, loaded)
    return blocks


def _reported_blocks(claim: Claim, loaded: ExperimentResults) -> list[Block]:
    """The write-up's numbers beside ours, for a measured claim that quotes some."""
    metric = _metric_of(claim, loaded)
    if not claim.reported or metric is None or metric not in METRICS:
        return []
    table_rows = []
    for run, by_dataset in claim.reported.items():
        for dataset, reported in by_dataset.items():
            values = metric_values(loaded, metric).get(run, {}).get(dataset, {})
            summary = stats.summarize(list(values.values())) if values else None
            ours = format_summary(summary, metric, dataset, len(loaded.seeds)) if summary else "—"
            inside = _inside(list(values.values()), reported, metric)
            table_rows.append((dataset, run, format_number(reported, metric), ours, inside))
    header = ("dataset", "run", "write-up", "ours (mean ± 95% CI)", "write-up vs our seeds")
    if not table_rows:
        return []
    return [Paragraph(f"{METRICS[metric].label}:"), Table(header, tuple(table_rows))]
