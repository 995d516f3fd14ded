"""What a report shows, and the facts about runs and cells that every section shares.

`ReportOptions` are the report's settings: which datasets the series figures show (default:
dino if the experiment has it, else its first multi-modal dataset, else its first dataset),
whether to draw the reverse process and to animate it, the figure format, and an explicit
claims file. The helpers answer, from the files and the architecture registry alone: which runs
are identical (same resolved configuration, hence the same config hash per cell) and are shown
as one, which runs mix with branch weights or a gate (`lowdiff.architectures`, never the
width of an array), and where a cell diverged (C3: cell.json "status": "diverged"; such a cell
is listed among the missing ones with its step, and shown as "diverged at step N").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lowdiff import data
from lowdiff.config import identical_runs
from lowdiff.report.load import CellResult, ExperimentResults


@dataclass(frozen=True, kw_only=True)
class ReportOptions:
    """Settings of one report; the defaults suit every experiment."""

    datasets: tuple[str, ...] | None = None  # series figures; None: `default_series_datasets`
    process: bool = True  # reverse-process figures from process.npz (absent: skipped quietly)
    animate: bool = False  # one GIF of the reverse process per run (first seed)
    figure_format: str = ".png"  # ".png" (full colour), ".webp" or ".jpg"
    claims: Path | None = None  # a claims file; None: found by `claims.find_claims`


def default_series_datasets(datasets: list[str]) -> tuple[str, ...]:
    """dino if present, else the first multi-modal dataset, else the first dataset."""
    if "dino" in datasets:
        return ("dino",)
    multimodal = [d for d in datasets if data.get_dataset(d).components.num_components > 1]
    return tuple((multimodal or datasets)[:1])


def series_datasets(loaded: ExperimentResults, options: ReportOptions) -> tuple[str, ...]:
    """The datasets of the series figures: the option's (those the experiment has), or default."""
    if options.datasets is None:
        return default_series_datasets(loaded.datasets)
    unknown = [d for d in options.datasets if d not in loaded.datasets]
    if unknown:
        raise ValueError(
            f"report datasets {unknown} are not datasets of this experiment; valid: "
            f"{', '.join(loaded.datasets)}"
        )
    return tuple(options.datasets)


def run_groups(loaded: ExperimentResults) -> list[list[str]]:
    """Runs grouped by identical resolved configuration (name and description aside), in order.

    Identical runs have the same config hash in every cell, so their results are the same
    models; the report shows each group once, under the names of all its runs.
    """
    return identical_runs(loaded.config)


def representatives(loaded: ExperimentResults) -> list[str]:
    """The first run of each group of identical runs, in the experiment's order."""
    return [group[0] for group in run_groups(loaded)]


def group_label(group: list[str]) -> str:
    return " = ".join(group)


def runs_by_kind(loaded: ExperimentResults, kind: str) -> list[str]:
    """Representative runs whose architecture declares mixing weights of `kind`."""
    return [
        run
        for run in representatives(loaded)
        if (mixing := loaded.mixing(run)) is not None and mixing.kind == kind
    ]


def divergence_note(loaded: ExperimentResults, run: str, dataset: str) -> str | None:
    """'diverged at step N (seed s)' for each diverged seed of (run, dataset), or None."""
    notes = [
        f"diverged at step {step} (seed {seed})"
        for seed, step in sorted(loaded.diverged(run, dataset).items())
    ]
    return "; ".join(notes) if notes else None


def weight_cells(loaded: ExperimentResults, run: str, dataset: str) -> list[CellResult]:
    """The finished cells of (run, dataset) that recorded mixing weights."""
    return [c for c in loaded.finished(run, dataset) if c.weights is not None]
