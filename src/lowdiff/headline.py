"""One headline per run across datasets: the share of the gap to the oracle floor it closes
relative to the baseline, with a stratified bootstrap interval, and the probability of
improvement.

Pure numpy, no I/O. For a metric with an oracle floor o (KL: `oracle.json`), on one dataset
with paired seeds s:

- distance to the floor, per seed: |candidate_s - o| and |baseline_s - o|;
- gap closed = 1 - mean_s |candidate_s - o| / mean_s |baseline_s - o|: 0 is the baseline,
  1 is the floor reached, negative is farther from the floor than the baseline;
- probability of improvement = the share of seed pairs where the candidate is closer to the
  floor than the baseline (ties count one half), the paired form of P(X > Y) of
  Agarwal et al. 2021 ("Deep RL at the edge of the statistical precipice", rliable);
- the aggregate is the mean over datasets of both, and its 95 % interval is the percentile
  interval of a stratified bootstrap: seed pairs are resampled with replacement *within*
  each dataset (the datasets are fixed strata, as in rliable's stratified bootstrap), the
  aggregate recomputed, ``RESAMPLES`` times, with a fixed generator so the report is
  reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Headline", "RESAMPLES", "gap_closed", "headline", "probability_of_improvement"]

RESAMPLES = 2000
_BOOTSTRAP_SEED = 0


def gap_closed(candidate: np.ndarray, baseline: np.ndarray, floor: float) -> float:
    """1 - mean |candidate - floor| / mean |baseline - floor| (nan if the baseline is on it)."""
    base = float(np.mean(np.abs(np.asarray(baseline) - floor)))
    if base == 0.0:
        return float("nan")
    return 1.0 - float(np.mean(np.abs(np.asarray(candidate) - floor))) / base


def probability_of_improvement(candidate: np.ndarray, baseline: np.ndarray, floor: float) -> float:
    """Share of paired seeds where the candidate is closer to the floor (ties: one half)."""
    closer = np.abs(np.asarray(candidate) - floor) - np.abs(np.asarray(baseline) - floor)
    return float(np.mean((closer < 0.0) + 0.5 * (closer == 0.0)))


@dataclass(frozen=True, kw_only=True)
class Headline:
    """A run against the baseline across datasets (per dataset, and aggregated)."""

    gap_closed: dict[str, float]  # per dataset
    probability_of_improvement: dict[str, float]
    aggregate_gap_closed: float
    aggregate_ci: tuple[float, float]  # stratified bootstrap, 95 % percentile interval
    aggregate_probability: float
    aggregate_probability_ci: tuple[float, float]
    resamples: int = RESAMPLES

    def to_json(self) -> dict[str, object]:
        return {
            "gap_closed": self.gap_closed,
            "probability_of_improvement": self.probability_of_improvement,
            "aggregate": {
                "gap_closed": self.aggregate_gap_closed,
                "gap_closed_ci95": list(self.aggregate_ci),
                "probability_of_improvement": self.aggregate_probability,
                "probability_of_improvement_ci95": list(self.aggregate_probability_ci),
                "bootstrap": f"stratified by dataset, {self.resamples} resamples",
            },
        }


def headline(
    pairs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    floors: Mapping[str, float],
    *,
    resamples: int = RESAMPLES,
) -> Headline | None:
    """The headline from {dataset: (candidate, baseline) over paired seeds} and the floors.

    Datasets without a floor, without a paired seed or with the baseline on the floor are
    left out; None when none is left."""
    usable = {
        dataset: (np.asarray(c, dtype=float), np.asarray(b, dtype=float))
        for dataset, (c, b) in pairs.items()
        if floors.get(dataset) is not None and len(c) > 0
        and np.isfinite(gap_closed(c, b, floors[dataset]))
    }  # fmt: skip
    if not usable:
        return None
    gaps = {d: gap_closed(c, b, floors[d]) for d, (c, b) in usable.items()}
    chances = {d: probability_of_improvement(c, b, floors[d]) for d, (c, b) in usable.items()}
    boot_gaps, boot_chances = _stratified_bootstrap(usable, floors, resamples)
    return Headline(
        gap_closed=gaps,
        probability_of_improvement=chances,
        aggregate_gap_closed=float(np.mean(list(gaps.values()))),
        aggregate_ci=_percentiles(boot_gaps),
        aggregate_probability=float(np.mean(list(chances.values()))),
        aggregate_probability_ci=_percentiles(boot_chances),
        resamples=resamples,
    )


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def _stratified_bootstrap(
    usable: Mapping[str, tuple[np.ndarray, np.ndarray]],
    floors: Mapping[str, float],
    resamples: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(aggregate gap closed, aggregate P(improvement)) per resample: seed pairs resampled
    within each dataset, the per-dataset values recomputed and averaged over datasets."""
    rng = np.random.default_rng(_BOOTSTRAP_SEED)
    gaps = np.zeros((resamples, len(usable)))  # (R, D)
    chances = np.zeros((resamples, len(usable)))
    for column, (dataset, (candidate, baseline)) in enumerate(usable.items()):
        floor = floors[dataset]
        index = rng.integers(0, candidate.size, size=(resamples, candidate.size))  # (R, n)
        far_candidate = np.abs(candidate[index] - floor)  # (R, n)
        far_baseline = np.abs(baseline[index] - floor)
        with np.errstate(divide="ignore", invalid="ignore"):
            gaps[:, column] = 1.0 - far_candidate.mean(axis=1) / far_baseline.mean(axis=1)
        closer = far_candidate - far_baseline
        chances[:, column] = np.mean((closer < 0.0) + 0.5 * (closer == 0.0), axis=1)
    return gaps.mean(axis=1), chances.mean(axis=1)
