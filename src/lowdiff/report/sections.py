"""The report's opening sections: title and setup, how to read it, and one section per run.

`header_blocks` gives the title, the question, the setup (datasets, seeds, training, sampling,
device, cells finished), the missing cells and how to read the numbers. `run_blocks` gives the
section of one run ("Run N: name"): its description, the options that differ from the baseline
(`option_differences`) and its table of datasets x metrics (`run_table`: mean ± CI half-width,
Δ vs baseline, and the oracle floor under each dataset). `tables_note` states the Holm families.
"""

from __future__ import annotations

from collections.abc import Mapping

from lowdiff.architectures import ARCHITECTURE_OPTIONS, COMMON_OPTIONS
from lowdiff.config import RunConfig, to_dict
from lowdiff.metrics import METRICS
from lowdiff.report.document import Block, Bullets, Heading, Paragraph, Table, comma_list
from lowdiff.report.load import ExperimentResults
from lowdiff.report.tables import (
    ALPHA,
    MARK,
    ORACLE_METRICS,
    TABLE_METRICS,
    MetricTable,
    format_delta,
    format_number,
    format_summary,
    num_modes,
)

# --- part 1: title, question, setup, how to read ------------------------------------------------


def _setup_items(loaded: ExperimentResults) -> list[str]:
    settings = loaded.config.experiment
    reference = loaded.config.run(loaded.baseline)
    devices = sorted(
        {str(c.record.get("batch", {}).get("device", "?")) for c in loaded.cells.values()}
    )
    models = sorted(
        {int(c.record.get("batch", {}).get("models", 0)) for c in loaded.cells.values()}
    )
    total = len(loaded.run_names) * len(loaded.datasets) * len(loaded.seeds)
    return [
        f"Datasets: {comma_list(loaded.datasets)} ({settings.num_points} training points each)",
        f"Seeds: {comma_list(loaded.seeds)} ({len(loaded.seeds)} per run and dataset)",
        f"Training (baseline; other runs list what they change): {reference.train.num_steps} "
        f"steps, batch size {reference.train.batch_size} per model, learning rate "
        f"{reference.train.learning_rate:g}, {reference.schedule.num_timesteps} diffusion "
        f"timesteps ({reference.schedule.beta_schedule} schedule)",
        f"Sampling: {reference.eval.num_samples} samples per model; oracle floor from "
        f"{settings.oracle_draws} fresh draw(s) of {loaded.oracle_num_samples or '?'} points",
        f"Device: {comma_list(devices) if devices else settings.device}; up to "
        f"{settings.max_models_per_batch} models per batched engine call "
        f"(used: {comma_list(models) if models else 'none'})",
        f"Cells finished: {len(loaded.cells)} of {total}",
    ]


HOW_TO_READ = (
    "How to read: each entry is the mean over seeds ± the half-width of its 95% Student-t "
    "confidence interval. Δ is the paired difference run − baseline over the same seeds (the "
    "seeds share data order and noise), tested with a two-sided paired t-test; {mark} marks a "
    "difference that stays significant at α = {alpha} after Holm correction over all runs × "
    "datasets of that metric, and only such a difference is given a direction in words. ↓ "
    "after a metric: lower values are the improvement; ↑: higher values are. The oracle floor "
    "is the value of the metric for fresh draws of the true distribution, i.e. what a perfect "
    "generator would get (the KL estimate of a perfect generator is not exactly 0). With a "
    "single seed there is no interval and no test. Train and sample times are the batched "
    "wall clock divided by the number of models trained together."
)


def header_blocks(loaded: ExperimentResults) -> list[Block]:
    settings = loaded.config.experiment
    blocks: list[Block] = [Heading(1, f"lowdiff report: {settings.name}")]
    if settings.question:
        blocks.append(Paragraph(f"Question: {settings.question}"))
    blocks += [Heading(2, "Setup"), Bullets(tuple(_setup_items(loaded)))]
    if loaded.missing:
        blocks.append(Heading(3, "Missing cells"))
        blocks.append(
            Paragraph(
                f"{len(loaded.missing)} cell(s) have no finished result and are left out of every "
                "table, test and figure (rerun the experiment to complete them):"
            )
        )
        items = [
            f"{m.run} / {m.dataset} / seed {m.seed}: missing, {m.reason}" for m in loaded.missing
        ]
        blocks.append(Bullets(tuple(items)))
    blocks.append(Paragraph(HOW_TO_READ.format(mark=MARK, alpha=ALPHA)))
    return blocks


# --- part 2: one section per run ---------------------------------------------------------------


def _model_line(run: RunConfig) -> str:
    options = (*COMMON_OPTIONS, *ARCHITECTURE_OPTIONS[run.model.arch])
    return (
        f"model.arch = {run.model.arch} ("
        + comma_list(f"{name} = {getattr(run.model, name)}" for name in options)
        + ")"
    )


def option_differences(run: RunConfig, baseline: RunConfig) -> list[str]:
    """'section.key = value' for every option of `run` that differs from the baseline.

    A change of architecture lists the new architecture's own options in full (their defaults
    included), since the baseline has no such options to differ from.
    """
    changes = []
    if run.model.arch != baseline.model.arch:
        changes.append(f"model.arch = {run.model.arch}")
        changes += [
            f"model.{name} = {getattr(run.model, name)}"
            for name in ARCHITECTURE_OPTIONS[run.model.arch]
        ]
    own, reference = to_dict(run), to_dict(baseline)
    for section in ("model", "train", "schedule", "eval"):
        for key, value in own[section].items():
            line = f"{section}.{key} = {value}"
            if value != reference[section][key] and line not in changes and key != "arch":
                changes.append(line)
    return changes


def _table_cell(
    loaded: ExperimentResults,
    tables: Mapping[str, MetricTable],
    run: str,
    dataset: str,
    metric: str,
) -> str:
    summary = tables[metric].summaries.get((run, dataset))
    if summary is None:
        return "missing"
    text = format_summary(summary, metric, len(loaded.seeds))
    if metric == "modes_captured":
        text += f" of {num_modes(dataset)}"
    comparison = tables[metric].comparisons.get((run, dataset))
    if comparison is not None:
        text += "\n" + format_delta(comparison, metric)
    return text


def _oracle_row(loaded: ExperimentResults, dataset: str) -> tuple[str, ...] | None:
    if dataset not in loaded.oracle:
        return None
    cells = []
    for metric in TABLE_METRICS:
        value = loaded.oracle_mean(dataset, metric) if metric in ORACLE_METRICS else None
        text = "—" if value is None else format_number(value, metric)
        cells.append(text + (f" of {num_modes(dataset)}" if metric == "modes_captured" else ""))
    return (f"↳ {dataset} oracle floor", *cells)


def _column_title(metric: str) -> str:
    direction = METRICS[metric].lower_is_better
    return METRICS[metric].label + {True: " ↓", False: " ↑", None: ""}[direction]


def run_table(loaded: ExperimentResults, tables: Mapping[str, MetricTable], run: str) -> Table:
    """Rows = datasets (each followed by its oracle floor), columns = the table metrics."""
    rows = []
    for dataset in loaded.datasets:
        rows.append(
            (dataset, *(_table_cell(loaded, tables, run, dataset, m) for m in TABLE_METRICS))
        )
        oracle = _oracle_row(loaded, dataset)
        if oracle is not None:
            rows.append(oracle)
    return Table(("dataset", *(_column_title(m) for m in TABLE_METRICS)), tuple(rows))


def run_blocks(
    loaded: ExperimentResults, tables: Mapping[str, MetricTable], index: int, run: RunConfig
) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Run {index}: {run.name}")]
    if run.description:
        blocks.append(Paragraph(run.description))
    baseline = loaded.config.run(loaded.baseline)
    if run.name == loaded.baseline:
        blocks.append(
            Paragraph(f"The baseline every other run is compared with. {_model_line(run)}.")
        )
    else:
        changes = option_differences(run, baseline)
        line = "; ".join(changes) if changes else "none (same options as the baseline)"
        blocks.append(Paragraph(f"Differs from the baseline ({loaded.baseline}): {line}."))
    blocks.append(run_table(loaded, tables, run.name))
    return blocks


def tables_note(tables: Mapping[str, MetricTable]) -> Paragraph:
    sizes = {
        METRICS[metric].label: next(iter(table.comparisons.values())).family_size
        for metric, table in tables.items()
        if table.comparisons
    }
    listed = comma_list(f"{label}: {size}" for label, size in sizes.items())
    return Paragraph(
        f"{MARK} significant at α = {ALPHA} after Holm correction; tested comparisons per "
        f"metric family: {listed or 'none'}."
    )
