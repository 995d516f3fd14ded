"""The experiment report: report.md and report.html built from a results directory alone.

`write_report(root)` reads what `experiments.execute` left on disk (experiment.json, oracle.json
and every finished cell's cell.json and arrays, through the safe readers of `results`), and
writes, with no training and no model objects:

    <root>/report.md            Markdown, figures linked as figures/<name>.png
    <root>/report.html          the same content, self-contained (figures inline as base64 PNG)
    <root>/figures/*.png        the figures of SPEC §2-§3 (plots.py), written atomically

The report is a pure function of those files: rebuilding it gives the same bytes. Its parts:

1. title, question, setup, missing cells, and how to read the numbers;
2. one section per run ("Run N: name", N = its index in the experiment file) with its options
   that differ from the baseline and a table datasets x metrics of mean ± 95% CI half-width over
   seeds, Δ vs baseline (paired over the same seeds) and the oracle floor;
3. the figures, each with a short description; Series A figures when a run recorded two branch
   weights (dual-scale), Series B figures when a run recorded a gate (dual-expert);
4. the analysis, in words that come from `stats.verdict` only: "better" is written only where a
   paired t-test, Holm-corrected over all runs x datasets of one metric, says so.

Statistics follow `stats.py`: seeds are the replicates and are paired across runs (a run's seed s
and the baseline's seed s share data order and noise), so comparisons use the seeds both cells
finished. A cell that is missing, unfinished or written under another configuration (its config
hash does not match experiment.json) is listed as missing and left out, never guessed.

The package, one concept per module, imports in this order (each uses only those above it):
`document` (blocks, Markdown and HTML), `load` (the files on disk -> `ExperimentResults`),
`tables` (summaries, Holm-corrected comparisons, number formats), `sections` (header and one
section per run), `figures` (figure plans and drawing), `analysis` (the text of part 4). This
file assembles them into `build_blocks` and `write_report`, and re-exports their public names.
"""

from __future__ import annotations

from pathlib import Path

from lowdiff import plots, results
from lowdiff.report.analysis import (
    GATE_EXTREME,
    GATE_MIDDLE,
    GATE_ONE_EXPERT,
    GATE_SMALL_VARIATION,
    GATE_STUCK_STD,
    SERIES_B_INTRO,
    SUMMARY_METRICS,
    WEIGHT_SMALL_CHANGE,
    GateStats,
    analysis_blocks,
    classify_gate,
    gate_stats,
    summary_items,
    tally,
    weight_shift,
)
from lowdiff.report.document import (
    HTML_STYLE,
    MARKDOWN,
    Block,
    Bullets,
    Heading,
    Image,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)
from lowdiff.report.figures import (
    FIRST_SEED_NOTE,
    NOTHING_FINISHED,
    SMOOTHING_NOTE,
    SPECIALISATION_DATASETS,
    FigurePlan,
    Pick,
    figure_plans,
    write_figures,
)
from lowdiff.report.load import CellResult, ExperimentResults, MissingCell, load_results
from lowdiff.report.sections import (
    HOW_TO_READ,
    header_blocks,
    option_differences,
    run_blocks,
    run_table,
    tables_note,
)
from lowdiff.report.tables import (
    ALPHA,
    FORMATS,
    MARK,
    ORACLE_METRICS,
    TABLE_METRICS,
    MetricTable,
    Values,
    compare_runs,
    describe_comparison,
    format_delta,
    format_summary,
    metric_tables,
)

# Every public name of the former single-module report.py (its API and its constants),
# so that `from lowdiff.report import X` keeps working.
__all__ = [
    "ALPHA",
    "Block",
    "Bullets",
    "CellResult",
    "ExperimentResults",
    "FIRST_SEED_NOTE",
    "FORMATS",
    "FigurePlan",
    "GATE_EXTREME",
    "GATE_MIDDLE",
    "GATE_ONE_EXPERT",
    "GATE_SMALL_VARIATION",
    "GATE_STUCK_STD",
    "GateStats",
    "HOW_TO_READ",
    "HTML_STYLE",
    "Heading",
    "Image",
    "MARK",
    "MARKDOWN",
    "MetricTable",
    "MissingCell",
    "NOTHING_FINISHED",
    "ORACLE_METRICS",
    "Paragraph",
    "Pick",
    "SERIES_B_INTRO",
    "SMOOTHING_NOTE",
    "SPECIALISATION_DATASETS",
    "SUMMARY_METRICS",
    "TABLE_METRICS",
    "Table",
    "Values",
    "WEIGHT_SMALL_CHANGE",
    "build_blocks",
    "classify_gate",
    "compare_runs",
    "describe_comparison",
    "figure_plans",
    "format_delta",
    "format_summary",
    "gate_stats",
    "load_results",
    "metric_tables",
    "option_differences",
    "render_html",
    "render_markdown",
    "run_table",
    "summary_items",
    "tally",
    "weight_shift",
    "write_figures",
    "write_report",
]


def build_blocks(loaded: ExperimentResults) -> list[Block]:
    """The whole report as blocks; draws and saves the figures on the way."""
    tables = metric_tables(loaded)
    colors = plots.run_colors(loaded.run_names, baseline=loaded.baseline)
    blocks = header_blocks(loaded) + [tables_note(tables)]
    for index, run in enumerate(loaded.config.runs):
        blocks += run_blocks(loaded, tables, index, run)
    blocks += write_figures(loaded, figure_plans(loaded, tables, colors))
    return blocks + analysis_blocks(loaded, tables)


def write_report(root: Path) -> Path:
    """Build <root>/report.md, <root>/report.html and <root>/figures/ from the files on disk.

    Raises `results.ResultsError` when `root` is not a lowdiff results directory. Returns the
    path of report.md.
    """
    root = Path(root)
    loaded = load_results(root)
    blocks = build_blocks(loaded)
    title = f"lowdiff report: {loaded.config.experiment.name}"
    pages = {
        "report.md": render_markdown(blocks),
        "report.html": render_html(blocks, title=title, root=root),
    }
    for name, text in pages.items():
        results.atomic_write_bytes(root / name, text.encode())
    return root / "report.md"
