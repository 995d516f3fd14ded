"""Seeds until decided: the rounds of `lowdiff run FILE --until-decided` (torch-free part).

Each round adds `experiment.round_seeds` new seeds (the next unused seed numbers) to the
(run, dataset) pairs whose comparisons of interest are still undecided, retrains nothing that is
finished (a round's cells are ordinary cells: a seed's cell is the same whether a round or an
explicit seed list made it), re-reads the results and decides again, until every comparison of
interest is decided or `experiment.max_seeds` is reached. The comparisons of interest are the
difference claims of the experiment's claims file (`report.claims`; only those named in
`experiment.decide_claims` if set), or else every run against the baseline on the headline
metric. Runs identical to a run that gets seeds get them too (their cells are copies). Their
verdicts come from the report's own code (`report.tables` -> `lowdiff.decisions`) under the
group-sequential design stored in experiment.json (`until_decided`, `max_seeds`,
`round_seeds`), which is what keeps the error rates valid under this optional stopping
(docs/protocol.md). The design's scope is fixed before the first look and written there too:
`sequential_datasets` (the requested datasets) and `sequential_runs` (the runs of the chosen
claims); comparisons outside it keep their fixed-sample test.

A run restricted to some datasets (`--set 'experiment.datasets=["dino"]'`) on an existing
results directory keeps the directory's other datasets and seeds listed (`merged_config`), so
its report still shows them; only the requested datasets get new seeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from lowdiff import cells, stats, summary
from lowdiff.config import ConfigError, ExperimentConfig, identical_runs

DEFAULT_MAX_SEEDS = 15  # three rounds of five
Pair = tuple[str, str]  # (run, dataset)


def sequential_settings(config: ExperimentConfig, root: Path) -> ExperimentConfig:
    """`config` with until_decided on, a seed budget (default DEFAULT_MAX_SEEDS) and the
    design's scope: the requested datasets (with those of earlier rounds in root) and the runs
    of the chosen claims (none chosen: every run)."""
    settings = config.experiment
    maximum = settings.max_seeds or max(DEFAULT_MAX_SEEDS, len(settings.seeds))
    before = _earlier_scope(root)
    return dataclasses.replace(
        config,
        experiment=dataclasses.replace(
            settings,
            until_decided=True,
            max_seeds=maximum,
            sequential_datasets=tuple(dict.fromkeys((*before, *settings.datasets))),
            sequential_runs=_claim_runs(config, root),
        ),
    )


def _earlier_scope(root: Path) -> tuple[str, ...]:
    if not (Path(root) / cells.EXPERIMENT_FILE).is_file():
        return ()
    return summary.read_config(root).experiment.sequential_datasets


def _claim_runs(config: ExperimentConfig, root: Path) -> tuple[str, ...]:
    """The runs of the claims in experiment.decide_claims, with the runs identical to them."""
    wanted = config.experiment.decide_claims
    path = _claims_path(config, root) if wanted else None
    if path is None:
        return ()
    from lowdiff.report import claims as claims_module

    named = {
        run
        for claim in claims_module.load_claims(path)
        if claim.id in wanted
        for run in (*claim.candidates, *claim.comparison)
    }
    kept = {run for group in identical_runs(config) if named & set(group) for run in group}
    return tuple(run.name for run in config.runs if run.name in kept)


def _claims_path(config: ExperimentConfig, root: Path) -> Path | None:
    from lowdiff.report import claims as claims_module

    path = claims_module.find_claims(Path(root), config.experiment.name)
    return path or claims_module.find_claims(Path.cwd(), config.experiment.name)


def merged_config(config: ExperimentConfig, root: Path) -> ExperimentConfig:
    """`config` with the datasets and seeds already listed in root/experiment.json kept."""
    if not (Path(root) / cells.EXPERIMENT_FILE).is_file():
        return config
    before = summary.read_config(root).experiment
    datasets = tuple(dict.fromkeys((*before.datasets, *config.experiment.datasets)))
    seeds = tuple(sorted(set(before.seeds) | set(config.experiment.seeds)))
    return dataclasses.replace(
        config,
        experiment=dataclasses.replace(config.experiment, datasets=datasets, seeds=seeds),
    )


def check_until_decided(config: ExperimentConfig, root: Path) -> None:
    """Bad input before any work: no baseline to compare with, or a budget below the seeds
    already run."""
    if len(config.runs) < 2:
        raise ConfigError(
            "--until-decided needs a baseline and at least one other run to compare with; "
            f"the experiment has only {config.runs[0].name!r}",
            key="experiment.until_decided",
        )
    _check_claim_ids(config, root)
    seeds = merged_config(config, root).experiment.seeds
    maximum = config.experiment.max_seeds
    if maximum and maximum < len(seeds):
        raise ConfigError(
            f"--max-seeds {maximum} is below the {len(seeds)} seeds already run or listed "
            f"({', '.join(map(str, seeds))}); give at least {len(seeds)}",
            key="experiment.max_seeds",
        )


def _check_claim_ids(config: ExperimentConfig, root: Path) -> None:
    """experiment.decide_claims must name claims of the experiment's claims file."""
    wanted = config.experiment.decide_claims
    if not wanted:
        return
    from lowdiff.report import claims as claims_module

    path = _claims_path(config, root)
    known = [claim.id for claim in claims_module.load_claims(path)] if path else []
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ConfigError(
            f"experiment.decide_claims: unknown claim(s) {', '.join(unknown)}; valid: "
            + (", ".join(known) if known else "none (no claims file found)"),
            key="experiment.decide_claims",
        )


def undecided_pairs(loaded: summary.ExperimentResults, requested: Sequence[str]) -> set[Pair]:
    """The (run, dataset) pairs, both sides of each comparison, that still need seeds."""
    from lowdiff.report import claims as claims_module  # the report's verdicts, torch-free
    from lowdiff.report.tables import metric_tables

    path = claims_module.find_claims(loaded.root, loaded.config.experiment.name)
    rows: list[tuple[str, str, str, stats.Comparison | None]] = []
    wanted = set(loaded.config.experiment.decide_claims)
    if path is not None:
        found = claims_module.difference_rows(claims_module.load_claims(path), loaded)
        rows = [
            (r.run, r.reference, r.dataset, r.comparison)
            for r in found
            if not wanted or r.claim.id in wanted
        ]
    if not rows:
        comparisons = metric_tables(loaded)[summary.HEADLINE_METRIC].comparisons
        rows = [(run, loaded.baseline, d, c) for (run, d), c in comparisons.items()]
    needing: set[Pair] = set()
    for run, reference, dataset, comparison in rows:
        if dataset not in requested:
            continue
        if comparison is None or stats.verdict(comparison) in _UNDECIDED:
            needing |= {(run, dataset), (reference, dataset)}
    return _with_identical_runs(loaded, needing)


def _with_identical_runs(loaded: summary.ExperimentResults, pairs: set[Pair]) -> set[Pair]:
    """The pairs, plus those of runs identical to one of them (their cells are copies)."""
    widened = set(pairs)
    for group in identical_runs(loaded.config):
        for run, dataset in pairs:
            if run in group:
                widened |= {(other, dataset) for other in group}
    return widened


_UNDECIDED = (stats.NO_DIFFERENCE, stats.NOT_TESTED_SINGLE_SEED, stats.NOT_TESTED_ZERO_VARIANCE)


def next_seeds(seeds: Sequence[int], round_seeds: int, max_seeds: int) -> tuple[int, ...]:
    """The seeds after one more round: the next unused numbers, up to max_seeds in all."""
    count = min(round_seeds, max_seeds - len(seeds))
    start = max(seeds) + 1 if seeds else 0
    return tuple(seeds) + tuple(range(start, start + max(count, 0)))


def with_seeds(config: ExperimentConfig, seeds: Sequence[int]) -> ExperimentConfig:
    return dataclasses.replace(
        config, experiment=dataclasses.replace(config.experiment, seeds=tuple(seeds))
    )


RunOnce = Callable[[ExperimentConfig, Collection[Pair]], int]  # one pass; its exit status


def until_decided(
    config: ExperimentConfig, root: Path, run_once: RunOnce, say: Callable[[str], None]
) -> int:
    """Run `config` (only the requested datasets), decide, add a round of seeds to the pairs
    still undecided, and again, until all are decided or the budget is spent. `run_once`
    makes the missing cells of the given pairs (and writes the report); a non-zero status
    stops the rounds and is returned."""
    check_until_decided(config, root)  # before any work
    requested = config.experiment.datasets
    config = merged_config(sequential_settings(config, root), root)
    maximum = config.experiment.max_seeds
    only: set[Pair] = {(run.name, dataset) for run in config.runs for dataset in requested}
    while True:
        status = run_once(config, only)
        if status != 0:
            return status
        needing = undecided_pairs(summary.load(root), requested)
        seeds = config.experiment.seeds
        if not needing:
            say("until-decided: every comparison of interest is decided")
            return 0
        if len(seeds) >= maximum:
            pairs = ", ".join(sorted(f"{run} on {dataset}" for run, dataset in needing))
            say(f"until-decided: the budget of {maximum} seeds is spent; undecided: {pairs}")
            return 0
        config = with_seeds(config, next_seeds(seeds, config.experiment.round_seeds, maximum))
        only = needing
        say(
            f"until-decided: round with seeds {', '.join(map(str, config.experiment.seeds))} "
            f"for {len(needing)} undecided run x dataset pair(s)"
        )
