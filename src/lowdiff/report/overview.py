"""The report's first screen: one table of runs × datasets with the headline metrics.

Rows are the groups of identical runs (named by all their runs), columns the datasets, and each
entry gives KL and, where the results hold them, coverage, precision and W2 (mean ± 95% CI,
clipped to the metric's range), with ★ where the corrected, floor-aware test of
`report.tables` calls the run better than the baseline and ▼ where it calls it worse. A
diverged cell says where it stopped.
The last row is the oracle floor: what a perfect generator gets.
"""

from __future__ import annotations

from collections.abc import Mapping

from lowdiff.metrics import METRICS
from lowdiff.report.document import Block, Heading, Paragraph, Table
from lowdiff.report.load import ExperimentResults
from lowdiff.report.options import divergence_note, group_label, run_groups
from lowdiff.report.tables import MetricTable
from lowdiff.report.text import (
    EQUIVALENT_MARK,
    STAR,
    WORSE_MARK,
    format_number,
    format_summary,
    verdict_mark,
)

HEADLINE_METRICS = ("kl_divergence", "coverage", "precision", "w2")


def headline_metrics(tables: Mapping[str, MetricTable]) -> list[str]:
    """The headline metrics the results hold, in order (KL first)."""
    return [m for m in HEADLINE_METRICS if m in tables and tables[m].summaries]


def _entry(
    loaded: ExperimentResults,
    tables: Mapping[str, MetricTable],
    metrics: list[str],
    run: str,
    dataset: str,
) -> str:
    lines = []
    for metric in metrics:
        summary = tables[metric].summaries.get((run, dataset))
        if summary is None:
            continue
        comparison = tables[metric].comparisons.get((run, dataset))
        mark = verdict_mark(comparison) if comparison is not None else ""
        text = format_summary(summary, metric, dataset, len(loaded.seeds))
        lines.append(f"{METRICS[metric].label} {text}" + (f" {mark}" if mark else ""))
    note = divergence_note(loaded, run, dataset)
    if note:
        lines.append(note)
    return "\n".join(lines) or "missing"


def _floor_row(loaded: ExperimentResults, metrics: list[str]) -> tuple[str, ...] | None:
    if not loaded.oracle:
        return None
    entries = []
    for dataset in loaded.datasets:
        parts = [
            f"{METRICS[m].label} {format_number(value, m)}"
            for m in metrics
            if (value := loaded.oracle_mean(dataset, m)) is not None
        ]
        entries.append("\n".join(parts) or "—")
    return ("oracle floor", *entries)


def summary_blocks(loaded: ExperimentResults, tables: Mapping[str, MetricTable]) -> list[Block]:
    """The summary heading, its table and one line saying how to read it."""
    metrics = headline_metrics(tables)
    units = ", ".join(
        f"{METRICS[m].label} in {METRICS[m].unit}" for m in metrics if METRICS[m].unit
    )
    rows = [
        (
            group_label(group),
            *(_entry(loaded, tables, metrics, group[0], d) for d in loaded.datasets),
        )
        for group in run_groups(loaded)
    ]
    floor = _floor_row(loaded, metrics)
    if floor is not None:
        rows.append(floor)
    text = (
        f"Mean over seeds ± 95% CI{f' ({units})' if units else ''}; {STAR}: better than "
        f"{loaded.baseline} by the corrected test (closer to the oracle floor where the metric "
        f"has one), {WORSE_MARK}: worse, {EQUIVALENT_MARK}: equivalent within the margin; "
        "unmarked: undecided (the Verdicts section says what deciding would take). Runs joined "
        "by = have the same configuration and are the same models."
    )
    point_files = sorted(loaded.config.experiment.data_files or {})
    if point_files and floor is not None:  # no exact law: say where their floors come from
        text += (
            f" The oracle floors of {', '.join(point_files)} (point files) come from smoothed "
            "bootstrap draws of the file (rows drawn with replacement plus Gaussian noise of "
            "Silverman's bandwidth), not from an exact law."
        )
    return [
        Heading(2, "Summary"),
        Paragraph(text),
        Table(("run", *loaded.datasets), tuple(rows)),
    ]
