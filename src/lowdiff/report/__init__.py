"""The experiment report: report.md and report.html built from a results directory alone.

`write_report(root, options)` reads what the runner left on disk (experiment.json, oracle.json,
every cell's cell.json and arrays, through the safe readers of `results`) and writes, with no
training, no model objects and no torch:

    <root>/report.md            Markdown, figures linked as figures/<name>
    <root>/report.html          the same content, self-contained (figures inlined, compressed)
    <root>/figures/*            the figures of protocol §2-§3 and the reverse process (`plots`)

The report is a pure function of those files: rebuilding it gives the same bytes. Its parts, in
order, answer first: a table of contents; the verdicts (`effects`: the forest plot
figures/effects.png, the headline per run, the margins and the seeds undecided comparisons would
take); the summary (the table of runs × datasets with ★ where the corrected test says better, ▼
where it says worse, ≈ where it says equivalent; `overview`); the figures (`sweep_figures` for a
sweep's response curves, `figures`, `mixing_figures`, `process_figures`); the setup and how to
read it (`sections`), the claims of the series' write-up when the experiment has a claims file
(`claims`), one section per group of identical runs (`sections`), and the analysis in words
(`analysis`). `write_comparison` (`compare`) builds one report over several results
directories. Both pages are written to temporaries first and then renamed together, so they
never disagree.

Modules, each using only those listed before it: `document` (blocks, Markdown, HTML, writing),
`load` (files -> `ExperimentResults`), `tables` (summaries, Holm-corrected comparisons),
`options`, `text`, `overview`, `effects`, `sections`, `figures`, `mixing_figures`,
`process_figures`, `sweep_figures`, `claims`, `analysis`, `compare`.
"""

from __future__ import annotations

from pathlib import Path

from lowdiff import plots
from lowdiff.report.analysis import analysis_blocks
from lowdiff.report.claims import claims_blocks, find_claims, load_claims
from lowdiff.report.compare import write_comparison
from lowdiff.report.document import (
    Block,
    Contents,
    Heading,
    Image,
    Paragraph,
    render_html,
    render_markdown,
    write_pages,
)
from lowdiff.report.effects import effects_blocks
from lowdiff.report.figures import Context, common_plans, write_figures
from lowdiff.report.load import ExperimentResults, load_results
from lowdiff.report.mixing_figures import branch_plans, gate_plans
from lowdiff.report.options import ReportOptions, run_groups
from lowdiff.report.overview import summary_blocks
from lowdiff.report.process_figures import animation_blocks, process_plans
from lowdiff.report.sections import header_blocks, run_blocks
from lowdiff.report.sweep_figures import sweep_plans
from lowdiff.report.tables import metric_tables

__all__ = ["ReportOptions", "build_blocks", "write_comparison", "write_report"]

EFFECTS = "figures/effects.png"  # the answer: paired effects against the baseline


def _claims(loaded: ExperimentResults, options: ReportOptions) -> list[Block]:
    name = loaded.config.experiment.name
    path = find_claims(loaded.root, name, options.claims)
    if path is None:
        return []
    return claims_blocks(load_claims(path), loaded, path.name)


def _answer(loaded: ExperimentResults, summary: list[Block], figures: list[Block]) -> list[Block]:
    """The summary with the answer figure (figures/effects.png, when drawn) above its table;
    that figure is then left out of the figures section."""
    effects = next((b for b in figures if isinstance(b, Image) and b.path == EFFECTS), None)
    if effects is None and (loaded.root / EFFECTS).is_file():
        effects = Image(EFFECTS, "Paired effects", "Each run's paired effect against the baseline.")
    if effects is None:
        return summary
    return [summary[0], effects, *summary[1:]]


def build_blocks(loaded: ExperimentResults, options: ReportOptions | None = None) -> list[Block]:
    """The whole report as blocks, answer first: title, question, contents, the summary (with
    the answer figure), the figures, then the setup, claims, per-run tables and the analysis.
    Draws and saves the figures on the way."""
    options = options or ReportOptions()
    settings = loaded.config.experiment
    tables = metric_tables(loaded)
    colors = plots.run_colors(loaded.run_names, baseline=loaded.baseline)
    context = Context(loaded, tables, colors, options)
    plans = sweep_plans(context) + common_plans(context)
    plans += branch_plans(context) + gate_plans(context)
    if options.process:
        plans += process_plans(context)
    figures = write_figures(context, plans)
    if options.animate:
        figures += animation_blocks(context)
    blocks: list[Block] = [Heading(1, f"lowdiff report: {settings.name}")]
    if settings.question:
        blocks.append(Paragraph(f"Question: {settings.question}"))
    blocks.append(Contents())
    verdicts = effects_blocks(loaded, tables)  # the answer first: effects.png and the verdicts
    summary = summary_blocks(loaded, tables)
    blocks += verdicts + (summary if verdicts else _answer(loaded, summary, figures))
    blocks += [b for b in figures if not (isinstance(b, Image) and b.path == EFFECTS)]
    blocks += header_blocks(loaded) + _claims(loaded, options)
    for group in run_groups(loaded):
        blocks += run_blocks(loaded, tables, group)
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
