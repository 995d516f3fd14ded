"""One report over several results directories (`lowdiff compare DIR...`).

`write_comparison(dirs, out)` loads every directory (`load_results`), names each run
"<directory>/<run>" (identical runs once), and writes <out>/report.md, <out>/report.html and
<out>/figures/: which datasets and seeds each directory holds and how they pair with the
reference (the first directory's baseline run), then per headline metric a table of runs ×
datasets (mean ± 95% CI, clipped to the metric's range; Δ vs the reference paired over the
seeds both have, Holm-corrected over the metric's table and judged as the catalogue says — by the
distance to the reference's oracle floor for sample metrics; ★ where that test says better), the
floor row, and the metric's bar figure. Datasets or seeds that do not match are stated, never
paired; nor are runs measured on another scale than the reference (another sample count, k or
training-set size: their floors differ, so their values are not comparable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lowdiff import oracle, plots, stats
from lowdiff.metrics import METRICS
from lowdiff.report.document import (
    Block,
    Bullets,
    Heading,
    Image,
    Paragraph,
    Table,
    comma_list,
    render_html,
    render_markdown,
    write_pages,
)
from lowdiff.report.load import ExperimentResults, load_results
from lowdiff.report.options import representatives
from lowdiff.report.overview import HEADLINE_METRICS
from lowdiff.report.tables import compare_runs, metric_values
from lowdiff.report.text import (
    STAR,
    clipped_interval,
    format_delta,
    format_number,
    format_summary,
)

Values = dict[str, dict[str, dict[int, float]]]  # "<dir>/<run>" -> dataset -> seed -> value


def _labels(dirs: Sequence[Path]) -> list[str]:
    """The directories' names, numbered where two share one."""
    labels: list[str] = []
    for path in dirs:
        name = Path(path).resolve().name
        labels.append(name if name not in labels else f"{name} ({len(labels) + 1})")
    return labels


def _values(loaded: dict[str, ExperimentResults], metric: str) -> Values:
    values: Values = {}
    for label, results in loaded.items():
        by_run = metric_values(results, metric)
        for run in representatives(results):
            if by_run.get(run):
                values[f"{label}/{run}"] = by_run[run]
    return values


Scale = tuple[int, int, int]  # (training points, samples, k): what a metric's value depends on


def _scales(loaded: dict[str, ExperimentResults]) -> dict[str, Scale]:
    """ "<dir>/<run>" -> the scale its metrics were measured on."""
    return {
        f"{label}/{run}": (
            results.config.experiment.num_points,
            *oracle.pair_of(results.config.run(run)),
        )
        for label, results in loaded.items()
        for run in representatives(results)
    }


def _scale_text(scale: Scale) -> str:
    return f"{scale[0]:,} training points, {scale[1]:,} samples, k = {scale[2]}"


def _pairing(
    loaded: dict[str, ExperimentResults], reference: str, scales: Mapping[str, Scale]
) -> list[str]:
    """One line per directory: its datasets and seeds, and what pairs with the reference."""
    first = next(iter(loaded.values()))
    items = [f"Reference: {reference} (the first directory's baseline run)."]
    for label, results in loaded.items():
        shared = [d for d in results.datasets if d in first.datasets]
        alone = [d for d in results.datasets if d not in first.datasets]
        seeds = [s for s in results.seeds if s in first.seeds]
        text = (
            f"{label} ({results.config.experiment.name}): datasets {comma_list(results.datasets)}; "
            f"seeds {comma_list(results.seeds)}; paired with the reference on "
            f"{comma_list(shared) or 'no dataset'} over seeds {comma_list(seeds) or 'none'}"
        )
        if alone:
            text += f"; not compared (the reference lacks them): {comma_list(alone)}"
        unpaired = [s for s in results.seeds if s not in first.seeds]
        if unpaired:
            text += f"; seeds without a partner: {comma_list(unpaired)}"
        items.append(text)
    for key, scale in scales.items():
        if scale != scales[reference]:
            items.append(
                f"{key} is measured on {_scale_text(scale)}, the reference on "
                f"{_scale_text(scales[reference])}: its values are shown but not compared "
                "(metrics and their oracle floors depend on these sizes)."
            )
    return items


def _entry(
    values: Values,
    key: str,
    dataset: str,
    metric: str,
    num_seeds: int,
    comparisons: Mapping[tuple[str, str], stats.Comparison],
) -> str:
    by_seed = values.get(key, {}).get(dataset)
    if not by_seed:
        return "—"
    text = format_summary(stats.summarize(list(by_seed.values())), metric, dataset, num_seeds)
    comparison = comparisons.get((key, dataset))
    if comparison is not None:
        text += "\n" + format_delta(comparison, metric)
    return text


def _metric_blocks(
    values: Values,
    metric: str,
    reference: str,
    floors: Mapping[str, float | None],
    comparable: Sequence[str],
    out: Path,
    margins: Mapping[str, float | None] | None = None,
) -> list[Block]:
    info = METRICS[metric]
    datasets = list(dict.fromkeys(d for by_d in values.values() for d in by_d))
    candidates = [key for key in values if key != reference and key in comparable]
    comparisons = compare_runs(
        values, reference, candidates, metric=metric, oracle=floors, margins=margins
    )
    seeds = max((len(s) for by_d in values.values() for s in by_d.values()), default=1)
    rows = tuple(
        (key, *(_entry(values, key, d, metric, seeds, comparisons) for d in datasets))
        for key in values
    )
    if any(floors.get(d) is not None for d in datasets):
        rows += (
            (
                "oracle floor (reference)",
                *(
                    format_number(v, metric) if (v := floors.get(d)) is not None else "—"
                    for d in datasets
                ),
            ),
        )
    means = {
        k: {d: stats.summarize(list(v.values())).mean for d, v in by_d.items()}
        for k, by_d in values.items()
    }
    intervals = {}
    for key, by_d in values.items():
        for d, v in by_d.items():
            interval = clipped_interval(stats.summarize(list(v.values())), metric, d)
            if interval is not None:
                intervals.setdefault(key, {})[d] = interval[:2]
    name = f"figures/{metric}_comparison.png"
    figure = plots.metric_bars(
        means, ci=intervals or None, oracle=None, bounds=info.bounds,
        ylabel=info.label + (f" ({info.unit})" if info.unit else ""), title=info.description,
    )  # fmt: skip
    plots.save_figure(figure, out / name)
    return [
        Heading(2, info.label),
        Table(("run", *datasets), rows),
        Image(name, info.label, f"{info.label} per run and dataset; whiskers: 95% CI."),
    ]


def write_comparison(dirs: Sequence[str | Path], out: str | Path) -> Path:
    """One report over several results directories, written to `out`; returns out/report.md.

    Raises `results.ResultsError` for a directory that is not a lowdiff results directory and
    ValueError without directories.
    """
    if not dirs:
        raise ValueError("compare needs at least one results directory")
    out = Path(out)
    loaded = dict(zip(_labels(dirs), (load_results(Path(d)) for d in dirs), strict=True))
    first_label, first = next(iter(loaded.items()))
    reference = f"{first_label}/{first.baseline}"
    scales = _scales(loaded)
    blocks: list[Block] = [
        Heading(1, "lowdiff comparison: " + comma_list(loaded)),
        Paragraph(
            f"Each run is named <directory>/<run>. Δ is the paired difference against {reference} "
            f"over the seeds both have; {STAR}: better by the Holm-corrected test over the "
            "metric's table (closer to the reference's oracle floor where the metric has one), "
            "▼ worse, ≈ equivalent within the reference's margin (two one-sided tests); "
            "unmarked: undecided. Mean ± 95% CI over seeds."
        ),
        Bullets(tuple(_pairing(loaded, reference, scales))),
    ]
    comparable = [key for key, scale in scales.items() if scale == scales[reference]]
    for metric in HEADLINE_METRICS:
        values = _values(loaded, metric)
        floors = {d: first.oracle_mean(d, metric) for d in first.datasets}
        margins = {d: first.margin(d, metric) for d in first.datasets}
        if values:
            blocks += _metric_blocks(values, metric, reference, floors, comparable, out, margins)
    pages = {
        "report.md": render_markdown(blocks),
        "report.html": render_html(blocks, title="lowdiff comparison", root=out),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_pages(out, pages)
    return out / "report.md"
