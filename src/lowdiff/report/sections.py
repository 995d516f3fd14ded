"""The report's sections: setup, how to read it, and one section per group of identical runs.

`header_blocks` gives the question, the setup (datasets, seeds, training, sampling, device,
cells finished), the missing cells and how to read the numbers (the single-seed case said once).
`run_blocks` gives the section of one group of identical runs ("Run N: name", or "Runs 2, 3, 4:
a = b = c" with the statement that they share one configuration): its description, the options
that differ from the baseline (`option_differences`) and its table of datasets x metrics
(`run_table`: mean ± CI, clipped to each metric's range, Δ vs baseline, the measured batch
times, diverged seeds, and the oracle floor under each dataset).
"""

from __future__ import annotations

from collections.abc import Mapping

from lowdiff.architectures import COMMON_OPTIONS, arch_info
from lowdiff.config import RunConfig, to_dict
from lowdiff.ema import ema_mean_age, ema_warning
from lowdiff.metrics import METRICS
from lowdiff.report.document import Block, Bullets, Heading, Paragraph, Table, comma_list
from lowdiff.report.load import ExperimentResults
from lowdiff.report.options import divergence_note, group_label
from lowdiff.report.tables import ALPHA, MetricTable
from lowdiff.report.text import (
    STAR,
    format_delta,
    format_number,
    format_summary,
    measured_time,
    metric_title,
    num_modes,
)

TIME_METRICS = ("training_time", "inference_time")

# --- setup and how to read ---------------------------------------------------------------------


def _setup_items(loaded: ExperimentResults) -> list[str]:
    settings = loaded.config.experiment
    reference = loaded.config.run(loaded.baseline)
    batches = [c.record.get("batch") or {} for c in loaded.cells.values()]
    devices = sorted({str(b.get("device", "?")) for b in batches})
    total = len(loaded.run_names) * len(loaded.datasets) * len(loaded.seeds)
    return [
        f"Datasets: {comma_list(loaded.datasets)} ({settings.num_points} training points each)",
        f"Seeds: {comma_list(loaded.seeds)} ({len(loaded.seeds)} per run and dataset)",
        f"Training (baseline; other runs list what they change): {reference.train.num_steps} "
        f"steps, batch size {reference.train.batch_size} per model, learning rate "
        f"{reference.train.learning_rate:g}, {reference.schedule.num_timesteps} diffusion "
        f"timesteps ({reference.schedule.beta_schedule} schedule)",
        f"Sampling: {reference.eval.num_samples} samples per model; k-nearest-neighbour metrics "
        f"with k = {reference.eval.knn_k}; oracle floor from "
        f"{settings.oracle_draws} fresh draw(s) of {loaded.oracle_num_samples or '?'} points",
        f"Device: {comma_list(devices) if devices else settings.device}; up to "
        f"{settings.max_models_per_batch} models per batched engine call",
        f"Cells finished: {len(loaded.cells)} of {total}",
        *_ema_items(loaded),
    ]


def _ema_items(loaded: ExperimentResults) -> list[str]:
    """The EMA's mean age against the budget, per distinct training setting, with the warning
    when it exceeds 10 % of it (short budgets compare early learning through a lagging average)."""
    items, seen = [], set()
    for name in loaded.run_names:
        train = loaded.config.run(name).train
        key = (train.num_steps, train.ema_beta, train.ema_update_every, train.ema_warmup_steps)
        if key in seen:
            continue
        seen.add(key)
        age = ema_mean_age(train)
        line = (
            f"EMA of the weights ({name if len(seen) > 1 else 'every run'}): beta "
            f"{train.ema_beta:g} updated every {train.ema_update_every} steps, mean age "
            f"{age:,.0f} steps at the end of training ({age / train.num_steps:.0%} of the "
            f"{train.num_steps:,}-step budget)"
        )
        warning = ema_warning(train)
        items.append(line + (f". Warning: {warning}" if warning else ""))
    return items


HOW_TO_READ = (
    "How to read: each entry is the mean over seeds ± the half-width of its 95% Student-t "
    "confidence interval; an interval that would leave a metric's range (a fraction below 0, "
    "more modes than exist) is clipped to it and written [low, high]. Δ is the paired "
    "difference run − baseline over the same seeds (the seeds share data order and noise). "
    "{star} marks a difference the corrected test (Holm over all runs × datasets of the metric, "
    "α = {alpha}) calls better, ▼ one it calls worse, ≈ one shown equivalent within the "
    "metric's margin δ (two one-sided tests); for metrics with an oracle value, better means "
    "closer to it. Unmarked differences are undecided. "
    "↓ after a metric: lower values are the improvement; ↑: higher values are. The oracle floor "
    "is the metric for fresh draws of the true distribution: what a perfect generator gets. "
    "Times are the measured wall clock of the batch the model was trained (sampled) in, with "
    "the number of models sharing it."
)
SINGLE_SEED = (
    "Every cell has a single seed: the numbers have no interval and no comparison is tested."
)


def missing_items(loaded: ExperimentResults) -> list[str]:
    """One line per run and reason: 'fixed: all 12 cells (not finished ...)' or the cells
    'learned: dino / seed 1, moons / seed 0 (stale: ...)'."""
    groups: dict[tuple[str, str], list[str]] = {}
    for m in loaded.missing:
        groups.setdefault((m.run, m.reason), []).append(f"{m.dataset} / seed {m.seed}")
    per_run = len(loaded.datasets) * len(loaded.seeds)
    return [
        f"{run}: {f'all {per_run} cells' if len(cells) == per_run else comma_list(cells)} "
        f"({reason})"
        for (run, reason), cells in groups.items()
    ]


def header_blocks(loaded: ExperimentResults) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Setup"), Bullets(tuple(_setup_items(loaded)))]
    if loaded.missing:
        blocks.append(Heading(3, "Missing cells"))
        blocks.append(
            Paragraph(
                f"{len(loaded.missing)} cell(s) have no finished result and are left out of every "
                "table, test and figure (rerun the experiment to complete them):"
            )
        )
        blocks.append(Bullets(tuple(missing_items(loaded))))
    text = HOW_TO_READ.format(star=STAR, alpha=ALPHA)
    if len(loaded.seeds) == 1:
        text += " " + SINGLE_SEED
    blocks.append(Paragraph(text))
    return blocks


# --- one section per group of identical runs --------------------------------------------------


def _model_line(run: RunConfig) -> str:
    own = arch_info(run.model.arch).options
    options = own if ":" in run.model.arch else (*COMMON_OPTIONS, *own)  # a plugin: its own
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
            for name in arch_info(run.model.arch).options
        ]
    own, reference = to_dict(run), to_dict(baseline)
    for section in ("model", "train", "schedule", "eval"):
        for key, value in own[section].items():
            line = f"{section}.{key} = {value}"
            skip = key in ("arch", "plugin_root")  # plugin_root: where the file lies, no option
            if value != reference[section].get(key) and line not in changes and not skip:
                changes.append(line)
    return changes


def table_metrics(tables: Mapping[str, MetricTable]) -> list[str]:
    """The metric columns of run tables: every table metric with a value, times aside."""
    return [m for m, t in tables.items() if t.summaries and m not in TIME_METRICS]


def _table_cell(loaded: ExperimentResults, table: MetricTable, run: str, dataset: str) -> str:
    summary = table.summaries.get((run, dataset))
    if summary is None:
        return divergence_note(loaded, run, dataset) or "missing"
    text = format_summary(summary, table.metric, dataset, len(loaded.seeds))
    comparison = table.comparisons.get((run, dataset))
    if comparison is not None:
        text += "\n" + format_delta(comparison, table.metric)
    return text


def _times_cell(loaded: ExperimentResults, run: str, dataset: str) -> str:
    cells = loaded.finished(run, dataset)
    parts = [
        f"{label} {text}"
        for label, phase in (("train", "training_time"), ("sample", "inference_time"))
        if (text := measured_time(cells, phase)) is not None
    ]
    return "\n".join(parts) or "—"


def _oracle_row(loaded: ExperimentResults, dataset: str, metrics: list[str]):
    if dataset not in loaded.oracle:
        return None
    cells = []
    for metric in metrics:
        value = loaded.oracle_mean(dataset, metric) if METRICS[metric].goal == "oracle" else None
        if value is None:
            cells.append("—")
        else:
            modes = f" of {num_modes(dataset)}" if metric == "modes_captured" else ""
            cells.append(format_number(value, metric) + modes)
    return (f"↳ {dataset} oracle floor", *cells, "")


def run_table(loaded: ExperimentResults, tables: Mapping[str, MetricTable], run: str) -> Table:
    """Rows = datasets (each followed by its oracle floor), columns = metrics, then times."""
    metrics = table_metrics(tables)
    rows = []
    for dataset in loaded.datasets:
        cells = [_table_cell(loaded, tables[m], run, dataset) for m in metrics]
        note = divergence_note(loaded, run, dataset)
        times = _times_cell(loaded, run, dataset) + (f"\n{note}" if note else "")
        rows.append((dataset, *cells, times))
        oracle = _oracle_row(loaded, dataset, metrics)
        if oracle is not None:
            rows.append(oracle)
    header = ("dataset", *(metric_title(m) for m in metrics), "time (measured)")
    return Table(header, tuple(rows))


def run_blocks(
    loaded: ExperimentResults, tables: Mapping[str, MetricTable], group: list[str]
) -> list[Block]:
    """The section of one group of identical runs, titled by their indices and names."""
    indices = [loaded.run_names.index(name) for name in group]
    run = loaded.config.run(group[0])
    if len(group) == 1:
        title = f"Run {indices[0]}: {run.name}"
    else:
        title = f"Runs {comma_list(indices)}: {group_label(group)}"
    blocks: list[Block] = [Heading(2, title)]
    if len(group) > 1:
        blocks.append(
            Paragraph(
                f"{comma_list(group)} have the same configuration (the same config hash in every "
                f"cell), so their cells are the same models; they are shown once, as {group[0]}."
            )
        )
    descriptions = [loaded.config.run(name).description for name in group]
    blocks += [Paragraph(text) for text in dict.fromkeys(descriptions) if text]
    if run.name == loaded.baseline:
        blocks.append(
            Paragraph(f"The baseline every other run is compared with. {_model_line(run)}.")
        )
    else:
        changes = option_differences(run, loaded.config.run(loaded.baseline))
        line = "; ".join(changes) if changes else "none (same options as the baseline)"
        blocks.append(Paragraph(f"Differs from the baseline ({loaded.baseline}): {line}."))
    blocks.append(run_table(loaded, tables, run.name))
    return blocks
