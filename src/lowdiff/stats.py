"""Seeds -> summaries and paired comparisons: the statistics behind every "better" in lowdiff.

What is here (pure functions over per-seed values, numpy/scipy only, no I/O):

- ``summarize``: n, mean, standard deviation and Student-t confidence interval of one cell
  (run x dataset x metric) over its seeds.
- ``paired_comparison``: a candidate run against the baseline on the same seeds: mean
  difference (candidate - baseline) with its t interval, the two-sided paired t-test
  (primary) and the exact Wilcoxon signed-rank test (secondary).
- ``holm_adjusted_pvalues`` / ``holm_bonferroni`` / ``correct_family``: Holm's step-down
  correction for a family of comparisons.
- ``verdict``: the only phrase generated text may use to describe a comparison: better,
  worse, equivalent (within the margin, by TOST), undecided, or past the oracle value; the
  equivalence test and the sequential design are ``lowdiff.decisions``'.

Floor-aware comparisons
-----------------------
A metric with an *oracle value* (its value for fresh draws of the true distribution: the KL
floor, the HQ fraction of true samples, ...) is not better for being lower or higher, but for
being closer to that value: a k-NN KL below its floor means samples sharper than the data, not
better ones. ``paired_comparison(..., oracle=o)`` therefore tests, per seed,
d_s = |candidate_s - o| - |baseline_s - o| (paired t-test on the distances, Holm as for any
comparison): "better" only where the candidate is significantly *closer* to o, "worse" where
significantly farther. Independently, the candidate's own values are tested against o
(one-sample t-test of candidate_s - o, Holm-corrected over the same family): when they lie
significantly on the *past* side -- the side a metric overshoots to (``past_side``: below for
KL, above for the HQ fraction), or, for a metric without one, the side opposite the
baseline's mean -- the verdict is ``PAST_ORACLE`` with the metric's words ("past the oracle value
(significant): sharper than the data"), never "better", whatever the distances say. The oracle
value is treated as known (it is the mean of the oracle draws; its own spread, far below a
trained model's, is not propagated). Metrics without an oracle value (times, losses) keep the
plain direction (``lower_is_better``).

Why these tests
---------------
*Seeds are the replicates.* A run's seed ``s`` and the baseline's seed ``s`` share the data
order and the noise streams (batches, timesteps, eps, sampling noise), so the per-seed
values are *paired*: part of the seed-to-seed variation is common to both runs and cancels
in the difference. The test therefore works on the differences d_s = candidate_s -
baseline_s, and the paired t-test (``scipy.stats.ttest_rel``, t = mean(d) / (sd(d)/sqrt(n)),
n - 1 degrees of freedom) is the primary test. Its interval is the Student-t interval
mean(d) +- t_{1-alpha/2, n-1} sd(d)/sqrt(n); its level is 1 - alpha, so "p <= alpha" and
"the interval excludes 0" always agree (up to a tie at the boundary).

Assumptions and limits with few seeds. The t procedures assume the seeds are independent
and the differences roughly normal. With 3-5 seeds normality cannot be checked, the t
quantile is large (4.30 for n = 3, 2.78 for n = 5), intervals are wide and power is low:
"no significant difference" means "not shown", never "equal". One diverged seed dominates
a mean, so NaN/inf values raise instead of being averaged. Seed variation covers training
and sampling randomness only, not the choice of datasets or hyper-parameters.

*Wilcoxon signed-rank (secondary).* Assumes only that the differences are symmetric about
their median; it is exact here (all 2^n sign patterns; with tied |d| the exact permutation
distribution of the mid-ranks is enumerated, up to ``_WILCOXON_EXACT_MAX_TIED`` differences,
beyond that the normal approximation is used and said so in the note). Zero differences are
dropped (Wilcoxon's convention). Its p-values are discrete: the smallest two-sided p with
n nonzero differences is 2 / 2^n (``wilcoxon_smallest_p_value``): 0.25 for n = 3, 0.125
for n = 4, **0.0625 for n = 5 -- with five or fewer seeds it can never be significant at
0.05**. It becomes meaningful from n = 6 (0.03125), and useful from about n = 8. It is
reported as a robustness check (a disagreement with the t-test points at an outlier seed);
verdicts use the t-test only.

*Holm for multiple comparisons.* A report compares many runs on many datasets; testing each
at 0.05 makes some false "better" nearly certain (20 null comparisons: 64 %). Holm's
step-down procedure (Holm 1979) controls the family-wise error rate at alpha under any
dependence between the tests -- needed, since all runs are compared with the *same*
baseline -- and is uniformly more powerful than Bonferroni. Recommended family (what the
report uses): for each metric, all runs-vs-baseline comparisons over all datasets of the
report. Metrics are not pooled into one family: they answer different questions. A smaller
family (one metric and one dataset) is only right when that single table is the claim.
Comparisons without a p-value (one seed, zero variance) are untested and do not count in
the family size; they are never significant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

__all__ = [
    "BETTER",
    "EQUIVALENT",
    "NO_DIFFERENCE",
    "PAST_ORACLE",
    "NOT_TESTED_NO_ORACLE",
    "NOT_TESTED_SINGLE_SEED",
    "NOT_TESTED_ZERO_VARIANCE",
    "WORSE",
    "Comparison",
    "Summary",
    "correct_family",
    "holm_adjusted_pvalues",
    "holm_bonferroni",
    "not_judged",
    "is_past_oracle",
    "paired_comparison",
    "summarize",
    "variance_split",
    "VarianceSplit",
    "verdict",
    "wilcoxon_smallest_p_value",
]

# The only phrases ``verdict`` produces.
BETTER = "better (significant)"
WORSE = "worse (significant)"
# not significant and equivalence (within the margin) not shown: more seeds would decide it
NO_DIFFERENCE = "undecided"
EQUIVALENT = "equivalent (within the margin)"
NOT_TESTED_SINGLE_SEED = "single seed: not tested"
NOT_TESTED_ZERO_VARIANCE = "constant difference across seeds: not tested"
NOT_TESTED_NO_ORACLE = "no oracle value: not judged"
PAST_ORACLE = "past the oracle value (significant)"  # + ": " + the metric's words, if any

SINGLE_SEED_NOTE = "single seed: no interval"
# Exact tie-aware Wilcoxon enumerates 2^n sign patterns; beyond this n it would be slow.
_WILCOXON_EXACT_MAX_TIED = 12


@dataclass(frozen=True, kw_only=True)
class Summary:
    """One cell over its seeds. With a single seed std/ci_* are None and ``note`` says why."""

    n: int
    mean: float
    std: float | None  # sample standard deviation, ddof=1
    ci_low: float | None  # Student-t interval of the mean at level ``confidence``
    ci_high: float | None
    confidence: float = 0.95
    note: str | None = None

    @property
    def has_interval(self) -> bool:
        return self.ci_low is not None


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Candidate vs baseline on paired seeds; differences are candidate - baseline.

    ``significant`` is the paired t-test at ``alpha`` -- uncorrected (``correction ==
    "none"``) as returned by ``paired_comparison``, Holm-corrected after ``correct_family``.
    With an ``oracle`` value that test is on the distances to it (``distance_difference``);
    ``mean_difference`` and ``ci_*`` stay candidate - baseline, for display.
    """

    n: int
    mean_difference: float
    ci_low: float | None  # t interval of the mean difference at level 1 - alpha
    ci_high: float | None
    p_value: float | None  # two-sided paired t-test; None when not testable (see note)
    wilcoxon_p_value: float | None  # exact two-sided signed-rank test (secondary)
    lower_is_better: bool | None  # None: judged by the distance to ``oracle``
    alpha: float = 0.05
    significant: bool = False
    p_value_adjusted: float | None = None  # Holm-adjusted p once corrected, else = p_value
    correction: Literal["none", "holm"] = "none"
    family_size: int = 1  # number of tested comparisons in the corrected family
    note: str | None = None
    # floor-aware comparisons (``oracle`` given): the test above is on the distances to it
    oracle: float | None = None
    distance_difference: float | None = None  # mean of |candidate - o| - |baseline - o|
    distance_ci_low: float | None = None
    distance_ci_high: float | None = None
    past_side: Literal["below", "above"] | None = None  # the side that counts as past o
    past_p_value: float | None = None  # one-sample t-test of candidate - o, if on past_side
    past_p_value_adjusted: float | None = None
    past_significant: bool = False
    past_wording: str | None = None  # what being past o means for this metric
    # four verdicts (``lowdiff.decisions.decide_family``): equivalence and the seeds' power
    margin: float | None = None  # equivalence margin of the tested difference; None: no TOST
    equivalence_p: float | None = None  # TOST p (Schuirmann 1987) at the deciding look
    equivalent: bool = False  # |tested difference| < margin shown (Holm, at the look's level)
    decided_at: int | None = None  # seeds of the look that decided it (None: undecided)
    nominal_alpha: float | None = None  # two-sided level of the current look (sequential)
    max_seeds: int | None = None  # the sequential design's maximum (None: fixed sample)
    power: object | None = None  # decisions.PowerStatement of an undecided comparison

    @property
    def goal(self) -> Literal["lower", "higher", "oracle"]:
        if self.oracle is not None:
            return "oracle"
        return "lower" if self.lower_is_better else "higher"

    @property
    def tested_difference(self) -> float:
        """The mean difference the verdict is about: distances to the oracle, or raw values."""
        return (
            self.mean_difference if self.distance_difference is None else self.distance_difference
        )


# --- input checks -------------------------------------------------------------------------


def _seed_values(values: ArrayLike, name: str) -> np.ndarray:
    """Per-seed values as a finite 1-D float64 array, or a ValueError that says what is wrong."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected one value per seed (1-D), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: no values (need at least one seed)")
    nan_at = np.flatnonzero(np.isnan(array)).tolist()
    if nan_at:
        raise ValueError(
            f"{name}: NaN at seed position(s) {nan_at}; a diverged run must not be averaged "
            "silently -- rerun or drop those seeds explicitly (in both runs of a pair)"
        )
    inf_at = np.flatnonzero(np.isinf(array)).tolist()
    if inf_at:
        raise ValueError(f"{name}: infinite value at seed position(s) {inf_at}")
    return array


def _check_probability(value: float, name: str) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")


# --- one cell -----------------------------------------------------------------------------


def _t_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(std, ci_low, ci_high): mean +- t_{(1+c)/2, n-1} * std / sqrt(n); needs n >= 2."""
    n = values.size
    if np.ptp(values) == 0.0:  # all equal: avoid rounding noise in std
        return 0.0, float(values[0]), float(values[0])
    mean = float(values.mean())
    std = float(values.std(ddof=1))
    half_width = float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, df=n - 1)) * std / np.sqrt(n)
    return std, mean - half_width, mean + half_width


def summarize(values: ArrayLike, *, confidence: float = 0.95) -> Summary:
    """Mean, std (ddof=1) and Student-t interval of the mean of one cell's per-seed values.

    A single seed gives no std and no interval (never an invented one). NaN or inf raises.
    """
    _check_probability(confidence, "confidence")
    array = _seed_values(values, "values")
    n = array.size
    if n == 1:
        return Summary(
            n=1,
            mean=float(array[0]),
            std=None,
            ci_low=None,
            ci_high=None,
            confidence=confidence,
            note=SINGLE_SEED_NOTE,
        )
    std, ci_low, ci_high = _t_interval(array, confidence)
    note = "all seeds equal: zero-width interval" if std == 0.0 else None
    mean = float(array[0]) if std == 0.0 else float(array.mean())
    return Summary(
        n=n, mean=mean, std=std, ci_low=ci_low, ci_high=ci_high, confidence=confidence, note=note
    )


# --- paired comparison --------------------------------------------------------------------


def wilcoxon_smallest_p_value(n: int) -> float:
    """Smallest two-sided exact Wilcoxon p-value with n nonzero differences: 2 / 2^n."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return min(1.0, 2.0 ** (1 - n))


def _wilcoxon_p(differences: np.ndarray) -> tuple[float | None, str | None]:
    """Two-sided exact signed-rank p (zeros dropped), and a note when it is not exact/defined."""
    nonzero = differences[differences != 0.0]
    if nonzero.size == 0:
        return None, "Wilcoxon undefined: all differences are zero"
    magnitudes = np.abs(nonzero)
    has_ties = np.unique(magnitudes).size < magnitudes.size
    note = None
    if not has_ties:
        method = "exact"
    elif nonzero.size <= _WILCOXON_EXACT_MAX_TIED:
        # n_resamples >= 2^n: scipy enumerates every sign pattern (exact, tie-aware).
        method = scipy.stats.PermutationMethod(n_resamples=2**nonzero.size)
    else:
        method = "asymptotic"
        note = "Wilcoxon p from the normal approximation (tied differences)"
    result = scipy.stats.wilcoxon(nonzero, zero_method="wilcox", method=method)
    return float(result.pvalue), note


def _has_zero_variance(differences: np.ndarray, scale: float) -> bool:
    """Differences equal up to the rounding of inputs of magnitude ``scale``."""
    return float(np.ptp(differences)) <= 8.0 * np.finfo(np.float64).eps * max(scale, 1e-300)


def _join_notes(*notes: str | None) -> str | None:
    present = [note for note in notes if note]
    return "; ".join(present) if present else None


def _zero_variance_comparison(
    differences: np.ndarray,
    wilcoxon_p: float | None,
    wilcoxon_note: str | None,
    **fields: int | float | bool,
) -> Comparison:
    """Every seed differs by the same amount: the t statistic is 0/0 or +-inf, not a test."""
    mean_difference = float(np.median(differences))
    note = (
        "identical runs: difference 0, not significant"
        if mean_difference == 0.0
        else "paired t-test undefined: every seed differs by the same amount (zero variance)"
    )
    return Comparison(
        mean_difference=mean_difference,
        ci_low=mean_difference,
        ci_high=mean_difference,
        p_value=None,
        wilcoxon_p_value=wilcoxon_p,
        note=_join_notes(note, wilcoxon_note),
        **fields,
    )


def _direction_test(candidate: np.ndarray, baseline: np.ndarray, **fields: object) -> Comparison:
    """The paired t-test of candidate - baseline (plain direction), with its interval.

    ``fields`` (n, lower_is_better, alpha) go into the Comparison as they are."""
    alpha = float(fields["alpha"])
    differences = candidate - baseline  # (n,)
    if differences.size == 1:
        return Comparison(
            mean_difference=float(differences[0]),
            ci_low=None,
            ci_high=None,
            p_value=None,
            wilcoxon_p_value=None,
            note="single seed: no interval, not tested",
            **fields,
        )
    wilcoxon_p, wilcoxon_note = _wilcoxon_p(differences)
    scale = max(np.abs(candidate).max(), np.abs(baseline).max())
    if _has_zero_variance(differences, scale):
        return _zero_variance_comparison(differences, wilcoxon_p, wilcoxon_note, **fields)
    _, ci_low, ci_high = _t_interval(differences, 1.0 - alpha)
    p_value = float(scipy.stats.ttest_rel(candidate, baseline).pvalue)
    return Comparison(
        mean_difference=float(differences.mean()),
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        wilcoxon_p_value=wilcoxon_p,
        significant=p_value <= alpha,
        p_value_adjusted=p_value,
        note=wilcoxon_note,
        **fields,
    )


def _past_test(
    candidate: np.ndarray,
    baseline: np.ndarray,
    oracle: float,
    past_side: Literal["below", "above"] | None,
) -> tuple[Literal["below", "above"] | None, float | None]:
    """(the side that counts as past the oracle, p of candidate - oracle if it lies there)."""
    if past_side is None:  # no declared overshoot side: the side opposite the baseline
        baseline_offset = float(baseline.mean()) - oracle
        if baseline_offset == 0.0:
            return None, None
        past_side = "below" if baseline_offset > 0.0 else "above"
    offsets = candidate - oracle  # (n,)
    on_past_side = offsets.mean() < 0.0 if past_side == "below" else offsets.mean() > 0.0
    if candidate.size < 2 or not on_past_side or _has_zero_variance(offsets, abs(oracle)):
        return past_side, None
    return past_side, float(scipy.stats.ttest_1samp(offsets, 0.0).pvalue)


def paired_comparison(
    candidate: ArrayLike,
    baseline: ArrayLike,
    *,
    lower_is_better: bool | None = None,
    oracle: float | None = None,
    past_side: Literal["below", "above"] | None = None,
    past_wording: Mapping[str, str] | None = None,
    alpha: float = 0.05,
) -> Comparison:
    """Paired comparison of two runs over the same seeds, given in the same order.

    Give ``lower_is_better`` for a plain direction, or ``oracle`` (the metric's oracle value)
    for a floor-aware comparison (module docstring): then ``past_side`` is the side of the
    oracle the metric overshoots to (None: the side opposite the baseline) and
    ``past_wording`` maps "below"/"above" to what lying there means ("sharper than the data").
    Differences are candidate - baseline; the interval has level 1 - alpha. ``significant``
    is the *uncorrected* test at ``alpha``; pass a family through ``correct_family`` before
    making claims. The tests are two-sided.
    """
    _check_probability(alpha, "alpha")
    if (lower_is_better is None) == (oracle is None):
        raise ValueError(
            "give exactly one of lower_is_better (a plain direction) or oracle (the metric's "
            f"oracle value, for a floor-aware comparison); got {lower_is_better=}, {oracle=}"
        )
    if oracle is not None and not np.isfinite(oracle):
        raise ValueError(f"oracle must be a finite number, got {oracle}")
    candidate_values = _seed_values(candidate, "candidate")
    baseline_values = _seed_values(baseline, "baseline")
    if candidate_values.size != baseline_values.size:
        raise ValueError(
            f"paired comparison needs the same seeds in the same order: candidate has "
            f"{candidate_values.size} values, baseline has {baseline_values.size}"
        )
    fields = dict(n=candidate_values.size, lower_is_better=lower_is_better, alpha=alpha)
    if oracle is None:
        return _direction_test(candidate_values, baseline_values, **fields)
    return _oracle_test(
        candidate_values, baseline_values, float(oracle), past_side, past_wording, fields
    )


def not_judged(candidate: ArrayLike, baseline: ArrayLike, *, alpha: float = 0.05) -> Comparison:
    """A comparison of a metric that is judged by its oracle value when that value is unknown:
    the difference is kept for display, nothing is tested (``NOT_TESTED_NO_ORACLE``)."""
    _check_probability(alpha, "alpha")
    candidate_values = _seed_values(candidate, "candidate")
    baseline_values = _seed_values(baseline, "baseline")
    if candidate_values.size != baseline_values.size:
        raise ValueError("not_judged needs the same seeds in the same order")
    return Comparison(
        n=candidate_values.size,
        mean_difference=float((candidate_values - baseline_values).mean()),
        ci_low=None,
        ci_high=None,
        p_value=None,
        wilcoxon_p_value=None,
        lower_is_better=None,
        alpha=alpha,
        note="no oracle value for this metric and dataset: not judged",
    )


def _oracle_test(
    candidate: np.ndarray,
    baseline: np.ndarray,
    oracle: float,
    past_side: Literal["below", "above"] | None,
    past_wording: Mapping[str, str] | None,
    fields: dict,
) -> Comparison:
    """Paired t-test of |candidate - o| - |baseline - o|; raw difference kept for display."""
    distances = _direction_test(np.abs(candidate - oracle), np.abs(baseline - oracle), **fields)
    raw = _direction_test(candidate, baseline, **fields)
    side, past_p = _past_test(candidate, baseline, oracle, past_side)
    return replace(
        distances,
        mean_difference=raw.mean_difference,
        ci_low=raw.ci_low,
        ci_high=raw.ci_high,
        oracle=oracle,
        distance_difference=distances.mean_difference,
        distance_ci_low=distances.ci_low,
        distance_ci_high=distances.ci_high,
        past_side=side,
        past_p_value=past_p,
        past_p_value_adjusted=past_p,
        past_significant=past_p is not None and past_p <= fields["alpha"],
        past_wording=None if side is None or past_wording is None else past_wording.get(side),
    )


# --- multiple comparisons -----------------------------------------------------------------


def holm_adjusted_pvalues(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values, in input order; None stays None (untested).

    With the m tested p-values sorted, p_(1) <= ... <= p_(m):
    adjusted_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))   (Holm 1979).
    Rejecting where adjusted <= alpha is exactly Holm's procedure at level alpha.
    """
    tested = [index for index, p in enumerate(pvalues) if p is not None]
    values = np.array([pvalues[index] for index in tested], dtype=np.float64)  # (m,)
    if np.any(np.isnan(values)) or np.any((values < 0.0) | (values > 1.0)):
        raise ValueError(f"p-values must lie in [0, 1] (or be None), got {list(pvalues)}")
    m = values.size
    order = np.argsort(values, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * values[order])  # (m - j + 1) p_(j)
    adjusted_sorted = np.maximum.accumulate(scaled)
    adjusted: list[float | None] = [None] * len(pvalues)
    for rank, position in enumerate(order):
        adjusted[tested[position]] = float(adjusted_sorted[rank])
    return adjusted


def holm_bonferroni(pvalues: Sequence[float | None], alpha: float = 0.05) -> list[bool]:
    """Which hypotheses Holm's procedure rejects at family-wise level ``alpha``.

    None p-values (untested) are never significant and do not count in the family size.
    """
    _check_probability(alpha, "alpha")
    return [p is not None and p <= alpha for p in holm_adjusted_pvalues(pvalues)]


def correct_family(comparisons: Sequence[Comparison], *, alpha: float = 0.05) -> list[Comparison]:
    """Holm-correct a family of comparisons; returns copies with ``significant`` re-marked.

    Recommended family: for one metric, every run-vs-baseline comparison over every dataset
    of the report (see the module docstring).

    The one-sample "past the oracle value" tests of floor-aware comparisons are corrected
    over the same family, separately (they answer another question).
    """
    _check_probability(alpha, "alpha")
    adjusted = holm_adjusted_pvalues([comparison.p_value for comparison in comparisons])
    past_adjusted = holm_adjusted_pvalues([comparison.past_p_value for comparison in comparisons])
    family_size = sum(p is not None for p in adjusted)
    return [
        replace(
            comparison,
            alpha=alpha,
            significant=p_adjusted is not None and p_adjusted <= alpha,
            p_value_adjusted=p_adjusted,
            correction="holm",
            family_size=family_size,
            past_p_value_adjusted=past,
            past_significant=past is not None and past <= alpha,
        )
        for comparison, p_adjusted, past in zip(comparisons, adjusted, past_adjusted, strict=True)
    ]


# --- words --------------------------------------------------------------------------------


def verdict(comparison: Comparison, lower_is_better: bool | None = None) -> str:
    """A short honest phrase; "better"/"worse" only where the test (as marked) is significant.

    With an oracle value, "better" means significantly closer to it, and a candidate
    significantly past it gets ``PAST_ORACLE`` (+ the metric's words), never "better".
    ``lower_is_better`` defaults to the comparison's own; a contradicting value raises.
    """
    if lower_is_better is not None and lower_is_better != comparison.lower_is_better:
        raise ValueError(
            f"lower_is_better={lower_is_better} contradicts the comparison, which was made "
            f"with lower_is_better={comparison.lower_is_better}"
        )
    if comparison.oracle is None and comparison.lower_is_better is None:
        return NOT_TESTED_NO_ORACLE
    if comparison.n < 2:
        return NOT_TESTED_SINGLE_SEED
    if comparison.past_significant:
        wording = comparison.past_wording
        return f"{PAST_ORACLE}: {wording}" if wording else PAST_ORACLE
    difference = comparison.tested_difference
    if comparison.p_value is None:
        return NO_DIFFERENCE if difference == 0.0 else NOT_TESTED_ZERO_VARIANCE
    if comparison.equivalent and not comparison.significant:
        return EQUIVALENT
    if not comparison.significant or difference == 0.0:
        return NO_DIFFERENCE
    if comparison.oracle is not None:
        return BETTER if difference < 0.0 else WORSE  # closer to the oracle value
    candidate_is_lower = difference < 0.0
    return BETTER if candidate_is_lower == comparison.lower_is_better else WORSE


def is_past_oracle(phrase: str) -> bool:
    """Whether a ``verdict`` phrase says the candidate is past the oracle value."""
    return phrase.startswith(PAST_ORACLE)


# --- measurement noise apart from training noise ------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VarianceSplit:
    """One-way random-effects split of a metric over seeds (training) and sampling repeats."""

    seeds: int
    repeats: int
    between_seeds: float  # variance of the models' true values across training seeds
    within_model: float  # variance of one model's measurement across sampling repeats

    @property
    def within_share(self) -> float:
        """Share of one measurement's variance that is sampling and estimator noise."""
        total = self.between_seeds + self.within_model
        return self.within_model / total if total > 0.0 else 0.0


def variance_split(table: ArrayLike) -> VarianceSplit:
    """Method-of-moments variance components of a (seeds S, repeats K) table (one-way ANOVA):
    within = mean over seeds of the repeats' variance (ddof 1); between = variance of the seed
    means (ddof 1) - within / K, floored at 0. Needs S >= 2 and K >= 2."""
    values = np.asarray(table, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 2 or values.shape[1] < 2:
        raise ValueError(f"need a (seeds >= 2, repeats >= 2) table, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("variance_split: values must be finite")
    seeds, repeats = values.shape
    within = float(values.var(axis=1, ddof=1).mean())
    between = max(0.0, float(values.mean(axis=1).var(ddof=1)) - within / repeats)
    return VarianceSplit(seeds=seeds, repeats=repeats, between_seeds=between, within_model=within)
