"""The one reader of a results folder: cells on disk -> results -> summaries (torch-free).

`load(root)` resolves experiment.json back into its `ExperimentConfig` and reads every planned
cell (`lowdiff.cells.read`) and the oracle floors (`lowdiff.oracle`); `read(config, root)` does
the same for a config in hand (the runner). Both final_info.json (`final_info`,
`write_final_info`) and the report are built from the `ExperimentResults` this returns, so they
share one rule: a cell counts only if it is complete, current (its config hash matches) and its
own (not a copy of another cell's record); anything else is a `MissingCell` that says why, and is
never guessed. A diverged cell is a `MissingCell` too, with the step it diverged at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lowdiff import cells, decisions, headline, oracle, results, stats
from lowdiff.architectures import Mixing, arch_info
from lowdiff.config import ConfigError, ExperimentConfig, resolve, swept_from_json

__all__ = [
    "CellResult",
    "ExperimentResults",
    "MissingCell",
    "final_info",
    "load",
    "read",
    "read_config",
    "write_final_info",
]


@dataclass(frozen=True)
class MissingCell:
    """A planned cell without a result that counts, and why (diverged: at which step)."""

    run: str
    dataset: str
    seed: int
    reason: str
    diverged_at_step: int | None = None


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

    def _npy(self, name: str) -> np.ndarray | None:
        return results.read_npy(self.directory / name) if self.has(name) else None

    def _npz(self, name: str) -> dict[str, np.ndarray] | None:
        return results.read_npz(self.directory / name) if self.has(name) else None

    @cached_property
    def losses(self) -> np.ndarray | None:  # (steps,)
        return self._npy("losses.npy")

    @cached_property
    def samples(self) -> np.ndarray | None:  # (N, 2)
        return self._npy("samples.npy")

    @cached_property
    def repeats(self) -> dict[str, np.ndarray] | None:
        """repeats.npz: per metric, its value for each sampling repeat (K,); None if absent."""
        return self._npz("repeats.npz")

    @cached_property
    def weights(self) -> dict[str, np.ndarray] | None:
        """weights.npz: trace (S, K), final (N, K), field (n_t, G, G, K), ...; None if absent."""
        return self._npz("weights.npz")

    @cached_property
    def process(self) -> dict[str, np.ndarray] | None:
        """process.npz: timesteps (P,), points (P, n, 2) of the reverse process; None if absent."""
        return self._npz("process.npz")

    @property
    def num_weights(self) -> int | None:
        """K of the recorded weight trace, None if none (which weights: `mixing` of the run)."""
        weights = self.weights
        if weights is None or "trace" not in weights:
            return None
        return int(weights["trace"].shape[-1])


Floors = Mapping[str, Mapping[str, Mapping[str, Any]]]  # dataset -> metric -> {"mean", ...}


@dataclass(frozen=True)
class ExperimentResults:
    """A results folder as read: the resolved config, oracle floors, counted and missing cells."""

    root: Path
    config: ExperimentConfig
    floors: Mapping[tuple[int, int], Floors]  # (num_samples, k) -> floors
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

    def oracle_for(self, run: str) -> Floors:
        """The oracle floors measured with `run`'s sample count and k ({} if none)."""
        return self.floors.get(oracle.pair_of(self.config.run(run)), {})

    @property
    def oracle(self) -> Floors:
        """The baseline run's floors (every run's, when all use one sample count and k)."""
        return self.oracle_for(self.baseline)

    @property
    def oracle_num_samples(self) -> int | None:
        return oracle.pair_of(self.config.run(self.baseline))[0] if self.oracle else None

    def oracle_mean(self, dataset: str, metric: str, run: str | None = None) -> float | None:
        entry = self.oracle_for(run or self.baseline).get(dataset, {}).get(metric)
        return None if entry is None else float(entry["mean"])

    def oracle_sd(self, dataset: str, metric: str, run: str | None = None) -> float | None:
        entry = self.oracle_for(run or self.baseline).get(dataset, {}).get(metric)
        return None if entry is None or entry.get("std") is None else float(entry["std"])

    def margin(self, dataset: str, metric: str) -> float | None:
        """The equivalence margin of `metric` on `dataset`: experiment.margins if set, else
        the default from the oracle estimator's spread (`decisions.default_margin`)."""
        margins = self.config.experiment.margins
        if metric in margins:
            return float(margins[metric])
        return decisions.default_margin(self.oracle_sd(dataset, metric))

    @property
    def design(self) -> decisions.Design:
        """The sequential design of --until-decided, or a fixed-sample test (max_seeds 0)."""
        settings = self.config.experiment
        maximum = settings.max_seeds or None
        if maximum is not None:
            maximum = max(maximum, settings.round_seeds)
        return decisions.Design(max_seeds=maximum, round_seeds=settings.round_seeds)

    def design_for(self, run: str, reference: str, dataset: str) -> decisions.Design:
        """The design of one comparison: sequential when rounds of seeds could extend it (its
        dataset among experiment.sequential_datasets and both runs among the runs of interest,
        `sequential_runs`), else a fixed-sample test."""
        settings = self.config.experiment
        sequential = dataset in settings.sequential_datasets and {run, reference} <= set(
            self.sequential_runs
        )
        return self.design if sequential else decisions.Design(alpha=self.design.alpha)

    @property
    def sequential_runs(self) -> list[str]:
        """Runs that rounds of seeds may extend: experiment.sequential_runs, or every run."""
        return list(self.config.experiment.sequential_runs) or self.run_names

    def mixing(self, run: str) -> Mixing | None:
        """The mixing weights `run`'s architecture records (None: it records none)."""
        return arch_info(self.config.run(run).model.arch).mixing

    def runs_with_mixing(self, kind: str) -> list[str]:
        """Runs whose architecture mixes with weights of `kind` ("branches" or "gate") and
        that have at least one finished cell that recorded them."""
        return [
            run
            for run in self.run_names
            if (mixing := self.mixing(run)) is not None
            and mixing.kind == kind
            and any(c.has("weights.npz") for d in self.datasets for c in self.finished(run, d))
        ]

    def finished(self, run: str, dataset: str) -> list[CellResult]:
        """The finished cells of (run, dataset), in seed order."""
        keys = ((run, dataset, seed) for seed in self.seeds)
        return [self.cells[key] for key in keys if key in self.cells]

    def diverged(self, run: str, dataset: str) -> dict[int, int]:
        """seed -> step, for the diverged cells of (run, dataset)."""
        return {
            m.seed: m.diverged_at_step
            for m in self.missing
            if (m.run, m.dataset) == (run, dataset) and m.diverged_at_step is not None
        }

    def values(self, metric: str, run: str, dataset: str) -> dict[int, float]:
        """seed -> value of `metric` over the finished cells that recorded it."""
        return {
            cell.seed: float(cell.metrics[metric])
            for cell in self.finished(run, dataset)
            if metric in cell.metrics
        }


def repeat_values(
    loaded: ExperimentResults, metric: str, run: str, dataset: str
) -> dict[int, np.ndarray]:
    """{seed: the metric of every sampling repeat (K,)} of the cells that recorded repeats."""
    found = {}
    for cell in loaded.finished(run, dataset):
        table = cell.repeats
        if table is not None and metric in table:
            found[cell.seed] = np.asarray(table[metric], dtype=np.float64)
    return found


def read_config(root: Path) -> ExperimentConfig:
    """experiment.json -> ExperimentConfig, or a ResultsError saying why it is not ours."""
    root = Path(root)
    if not root.is_dir():
        raise results.ResultsError(f"{root}: not a directory; expected a lowdiff results directory")
    path = root / cells.EXPERIMENT_FILE
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
        config = resolve({"experiment": raw["experiment"], "runs": runs}, str(path))
        return replace(config, sweep=swept_from_json(raw.get("sweep", []), list(runs), str(path)))
    except ConfigError as error:
        raise results.ResultsError(f"{path}: not a valid lowdiff experiment: {error}") from error


def _count(found: cells.Found) -> CellResult | MissingCell:
    cell = found.cell
    if found.record is None:
        return MissingCell(*cell.key, found.reason or cells.NOT_FINISHED)
    if found.status == cells.DIVERGED:
        step = found.diverged_at_step
        return MissingCell(*cell.key, f"diverged at step {step}", step)
    return CellResult(*cell.key, cell.directory, found.record)


def read(config: ExperimentConfig, root: Path) -> ExperimentResults:
    """Every planned cell of `config` under `root`, counted or missing, and the floors."""
    counted: dict[tuple[str, str, int], CellResult] = {}
    missing: list[MissingCell] = []
    for cell in cells.plan(config, root):
        result = _count(cells.read(cell))
        if isinstance(result, CellResult):
            counted[cell.key] = result
        else:
            missing.append(result)
    return ExperimentResults(Path(root), config, oracle.read_floors(config, root), counted, missing)


def load(root: Path) -> ExperimentResults:
    """Read a results folder from its files alone; `results.ResultsError` if it is not ours."""
    return read(read_config(root), Path(root))


def final_info(loaded: ExperimentResults, run: str) -> dict[str, Any]:
    """final_info.json of `run`: per dataset, means, spread, CI and per-seed values of every
    metric over the cells that count (and the diverged seeds, when any)."""
    info: dict[str, Any] = {}
    for dataset in loaded.datasets:
        found = {cell.seed: cell.metrics for cell in loaded.finished(run, dataset)}
        diverged = loaded.diverged(run, dataset)
        if not found and not diverged:
            continue
        entry: dict[str, Any] = {"means": {}, "stds": {}, "ci95": {}, "per_seed": {}}
        entry["seeds"] = list(found)
        names = list(next(iter(found.values()))) if found else []
        for metric in names:
            values = {seed: metrics[metric] for seed, metrics in found.items() if metric in metrics}
            summary = stats.summarize(list(values.values()))
            entry["means"][metric] = summary.mean
            entry["stds"][metric] = summary.std
            entry["ci95"][metric] = (
                None if summary.ci_low is None else [summary.ci_low, summary.ci_high]
            )
            entry["per_seed"][metric] = {str(seed): v for seed, v in values.items()}
        if diverged:
            entry["diverged"] = {str(seed): step for seed, step in diverged.items()}
        info[dataset] = entry
    _add_headline(loaded, run, info)
    return info


HEADLINE_METRIC = "kl_divergence"


def run_headline(
    loaded: ExperimentResults, run: str, metric: str = HEADLINE_METRIC
) -> headline.Headline | None:
    """`run` against the baseline across datasets (`lowdiff.headline`), on paired seeds."""
    if run == loaded.baseline:
        return None
    pairs, floors = {}, {}
    for dataset in loaded.datasets:
        ours = loaded.values(metric, run, dataset)
        theirs = loaded.values(metric, loaded.baseline, dataset)
        common = sorted(seed for seed in ours if seed in theirs)
        pairs[dataset] = ([ours[s] for s in common], [theirs[s] for s in common])
        floors[dataset] = loaded.oracle_mean(dataset, metric)
    return headline.headline(pairs, floors)


def _add_headline(loaded: ExperimentResults, run: str, info: dict[str, Any]) -> None:
    """Per dataset entry, "versus_baseline": the dataset's gap closed and P(improvement), and
    the aggregate across datasets (repeated in each entry, so every top-level key stays a
    dataset, as the template's readers expect)."""
    found = run_headline(loaded, run)
    if found is None:
        return
    shared = found.to_json()
    verdicts = _headline_verdicts(loaded, run)
    for dataset, entry in info.items():
        if dataset in found.gap_closed:
            entry["versus_baseline"] = {
                "metric": HEADLINE_METRIC,
                **verdicts.get(dataset, {}),
                "gap_closed": found.gap_closed[dataset],
                "probability_of_improvement": found.probability_of_improvement[dataset],
                "aggregate": shared["aggregate"],
            }


def _headline_verdicts(loaded: ExperimentResults, run: str) -> dict[str, dict[str, Any]]:
    """{dataset: verdict, margin, seeds, seeds needed} of `run` on the headline metric: the
    report's own family (`report.tables`: every run x dataset, four verdicts)."""
    from lowdiff.report.tables import metric_tables  # torch-free; the report reads this module

    comparisons = metric_tables(loaded, [HEADLINE_METRIC])[HEADLINE_METRIC].comparisons
    found = {}
    for (name, dataset), comparison in comparisons.items():
        if name != run:
            continue
        power = comparison.power
        found[dataset] = {
            "verdict": stats.verdict(comparison),
            "margin": comparison.margin,
            "paired_seeds": comparison.n,
            "seeds_needed": None
            if power is None
            else (
                power.seeds_for_equivalence
                if power.kind == "equivalence"
                else power.seeds_for_effect
            ),
        }
    return found


def write_final_info(
    config: ExperimentConfig, root: Path, runs: Sequence[str] | None = None
) -> None:
    """Rewrite final_info.json of `runs` (default: every run) from the cells on disk."""
    loaded = read(config, root)
    for run in runs if runs is not None else loaded.run_names:
        results.write_json(Path(root) / run / cells.FINAL_INFO_FILE, final_info(loaded, run))
