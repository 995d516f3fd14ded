"""The experiment report: report.md and report.html built from a results directory alone.

`write_report(root, options)` reads what the runner left on disk (experiment.json, oracle.json,
every cell's cell.json and arrays, through the safe readers of `results`) and writes, with no
training, no model objects and no torch:

    <root>/report.md            Markdown, figures linked as figures/<name>
    <root>/report.html          the same content, self-contained (figures inlined, compressed)
    <root>/figures/*            the figures of protocol §2-§3 and the reverse process (`plots`)

The report is a pure function of those files: rebuilding it gives the same bytes. Its parts, in
order: the summary table (runs × datasets, headline metrics, ★ where the corrected test says
better; `overview`), the setup and how to read it (`sections`), the claims of the series'
write-up when the experiment has a claims file (`claims`), one section per group of identical
runs (`sections`), the figures (`figures`, `mixing_figures`, `process_figures`), and the
analysis in words (`analysis`). `write_comparison` (`compare`) builds one report over several
results directories. Both pages are written to temporaries first and then renamed together, so
they never disagree.

Modules, each using only those listed before it: `document` (blocks, Markdown, HTML, writing),
`load` (files -> `ExperimentResults`), `tables` (summaries, Holm-corrected comparisons),
`options`, `text`, `overview`, `sections`, `figures`, `mixing_figures`, `process_figures`,
`claims`, `analysis`, `compare`.
"""

from __future__ import annotations

from pathlib import Path

from lowdiff import plots
from lowdiff.report.analysis import analysis_blocks
from lowdiff.report.claims import claims_blocks, find_claims, load_claims
from lowdiff.report.compare import write_comparison
from lowdiff.report.document import (
    Block,
    Heading,
    Paragraph,
    render_html,
    render_markdown,
    write_pages,
)
from lowdiff.report.figures import Context, common_plans, write_figures
from lowdiff.report.load import ExperimentResults, load_results
from lowdiff.report.mixing_figures import branch_plans, gate_plans
from lowdiff.report.options import ReportOptions, run_groups
from lowdiff.report.overview import summary_blocks
from lowdiff.report.process_figures import animation_blocks, process_plans
from lowdiff.report.sections import header_blocks, run_blocks
from lowdiff.report.tables import metric_tables
from lowdiff.report.truth_figures import truth_plans

__all__ = ["ReportOptions", "build_blocks", "write_comparison", "write_report"]


def _claims(loaded: ExperimentResults, options: ReportOptions) -> list[Block]:
    name = loaded.config.experiment.name
    path = find_claims(loaded.root, name, options.claims)
    if path is None:
        return []
    return claims_blocks(load_claims(path), loaded, path.name)


def build_blocks(loaded: ExperimentResults, options: ReportOptions | None = None) -> list[Block]:
    """The whole report as blocks; draws and saves the figures on the way."""
    options = options or ReportOptions()
    settings = loaded.config.experiment
    tables = metric_tables(loaded)
    colors = plots.run_colors(loaded.run_names, baseline=loaded.baseline)
    context = Context(loaded, tables, colors, options)
    blocks: list[Block] = [Heading(1, f"lowdiff report: {settings.name}")]
    if settings.question:
        blocks.append(Paragraph(f"Question: {settings.question}"))
    blocks += summary_blocks(loaded, tables) + header_blocks(loaded) + _claims(loaded, options)
    for group in run_groups(loaded):
        blocks += run_blocks(loaded, tables, group)
    plans = common_plans(context) + branch_plans(context) + gate_plans(context)
    plans += truth_plans(context)
    if options.process:
        plans += process_plans(context)
    blocks += write_figures(context, plans)
    if options.animate:
        blocks += animation_blocks(context)
    return blocks + analysis_blocks(loaded, tables)


def write_report(root: Path, options: ReportOptions | None = None) -> Path:
    """Build <root>/report.md, <root>/report.html and <root>/figures/ from the files on disk.

    Raises `results.ResultsError` when `root` is not a lowdiff results directory. Returns the
    path of report.md.
    """
    root = Path(root)
    loaded = load_results(root)
    blocks = build_blocks(loaded, options)
    title = f"lowdiff report: {loaded.config.experiment.name}"
    pages = {
        "report.md": render_markdown(blocks),
        "report.html": render_html(blocks, title=title, root=root),
    }
    write_pages(root, pages)
    return root / "report.md"
