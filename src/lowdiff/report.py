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
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lowdiff import data, plots, results, stats
from lowdiff.config import ConfigError, ExperimentConfig, RunConfig, resolve, to_dict
from lowdiff.experiments import METRICS, cell_hash
from lowdiff.models import ARCHITECTURE_OPTIONS, COMMON_OPTIONS

__all__ = [
    "Block",
    "Bullets",
    "CellResult",
    "ExperimentResults",
    "FigurePlan",
    "GateStats",
    "Heading",
    "Image",
    "MetricTable",
    "MissingCell",
    "Paragraph",
    "Table",
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

# The columns of every run table, in order, and the number format of each.
TABLE_METRICS: tuple[str, ...] = (
    "kl_divergence",
    "eval_loss",
    "modes_captured",
    "high_quality_fraction",
    "mode_tv_distance",
    "training_time",
    "inference_time",
)
ORACLE_METRICS = ("kl_divergence", "modes_captured", "high_quality_fraction", "mode_tv_distance")
FORMATS = {
    "kl_divergence": ".3f",
    "eval_loss": ".4f",
    "modes_captured": ".1f",
    "high_quality_fraction": ".3f",
    "mode_tv_distance": ".3f",
    "training_time": ".3g",
    "inference_time": ".3g",
}
ALPHA = 0.05
MARK = "*"  # significant after Holm correction

# Series B: how the last-step gate is classified (stated in the report's text).
GATE_STUCK_STD = 0.05  # std below this and mean in GATE_MIDDLE: no specialisation
GATE_MIDDLE = (0.4, 0.6)
GATE_EXTREME = 0.05  # g < 0.05 or g > 0.95 counts as "at 0" / "at 1"
GATE_ONE_EXPERT = 0.9  # more than this fraction at one end: one expert does all the work
GATE_SMALL_VARIATION = 0.1  # region spread and timestep change both below: little variation
# Series A: a change of w_global below this from start to end is "barely changes".
WEIGHT_SMALL_CHANGE = 0.05


# --- loading: the files on disk -> ExperimentResults -------------------------------------------


@dataclass(frozen=True)
class MissingCell:
    run: str
    dataset: str
    seed: int
    reason: str


@dataclass(frozen=True)
class CellResult:
    """One finished cell: its record (cell.json) and lazily read arrays."""

    run: str
    dataset: str
    seed: int
    directory: Path
    record: Mapping[str, Any]

    @property
    def metrics(self) -> Mapping[str, float]:
        return self.record["metrics"]

    def has(self, name: str) -> bool:
        return name in self.record.get("files", {})

    @cached_property
    def losses(self) -> np.ndarray | None:  # (steps,)
        return results.read_npy(self.directory / "losses.npy") if self.has("losses.npy") else None

    @cached_property
    def samples(self) -> np.ndarray | None:  # (N, 2)
        path = self.directory / "samples.npy"
        return results.read_npy(path) if self.has("samples.npy") else None

    @cached_property
    def weights(self) -> dict[str, np.ndarray] | None:
        """weights.npz: trace (T, K), final (N, K), field (n_t, G, G, K), ...; None if absent."""
        path = self.directory / "weights.npz"
        return results.read_npz(path) if self.has("weights.npz") else None

    @property
    def num_weights(self) -> int | None:
        """K of the recorded weight trace (2: dual-scale branches, 1: gate), None if none."""
        weights = self.weights
        if weights is None or "trace" not in weights:
            return None
        return int(weights["trace"].shape[-1])


@dataclass(frozen=True)
class ExperimentResults:
    """Everything the report uses: the resolved config, the oracle floors and finished cells."""

    root: Path
    config: ExperimentConfig
    oracle: Mapping[str, Mapping[str, Mapping[str, Any]]]  # dataset -> metric -> {"mean", ...}
    oracle_num_samples: int | None
    cells: Mapping[tuple[str, str, int], CellResult]
    missing: Sequence[MissingCell]

    @property
    def run_names(self) -> list[str]:
        return [run.name for run in self.config.runs]

    @property
    def baseline(self) -> str:
        return self.config.experiment.baseline

    @property
    def datasets(self) -> list[str]:
        return list(self.config.experiment.datasets)

    @property
    def seeds(self) -> list[int]:
        return list(self.config.experiment.seeds)

    def finished(self, run: str, dataset: str) -> list[CellResult]:
        """The finished cells of (run, dataset), in seed order."""
        keys = ((run, dataset, seed) for seed in self.seeds)
        return [self.cells[key] for key in keys if key in self.cells]

    def values(self, metric: str, run: str, dataset: str) -> dict[int, float]:
        """seed -> value of `metric` over the finished cells that recorded it."""
        return {
            cell.seed: float(cell.metrics[metric])
            for cell in self.finished(run, dataset)
            if metric in cell.metrics
        }

    def oracle_mean(self, dataset: str, metric: str) -> float | None:
        entry = self.oracle.get(dataset, {}).get(metric)
        return None if entry is None else float(entry["mean"])

    def runs_with_weights(self, num_weights: int) -> list[str]:
        """Runs with at least one cell whose weight trace has K = `num_weights`."""
        return [
            run
            for run in self.run_names
            if any(
                cell.num_weights == num_weights
                for dataset in self.datasets
                for cell in self.finished(run, dataset)
            )
        ]


def _load_config(root: Path) -> ExperimentConfig:
    """experiment.json -> ExperimentConfig, or a ResultsError saying why it is not ours."""
    if not root.is_dir():
        raise results.ResultsError(f"{root}: not a directory; expected a lowdiff results directory")
    path = root / "experiment.json"
    if not path.is_file():
        raise results.ResultsError(
            f"{root}: not a lowdiff results directory (no experiment.json); pass the directory "
            "that `lowdiff run EXPERIMENT.toml` wrote"
        )
    raw = results.read_json(path)
    if not (
        isinstance(raw, dict)
        and isinstance(raw.get("experiment"), dict)
        and isinstance(raw.get("runs"), list)
        and all(isinstance(run, dict) and "name" in run for run in raw["runs"])
    ):
        raise results.ResultsError(
            f"{path}: not a lowdiff experiment record (expected {{'experiment': {{...}}, "
            "'runs': [{'name': ..., ...}, ...]}})"
        )
    runs = {run["name"]: {k: v for k, v in run.items() if k != "name"} for run in raw["runs"]}
    try:
        return resolve({"experiment": raw["experiment"], "runs": runs}, str(path))
    except ConfigError as error:
        raise results.ResultsError(f"{path}: not a valid lowdiff experiment: {error}") from error


def _load_oracle(root: Path) -> tuple[dict[str, Any], int | None]:
    """oracle.json's floors per dataset (empty when the file is missing or unreadable)."""
    try:
        raw = results.read_json(root / "oracle.json")
    except results.ResultsError:
        return {}, None
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), dict):
        return {}, None
    return raw["datasets"], raw.get("num_samples")


def _load_cells(
    root: Path, config: ExperimentConfig
) -> tuple[dict[tuple[str, str, int], CellResult], list[MissingCell]]:
    cells, missing = {}, []
    for run in config.runs:
        for dataset in config.experiment.datasets:
            for seed in config.experiment.seeds:
                directory = results.cell_dir(root, run.name, dataset, seed)
                record = results.read_cell(directory)
                if record is None or not isinstance(record.get("metrics"), dict):
                    reason = "not finished (cell.json missing, corrupt, or a file is missing)"
                    missing.append(MissingCell(run.name, dataset, seed, reason))
                elif record.get("config_hash") != cell_hash(config, run, dataset, seed):
                    reason = "stale: written under another configuration of this run"
                    missing.append(MissingCell(run.name, dataset, seed, reason))
                else:
                    cells[(run.name, dataset, seed)] = CellResult(
                        run.name, dataset, seed, directory, record
                    )
    return cells, missing


def load_results(root: Path) -> ExperimentResults:
    """Read a results directory; `results.ResultsError` if it is not a lowdiff one."""
    root = Path(root)
    config = _load_config(root)
    oracle, oracle_num_samples = _load_oracle(root)
    cells, missing = _load_cells(root, config)
    return ExperimentResults(root, config, oracle, oracle_num_samples, cells, missing)


# --- statistics: per-seed values -> summaries and Holm-corrected comparisons -------------------

Values = Mapping[str, Mapping[str, Mapping[int, float]]]  # run -> dataset -> seed -> value


@dataclass(frozen=True)
class MetricTable:
    """One metric over the experiment: summaries per (run, dataset), comparisons vs baseline."""

    metric: str
    summaries: dict[tuple[str, str], stats.Summary]
    comparisons: dict[tuple[str, str], stats.Comparison]  # Holm-corrected as one family


def compare_runs(
    values: Values,
    reference: str,
    candidates: Sequence[str],
    *,
    lower_is_better: bool,
    alpha: float = ALPHA,
) -> dict[tuple[str, str], stats.Comparison]:
    """Each candidate vs `reference` per dataset, paired on their common seeds; one Holm family.

    Returns {(candidate, dataset): Comparison} for every pair that shares at least one seed.
    """
    keys, comparisons = [], []
    for run in candidates:
        for dataset, by_seed in values.get(run, {}).items():
            reference_values = values.get(reference, {}).get(dataset, {})
            common = sorted(seed for seed in by_seed if seed in reference_values)
            if not common:
                continue
            comparison = stats.paired_comparison(
                [by_seed[seed] for seed in common],
                [reference_values[seed] for seed in common],
                lower_is_better=lower_is_better,
                alpha=alpha,
            )
            keys.append((run, dataset))
            comparisons.append(comparison)
    corrected = stats.correct_family(comparisons, alpha=alpha) if comparisons else []
    return dict(zip(keys, corrected, strict=True))


def _metric_values(loaded: ExperimentResults, metric: str) -> dict[str, dict[str, dict]]:
    return {
        run: {
            dataset: values
            for dataset in loaded.datasets
            if (values := loaded.values(metric, run, dataset))
        }
        for run in loaded.run_names
    }


def metric_tables(loaded: ExperimentResults) -> dict[str, MetricTable]:
    """Every table metric: summaries of each (run, dataset), comparisons with the baseline."""
    tables = {}
    for metric in TABLE_METRICS:
        values = _metric_values(loaded, metric)
        summaries = {
            (run, dataset): stats.summarize(list(by_seed.values()))
            for run, by_dataset in values.items()
            for dataset, by_seed in by_dataset.items()
        }
        candidates = [run for run in loaded.run_names if run != loaded.baseline]
        comparisons = compare_runs(
            values, loaded.baseline, candidates, lower_is_better=_lower_is_better(metric)
        )
        tables[metric] = MetricTable(metric, summaries, comparisons)
    return tables


def _lower_is_better(metric: str) -> bool:
    direction = METRICS[metric].lower_is_better
    if direction is None:
        raise ValueError(f"metric {metric!r} has no direction; it cannot be compared")
    return direction


# --- formatting of numbers and comparisons ------------------------------------------------------


def _number(value: float, metric: str, *, signed: bool = False) -> str:
    text = format(value, ("+" if signed else "") + FORMATS.get(metric, ".3g"))
    return text.replace("-", "−")  # a real minus sign reads better in tables


def _half_width(summary: stats.Summary) -> float | None:
    if summary.ci_low is None or summary.ci_high is None:
        return None
    return (summary.ci_high - summary.ci_low) / 2.0


def format_summary(summary: stats.Summary, metric: str, num_seeds: int) -> str:
    """'mean ± half-CI', '(n = 2 of 3 seeds)' when seeds are missing, '(1 seed)' for one."""
    half = _half_width(summary)
    text = _number(summary.mean, metric)
    text += " (1 seed, no interval)" if half is None else f" ± {_number(half, metric)}"
    if summary.n < num_seeds and summary.n > 1:
        text += f" (n = {summary.n} of {num_seeds})"
    return text


def format_delta(comparison: stats.Comparison, metric: str) -> str:
    """'Δ −0.120* better' where the corrected test says so, else 'Δ −0.120' (+ 'untested')."""
    text = f"Δ {_number(comparison.mean_difference, metric, signed=True)}"
    phrase = stats.verdict(comparison)
    if phrase == stats.BETTER:
        return f"{text}{MARK} better"
    if phrase == stats.WORSE:
        return f"{text}{MARK} worse"
    if phrase in (stats.NOT_TESTED_SINGLE_SEED, stats.NOT_TESTED_ZERO_VARIANCE):
        return f"{text} (untested)"
    return text


def describe_comparison(comparison: stats.Comparison, metric: str, unit: str = "") -> str:
    """The verdict with its numbers: 'better (significant) (Δ −0.12 bits, 95% CI [...], p = ..)'."""
    delta = _number(comparison.mean_difference, metric, signed=True) + unit
    details = [f"Δ {delta}"]
    if comparison.ci_low is not None and comparison.ci_high is not None and comparison.n > 1:
        low, high = (_number(v, metric) for v in (comparison.ci_low, comparison.ci_high))
        details.append(f"uncorrected 95% CI [{low}, {high}]")
    if comparison.p_value_adjusted is not None:
        details.append(f"Holm-adjusted p = {comparison.p_value_adjusted:.3g}")
    details.append(f"{comparison.n} paired seed{'s' if comparison.n != 1 else ''}")
    return f"{stats.verdict(comparison)} ({', '.join(details)})"


# --- the document: a few block types rendered to Markdown and to HTML ---------------------------


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # a "\n" in a cell is a line break


@dataclass(frozen=True)
class Image:
    path: str  # relative to the results directory
    title: str
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


def _md_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", "<br>")


def _md_table(table: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(cell) for cell in table.header) + " |"]
    lines.append("|" + "|".join(["---"] * len(table.header)) + "|")
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


MARKDOWN: dict[type, Callable[[Any], str]] = {
    Heading: lambda block: "#" * block.level + " " + _md_text(block.text),
    Paragraph: lambda block: _md_text(block.text),
    Bullets: lambda block: "\n".join(f"- {_md_text(item)}" for item in block.items),
    Table: _md_table,
    Image: lambda block: f"![{_md_text(block.title)}]({block.path})\n\n{_md_text(block.caption)}",
}


def render_markdown(blocks: Iterable[Block]) -> str:
    return "\n\n".join(MARKDOWN[type(block)](block) for block in blocks) + "\n"


def _html_text(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_html_text(cell)}</th>" for cell in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_html_text(cell)}</td>" for cell in row) + "</tr>"
        for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_image(block: Image, root: Path) -> str:
    encoded = base64.b64encode((root / block.path).read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(block.title)}">'
        f"<figcaption>{_html_text(block.caption)}</figcaption></figure>"
    )


HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
    "line-height:1.45;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:0.3em 0.6em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}figure{margin:1.5em 0}img{max-width:100%}"
    "figcaption{color:#444;font-size:0.92em}"
)


def render_html(blocks: Iterable[Block], *, title: str, root: Path) -> str:
    """A self-contained HTML page; figures are read from `root` and inlined as base64 PNG."""
    renderers: dict[type, Callable[[Any], str]] = {
        Heading: lambda b: f"<h{b.level}>{_html_text(b.text)}</h{b.level}>",
        Paragraph: lambda b: f"<p>{_html_text(b.text)}</p>",
        Bullets: lambda b: "<ul>" + "".join(f"<li>{_html_text(i)}</li>" for i in b.items) + "</ul>",
        Table: _html_table,
        Image: lambda b: _html_image(b, root),
    }
    body = "\n".join(renderers[type(block)](block) for block in blocks)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{HTML_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


# --- part 1: title, question, setup, how to read ------------------------------------------------


def _join(values: Iterable[object]) -> str:
    return ", ".join(str(value) for value in values)


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
        f"Datasets: {_join(loaded.datasets)} ({settings.num_points} training points each)",
        f"Seeds: {_join(loaded.seeds)} ({len(loaded.seeds)} per run and dataset)",
        f"Training (baseline; other runs list what they change): {reference.train.num_steps} "
        f"steps, batch size {reference.train.batch_size} per model, learning rate "
        f"{reference.train.learning_rate:g}, {reference.schedule.num_timesteps} diffusion "
        f"timesteps ({reference.schedule.beta_schedule} schedule)",
        f"Sampling: {reference.eval.num_samples} samples per model; oracle floor from "
        f"{settings.oracle_draws} fresh draw(s) of {loaded.oracle_num_samples or '?'} points",
        f"Device: {_join(devices) if devices else settings.device}; up to "
        f"{settings.max_models_per_batch} models per batched engine call "
        f"(used: {_join(models) if models else 'none'})",
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


def _header_blocks(loaded: ExperimentResults) -> list[Block]:
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
        + _join(f"{name} = {getattr(run.model, name)}" for name in options)
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


def _num_modes(dataset: str) -> int:
    return data.get_dataset(dataset).components.num_components


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
        text += f" of {_num_modes(dataset)}"
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
        text = "—" if value is None else _number(value, metric)
        cells.append(text + (f" of {_num_modes(dataset)}" if metric == "modes_captured" else ""))
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


def _run_blocks(
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


def _tables_note(tables: Mapping[str, MetricTable]) -> Paragraph:
    sizes = {
        METRICS[metric].label: next(iter(table.comparisons.values())).family_size
        for metric, table in tables.items()
        if table.comparisons
    }
    listed = _join(f"{label}: {size}" for label, size in sizes.items())
    return Paragraph(
        f"{MARK} significant at α = {ALPHA} after Holm correction; tested comparisons per "
        f"metric family: {listed or 'none'}."
    )


# --- part 3: figures -------------------------------------------------------------------------

Pick = Callable[[list[CellResult]], "np.ndarray | None"]
NOTHING_FINISHED = "no finished cell to draw from"
FIRST_SEED_NOTE = "the first seed of each run and dataset (the next finished one if it is missing)"
SMOOTHING_NOTE = "seed mean smoothed with a Hanning window of 25 steps; the band spans the seeds"


@dataclass(frozen=True)
class FigurePlan:
    """One figure: its file name, title, description, and how to draw it (None: skipped)."""

    name: str
    title: str
    caption: str
    build: Callable[[], Figure] | None
    skipped: str = NOTHING_FINISHED  # why it is not drawn, when build is None


def _nested(
    loaded: ExperimentResults, runs: Sequence[str], datasets: Sequence[str], pick: Pick
) -> dict[str, dict[str, np.ndarray]]:
    """[run][dataset] -> pick(finished cells), leaving out empty picks and empty runs."""
    nested = {}
    for run in runs:
        by_dataset = {
            dataset: value
            for dataset in datasets
            if (value := pick(loaded.finished(run, dataset))) is not None
        }
        if by_dataset:
            nested[run] = by_dataset
    return nested


def _stacked_losses(cells: list[CellResult]) -> np.ndarray | None:
    losses = [cell.losses for cell in cells if cell.losses is not None]
    return np.stack(losses) if losses else None  # (seeds, steps)


def _first_samples(cells: list[CellResult]) -> np.ndarray | None:
    return next((cell.samples for cell in cells if cell.samples is not None), None)  # (N, 2)


def _weighted(cells: list[CellResult], num_weights: int) -> list[CellResult]:
    """The cells whose weight trace has K = `num_weights` (2: branch weights, 1: gate)."""
    return [cell for cell in cells if cell.num_weights == num_weights]


def _stacked_traces(cells: list[CellResult]) -> np.ndarray | None:
    traces = [cell.weights["trace"] for cell in _weighted(cells, 2)]
    return np.stack(traces) if traces else None  # (seeds, T, 2)


def _bar_inputs(table: MetricTable) -> tuple[dict, dict]:
    """means[run][dataset] and ci[run][dataset] = (low, high) for plots.metric_bars."""
    means: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, tuple[float, float]]] = {}
    for (run, dataset), summary in table.summaries.items():
        means.setdefault(run, {})[dataset] = summary.mean
        if summary.ci_low is not None and summary.ci_high is not None:
            intervals.setdefault(run, {})[dataset] = (summary.ci_low, summary.ci_high)
    return means, intervals


def _loss_figure(loaded: ExperimentResults, colors: Mapping[str, str]) -> FigurePlan:
    curves = _nested(loaded, loaded.run_names, loaded.datasets, _stacked_losses)
    return FigurePlan(
        "train_loss.png",
        "Training loss",
        "Training loss (MSE of the predicted noise) against training step, one panel per "
        f"dataset and one curve per run: {SMOOTHING_NOTE}.",
        partial(plots.loss_curves, curves, colors=colors) if curves else None,
    )


def _samples_figure(loaded: ExperimentResults, colors: Mapping[str, str]) -> FigurePlan:
    samples = _nested(loaded, loaded.run_names, loaded.datasets, _first_samples)
    return FigurePlan(
        "generated_images.png",
        "Generated samples",
        f"Samples of every run (rows) on every dataset (columns), from {FIRST_SEED_NOTE}.",
        partial(plots.sample_grid, samples, colors=colors) if samples else None,
    )


def _kl_figure(
    loaded: ExperimentResults, tables: Mapping[str, MetricTable], colors: Mapping[str, str]
) -> FigurePlan:
    means, intervals = _bar_inputs(tables["kl_divergence"])
    oracle = {
        dataset: value
        for dataset in loaded.datasets
        if (value := loaded.oracle_mean(dataset, "kl_divergence")) is not None
    }
    draw = partial(
        plots.metric_bars,
        means,
        ci=intervals or None,
        oracle=oracle or None,
        ylabel="KL (bits)",
        title="KL(data ‖ samples)",
        colors=colors,
    )
    return FigurePlan(
        "kl_divergence_comparison.png",
        "KL divergence",
        "Mean KL(data ‖ samples) in bits per dataset and run with 95% CI whiskers over seeds; "
        "the dashed line is the oracle floor (fresh draws of the true distribution). Lower is "
        "closer to the data.",
        draw if means else None,
    )


def _modes_figure(
    loaded: ExperimentResults, tables: Mapping[str, MetricTable], colors: Mapping[str, str]
) -> FigurePlan:
    means, intervals = _bar_inputs(tables["modes_captured"])
    true_modes = {dataset: _num_modes(dataset) for dataset in loaded.datasets}
    draw = partial(
        plots.mode_bars, means, true_modes=true_modes, ci=intervals or None, colors=colors
    )
    return FigurePlan(
        "modes_captured.png",
        "Modes captured",
        "Fraction of the K true mixture components captured per dataset and run (mean over "
        "seeds, 95% CI whiskers); the dashed line marks all K modes.",
        draw if means else None,
    )


def _weight_figure(loaded: ExperimentResults, colors: Mapping[str, str]) -> FigurePlan:
    weights = _nested(loaded, loaded.runs_with_weights(2), loaded.datasets, _stacked_traces)
    return FigurePlan(
        "weight_evolution.png",
        "Branch weights during sampling (Series A)",
        "Mean weight of the global (solid) and local (dashed) branch over the samples at each "
        "sampling step, from t = T−1 (noise, left) to t = 0 (data, right), for every adaptive "
        "run; line = seed mean, band = min–max over seeds.",
        partial(plots.weight_evolution, weights, colors=colors) if weights else None,
    )


def _dino_gates(loaded: ExperimentResults, *, pooled: bool) -> dict[str, np.ndarray]:
    """run -> last-step dino gates (N,) of each gated run: the first seed, or all pooled."""
    gates = {}
    for run in loaded.runs_with_weights(1):
        cells = _weighted(loaded.finished(run, "dino"), 1)
        if cells:
            chosen = cells if pooled else cells[:1]
            gates[run] = np.concatenate([cell.weights["final"][:, 0] for cell in chosen])
    return gates


def _dino_samples_figure(loaded: ExperimentResults) -> FigurePlan:
    samples = {
        run: points
        for run in loaded.run_names
        if (points := _first_samples(loaded.finished(run, "dino"))) is not None
    }
    gates = _dino_gates(loaded, pooled=False)
    draw = partial(plots.gated_samples, samples, gates, title="dino: gate at the last step")
    return FigurePlan(
        "dino_generated_samples.png",
        "dino samples coloured by the gate (Series B)",
        f"dino samples of every run, from {FIRST_SEED_NOTE}; gated runs are coloured by their "
        "gate g at the last sampling step (cool: g near 0, expert 2; warm: g near 1, expert "
        "1), runs without a gate are grey.",
        draw if samples else None,
    )


def _dino_loss_figure(loaded: ExperimentResults, colors: Mapping[str, str]) -> FigurePlan:
    curves = _nested(loaded, loaded.run_names, ["dino"], _stacked_losses)
    draw = partial(plots.loss_curves, curves, datasets=["dino"], colors=colors)
    return FigurePlan(
        "dino_train_loss.png",
        "dino training loss (Series B)",
        f"Training loss on dino per run: {SMOOTHING_NOTE}.",
        draw if curves else None,
    )


def _dino_histogram_figure(loaded: ExperimentResults, colors: Mapping[str, str]) -> FigurePlan:
    gates = _dino_gates(loaded, pooled=True)
    return FigurePlan(
        "dino_gating_weights_histogram.png",
        "dino gate histograms (Series B)",
        "Distribution of the gate g at the last sampling step over the dino samples of each "
        "gated run, pooled over seeds; mass piled at 0 or 1 means one expert does the work.",
        partial(plots.gate_histograms, gates, colors=colors) if gates else None,
        "no finished dino cell of a gated run",
    )


def _dino_figures(loaded: ExperimentResults, colors: Mapping[str, str]) -> list[FigurePlan]:
    plans = [
        _dino_samples_figure(loaded),
        _dino_loss_figure(loaded, colors),
        _dino_histogram_figure(loaded, colors),
    ]
    if "dino" not in loaded.datasets:
        absent = "dino is not a dataset of this experiment"
        plans = [FigurePlan(p.name, p.title, p.caption, None, absent) for p in plans]
    return plans


SPECIALISATION_DATASETS = ("dino", "moons")


def _field_inputs(
    loaded: ExperimentResults, run: str
) -> tuple[dict[str, dict[int, np.ndarray]], dict[str, np.ndarray], float | None]:
    """Gate fields [dataset][t] -> (G, G), overlay samples and extent, from the first seed."""
    fields, overlay, extent = {}, {}, None
    for dataset in SPECIALISATION_DATASETS:
        cell = next(
            (c for c in _weighted(loaded.finished(run, dataset), 1) if "field" in c.weights),
            None,
        )
        if cell is None:
            continue
        weights = cell.weights
        timesteps = [int(t) for t in weights["field_timesteps"]]
        fields[dataset] = {t: weights["field"][i, :, :, 0] for i, t in enumerate(timesteps)}
        extent = float(weights["field_extent"])
        if cell.samples is not None:
            overlay[dataset] = cell.samples
    return fields, overlay, extent


def _specialisation_figures(loaded: ExperimentResults) -> list[FigurePlan]:
    """expert_specialisation.png for the first gated run, expert_specialisation_<run>.png after."""
    plans = []
    present = [d for d in SPECIALISATION_DATASETS if d in loaded.datasets]
    for index, run in enumerate(loaded.runs_with_weights(1)):
        name = "expert_specialisation.png" if index == 0 else f"expert_specialisation_{run}.png"
        fields, overlay, extent = _field_inputs(loaded, run)
        build = None
        if fields and extent is not None:
            box = (-extent, extent, -extent, extent)
            build = partial(plots.gate_field, fields, extent=box, overlay=overlay)
        why = "no recorded gate field for dino or moons"
        if not present:
            why = "neither dino nor moons is a dataset of this experiment"
        plans.append(
            FigurePlan(
                name,
                f"Expert specialisation of {run} (Series B)",
                f"Gate g of {run} over the plane at several timesteps (columns, noise → data) "
                f"for {' and '.join(fields) or 'dino and moons'} (rows), from the first seed, "
                "with that model's samples overlaid: warm regions are handled by expert 1, cool "
                "ones by expert 2; a uniform colour means no specialisation by region.",
                build,
                why,
            )
        )
    return plans


def figure_plans(
    loaded: ExperimentResults, tables: Mapping[str, MetricTable], colors: Mapping[str, str]
) -> list[FigurePlan]:
    """Every figure of the report: the common four, then Series A and B where they apply."""
    plans = [
        _loss_figure(loaded, colors),
        _samples_figure(loaded, colors),
        _kl_figure(loaded, tables, colors),
        _modes_figure(loaded, tables, colors),
    ]
    if loaded.runs_with_weights(2):
        plans.append(_weight_figure(loaded, colors))
    if loaded.runs_with_weights(1):
        plans += _dino_figures(loaded, colors) + _specialisation_figures(loaded)
    return plans


def write_figures(loaded: ExperimentResults, plans: Sequence[FigurePlan]) -> list[Block]:
    """Draw and save every planned figure into <root>/figures/; blocks that show them."""
    blocks: list[Block] = [Heading(2, "Figures")]
    for plan in plans:
        blocks.append(Heading(3, f"{plan.title} ({plan.name})"))
        if plan.build is None:
            blocks.append(Paragraph(f"Not drawn: {plan.skipped}."))
            continue
        plots.save_figure(plan.build(), loaded.root / "figures" / plan.name)
        blocks.append(Image(f"figures/{plan.name}", plan.title, plan.caption))
    return blocks


# --- part 4: analysis in words ------------------------------------------------------------------

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
                    describe_comparison(
                        comparison, metric, " bits" if metric == "kl_divergence" else ""
                    )
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
        f"{phrase} for {_join(names)}"
        if phrase in (stats.BETTER, stats.WORSE)
        else f"{phrase} in {len(names)} of {len(comparisons)}"
        for phrase, names in sorted(groups.items())
    ]
    return f"{label}: " + "; ".join(parts) + "."


def weight_shift(trace: np.ndarray) -> str:
    """Where the balance of a (T, 2) (w_global, w_local) trace shifts; row i is t = T-1-i."""
    w_global = np.asarray(trace, dtype=float)[:, 0]  # (T,)
    t = w_global.size - 1 - np.arange(w_global.size)  # the timestep of each row
    start, end = w_global[0], w_global[-1]
    text = (
        f"w_global goes from {start:.2f} at t = {t[0]} to {end:.2f} at t = 0 "
        f"(range {w_global.min():.2f}–{w_global.max():.2f})"
    )
    if abs(end - start) < WEIGHT_SMALL_CHANGE:
        text += f"; the balance barely changes (|change| < {WEIGHT_SMALL_CHANGE})"
    else:
        towards = "local" if end < start else "global"
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
        side = "global" if above.all() else "local"
        text += f"; the {side} branch keeps the larger weight at every step"
    return text


def _fixed_run(loaded: ExperimentResults) -> str | None:
    """The first dual-scale run with fixed 0.5/0.5 weights, the adaptive runs' second reference."""
    return next(
        (
            run.name
            for run in loaded.config.runs
            if run.model.arch == "dual_scale" and run.model.weighting == "fixed"
        ),
        None,
    )


def _kl_verdicts(
    base: stats.Comparison | None, fixed: stats.Comparison | None, fixed_name: str | None
) -> str:
    against_base = describe_comparison(base, "kl_divergence", " bits") if base else "not compared"
    text = f"KL vs baseline: {against_base}"
    if fixed_name is None:
        return text + "; there is no fixed-weight run to compare with."
    against_fixed = (
        describe_comparison(fixed, "kl_divergence", " bits") if fixed else "not compared"
    )
    text += f"; KL vs {fixed_name} (fixed weights): {against_fixed}"
    both = base is not None and fixed is not None
    both = both and stats.verdict(base) == stats.BETTER == stats.verdict(fixed)
    if both:
        return text + f"; so it beats both the baseline and {fixed_name} on KL."
    return text + f"; so it is not shown to beat both the baseline and {fixed_name} on KL."


def _series_a_blocks(loaded: ExperimentResults, tables: Mapping[str, MetricTable]) -> list[Block]:
    adaptive = loaded.runs_with_weights(2)
    fixed = _fixed_run(loaded)
    kl = _metric_values(loaded, "kl_divergence")
    vs_fixed = compare_runs(kl, fixed, adaptive, lower_is_better=True) if fixed else {}
    blocks: list[Block] = [
        Heading(3, "Series A: adaptive dual-scale weights"),
        Paragraph(
            "For each adaptive run: how the seed-mean global weight w_global (w_local = 1 − "
            "w_global) moves from the first sampling step (t = T−1, noise) to the last (t = 0); "
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
            traces = [c.weights["trace"] for c in _weighted(loaded.finished(run, dataset), 2)]
            shift = weight_shift(np.mean(traces, axis=0)) if traces else "no recorded weights"
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
        f"{label} (seed{'s' if len(seeds) > 1 else ''} {_join(seeds)})"
        for label, seeds in groups.items()
    )
    gates = [gate for _, gate in per_seed]
    numbers = (
        f"mean g {_mean_of(g.mean for g in gates)}, std {_mean_of(g.std for g in gates)}, "
        f"g < {GATE_EXTREME}: {_mean_of((g.at_zero for g in gates), '.0%')}, "
        f"g > {1 - GATE_EXTREME}: {_mean_of((g.at_one for g in gates), '.0%')}, "
        f"region spread {_mean_of(g.region_spread for g in gates)}, "
        f"timestep change {_mean_of(g.timestep_change for g in gates)} "
        f"(averaged over {len(gates)} seed{'s' if len(gates) > 1 else ''})"
    )
    return f"gate: {labels}; {numbers}"


def _versus_baseline(
    loaded: ExperimentResults, table: MetricTable, run: str, dataset: str, label: str
) -> str:
    ours = table.summaries.get((run, dataset))
    theirs = table.summaries.get((loaded.baseline, dataset))
    comparison = table.comparisons.get((run, dataset))
    if ours is None or theirs is None or comparison is None:
        return f"{label}: not compared (no seed finished in both runs)"
    suffix = f" of {_num_modes(dataset)}" if table.metric == "modes_captured" else ""
    means = f"{_number(ours.mean, table.metric)}{suffix} vs {_number(theirs.mean, table.metric)}"
    unit = " bits" if table.metric == "kl_divergence" else ""
    described = describe_comparison(comparison, table.metric, unit)
    return f"{label} {means} (baseline): {described}"


SERIES_B_INTRO = (
    "For each gated run: modes captured and KL against the baseline, and whether the experts "
    "specialise, judged per seed from the gate g at the last sampling step (t = 0): std < "
    "{stuck} with mean in [{low}, {high}] is no specialisation; more than {one:.0%} of the "
    "samples with g < {extreme} (or > {high_end}) means one expert does all the work. "
    "Otherwise the variation is split into region (P95 − P5 of the gate over the plane at "
    "t = 0) and timestep (|mean gate at t = 0 − mean gate at t = T−1|); the larger one "
    "dominates, and both under {small} is little variation."
)


def _series_b_blocks(loaded: ExperimentResults, tables: Mapping[str, MetricTable]) -> list[Block]:
    intro = SERIES_B_INTRO.format(
        stuck=GATE_STUCK_STD,
        low=GATE_MIDDLE[0],
        high=GATE_MIDDLE[1],
        one=GATE_ONE_EXPERT,
        extreme=GATE_EXTREME,
        high_end=1 - GATE_EXTREME,
        small=GATE_SMALL_VARIATION,
    )
    blocks: list[Block] = [Heading(3, "Series B: dual-expert gating"), Paragraph(intro)]
    for dataset in loaded.datasets:
        items = []
        for run in loaded.runs_with_weights(1):
            cells = _weighted(loaded.finished(run, dataset), 1)
            parts = [
                _versus_baseline(loaded, tables["modes_captured"], run, dataset, "modes captured"),
                _versus_baseline(loaded, tables["kl_divergence"], run, dataset, "KL"),
                _gate_text(cells) if cells else "gate: not recorded",
            ]
            items.append(f"{run}: " + "; ".join(parts) + ".")
        blocks += [Heading(4, dataset), Bullets(tuple(items))]
    return blocks


def _analysis_blocks(loaded: ExperimentResults, tables: Mapping[str, MetricTable]) -> list[Block]:
    candidates = [run for run in loaded.run_names if run != loaded.baseline]
    blocks: list[Block] = [Heading(2, "Analysis"), Heading(3, "Summary")]
    if not candidates:
        blocks.append(Paragraph("Only the baseline was run: there is nothing to compare."))
    else:
        comparisons = {metric: tables[metric].comparisons for metric in SUMMARY_METRICS}
        tallies = [tally(comparisons[m], label) for m, label in SUMMARY_METRICS.items()]
        blocks.append(Paragraph(" ".join(tallies)))
        blocks.append(Bullets(tuple(summary_items(comparisons, candidates, loaded.datasets))))
    if loaded.runs_with_weights(2):
        blocks += _series_a_blocks(loaded, tables)
    if loaded.runs_with_weights(1):
        blocks += _series_b_blocks(loaded, tables)
    return blocks


# --- the report ---------------------------------------------------------------------------------


def build_blocks(loaded: ExperimentResults) -> list[Block]:
    """The whole report as blocks; draws and saves the figures on the way."""
    tables = metric_tables(loaded)
    colors = plots.run_colors(loaded.run_names, baseline=loaded.baseline)
    blocks = _header_blocks(loaded) + [_tables_note(tables)]
    for index, run in enumerate(loaded.config.runs):
        blocks += _run_blocks(loaded, tables, index, run)
    blocks += write_figures(loaded, figure_plans(loaded, tables, colors))
    return blocks + _analysis_blocks(loaded, tables)


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
        (root / name).chmod(0o644)  # the temporary file it came from was private (0600)
    return root / "report.md"
