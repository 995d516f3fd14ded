"""Tests of lowdiff.stats against closed forms, textbook cases and simulated calibration."""

import itertools
import math

import numpy as np
import pytest

from lowdiff.metrics import METRICS
from lowdiff.report import tables
from lowdiff.stats import (
    BETTER,
    NO_DIFFERENCE,
    NOT_TESTED_NO_ORACLE,
    NOT_TESTED_SINGLE_SEED,
    NOT_TESTED_ZERO_VARIANCE,
    PAST_ORACLE,
    WORSE,
    Comparison,
    correct_family,
    holm_adjusted_pvalues,
    holm_bonferroni,
    is_past_oracle,
    not_judged,
    paired_comparison,
    summarize,
    verdict,
    wilcoxon_smallest_p_value,
)

# Student-t quantiles t_{0.975, df} from the printed tables (not from scipy).
T_975 = {2: 4.302652729749464, 4: 2.7764451051977987}


# --- summarize ----------------------------------------------------------------------------


def test_summary_matches_hand_computed_t_interval():
    summary = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    std = math.sqrt(2.5)  # sum of squared deviations 10, over n - 1 = 4
    half_width = T_975[4] * std / math.sqrt(5)
    assert summary.n == 5
    assert summary.mean == pytest.approx(3.0)
    assert summary.std == pytest.approx(std)
    assert summary.ci_low == pytest.approx(3.0 - half_width)
    assert summary.ci_high == pytest.approx(3.0 + half_width)
    assert summary.has_interval and summary.note is None


def test_single_seed_gives_no_interval():
    summary = summarize([0.7])
    assert summary.n == 1 and summary.mean == 0.7
    assert summary.std is None and summary.ci_low is None and summary.ci_high is None
    assert not summary.has_interval
    assert summary.note == "single seed: no interval"


def test_equal_seeds_give_zero_width_interval_exactly():
    summary = summarize([0.1, 0.1, 0.1])
    assert summary.mean == 0.1 and summary.std == 0.0
    assert summary.ci_low == summary.ci_high == 0.1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_value_raises(bad):
    with pytest.raises(ValueError, match=r"NaN|infinite") as error:
        summarize([1.0, bad, 2.0])
    assert "[1]" in str(error.value)  # names the seed position


@pytest.mark.parametrize("values", [[], [[1.0, 2.0], [3.0, 4.0]]])
def test_summarize_rejects_empty_or_non_1d(values):
    with pytest.raises(ValueError):
        summarize(values)


# --- paired comparison --------------------------------------------------------------------


def test_paired_t_matches_closed_form_with_two_degrees_of_freedom():
    # d = [0.5, 0.5, -0.1]: mean 0.3, sd sqrt(0.12), se 0.2, t = 1.5.
    # For df = 2 the t CDF is closed form: two-sided p = 1 - |t| / sqrt(2 + t^2).
    comparison = paired_comparison([1.0, 2.5, 2.9], [0.5, 2.0, 3.0], lower_is_better=True)
    assert comparison.n == 3
    assert comparison.mean_difference == pytest.approx(0.3)
    assert comparison.p_value == pytest.approx(1.0 - 1.5 / math.sqrt(2.0 + 1.5**2))
    assert comparison.ci_low == pytest.approx(0.3 - T_975[2] * 0.2)
    assert comparison.ci_high == pytest.approx(0.3 + T_975[2] * 0.2)
    assert not comparison.significant
    assert verdict(comparison) == NO_DIFFERENCE


def test_paired_t_matches_closed_form_with_one_degree_of_freedom():
    # d = [1, 3]: t = 2 / (sqrt(2) / sqrt(2)) = 2; df = 1 is Cauchy: p = 1 - (2/pi) atan|t|.
    comparison = paired_comparison([1.0, 3.0], [0.0, 0.0], lower_is_better=True)
    assert comparison.p_value == pytest.approx(1.0 - 2.0 / math.pi * math.atan(2.0))


@pytest.mark.parametrize("seed", range(8))
def test_significance_agrees_with_interval_excluding_zero(seed):
    rng = np.random.default_rng(seed)
    baseline = rng.normal(size=5)
    candidate = baseline + rng.normal(loc=0.8, scale=1.0, size=5)
    comparison = paired_comparison(candidate, baseline, lower_is_better=True)
    excludes_zero = comparison.ci_low > 0.0 or comparison.ci_high < 0.0
    assert comparison.significant == excludes_zero


def test_identical_runs_are_never_significant():
    values = [0.31, 0.27, 0.35, 0.29]
    comparison = paired_comparison(values, list(values), lower_is_better=True)
    assert comparison.mean_difference == 0.0
    assert comparison.p_value is None and not comparison.significant
    assert "identical" in comparison.note
    assert verdict(comparison) == NO_DIFFERENCE
    (corrected,) = correct_family([comparison])
    assert not corrected.significant and verdict(corrected) == NO_DIFFERENCE


def test_constant_offset_is_not_tested_even_with_rounding_noise():
    baseline = np.array([0.1, 0.2, 0.3, 0.7])
    candidate = baseline + 0.1  # ptp of the differences is ~1e-17, not 0: rounding only
    comparison = paired_comparison(candidate, baseline, lower_is_better=True)
    assert comparison.p_value is None and not comparison.significant
    assert comparison.mean_difference == pytest.approx(0.1)
    assert "zero variance" in comparison.note
    assert verdict(comparison) == NOT_TESTED_ZERO_VARIANCE


def test_single_seed_comparison_is_not_tested():
    comparison = paired_comparison([1.0], [2.0], lower_is_better=True)
    assert comparison.mean_difference == -1.0
    assert comparison.p_value is None and comparison.ci_low is None
    assert verdict(comparison) == NOT_TESTED_SINGLE_SEED


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="same seeds"):
        paired_comparison([1.0, 2.0, 3.0], [1.0, 2.0], lower_is_better=True)


def test_nan_in_a_paired_run_raises_and_names_it():
    with pytest.raises(ValueError, match="baseline: NaN"):
        paired_comparison([1.0, 2.0, 3.0], [1.0, float("nan"), 3.0], lower_is_better=True)


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_large_effect_is_detected_in_the_right_direction(lower_is_better):
    rng = np.random.default_rng(0)
    baseline = rng.normal(loc=1.0, scale=0.3, size=5)
    candidate = baseline - 2.0 + rng.normal(scale=0.3, size=5)  # clearly lower
    comparison = paired_comparison(candidate, baseline, lower_is_better=lower_is_better)
    assert comparison.p_value < 1e-3
    assert verdict(comparison) == (BETTER if lower_is_better else WORSE)


def test_verdict_rejects_contradicting_direction():
    comparison = paired_comparison([1.0, 2.0, 3.5], [1.5, 2.2, 3.0], lower_is_better=True)
    assert verdict(comparison, True) == verdict(comparison)
    with pytest.raises(ValueError, match="contradicts"):
        verdict(comparison, lower_is_better=False)


# --- Wilcoxon (secondary) -----------------------------------------------------------------


def _brute_force_signed_rank_p(differences):
    """Two-sided exact p by enumerating every sign pattern of the mid-ranks of |d|."""
    magnitudes = np.abs(differences)
    ranks = np.array([np.mean(np.flatnonzero(np.sort(magnitudes) == m) + 1) for m in magnitudes])
    observed = abs(ranks[differences > 0].sum() - ranks.sum() / 2)
    patterns = list(itertools.product([0, 1], repeat=len(ranks)))
    extreme = sum(
        abs(ranks[np.array(p, bool)].sum() - ranks.sum() / 2) >= observed for p in patterns
    )
    return extreme / len(patterns)


@pytest.mark.parametrize("n, expected", [(3, 0.25), (5, 0.0625), (6, 0.03125)])
def test_wilcoxon_smallest_p_cannot_reach_005_with_five_seeds(n, expected):
    differences = np.arange(1.0, n + 1.0)  # every difference positive: the most extreme case
    comparison = paired_comparison(differences, np.zeros(n), lower_is_better=True)
    assert comparison.wilcoxon_p_value == pytest.approx(expected)
    assert wilcoxon_smallest_p_value(n) == pytest.approx(expected)


@pytest.mark.parametrize(
    "differences", [[1.0, 1.0, 3.0, 4.0, -5.0], [2.0, -2.0, 2.0, 1.0, 3.0, 3.0, -0.5]]
)
def test_wilcoxon_is_exact_with_tied_differences(differences):
    differences = np.array(differences)
    comparison = paired_comparison(differences, np.zeros(differences.size), lower_is_better=True)
    assert comparison.wilcoxon_p_value == pytest.approx(_brute_force_signed_rank_p(differences))


# --- Holm ---------------------------------------------------------------------------------


def test_holm_textbook_example():
    # m = 5: thresholds 0.05/5, 0.05/4, 0.05/3, ...; 0.001 <= 0.01, 0.011 <= 0.0125, then
    # 0.02 > 0.0167 stops. Bonferroni (0.05/5 for all) would reject only the first.
    pvalues = [0.04, 0.001, 0.3, 0.011, 0.02]
    assert holm_bonferroni(pvalues) == [False, True, False, True, False]
    assert holm_adjusted_pvalues(pvalues) == pytest.approx([0.08, 0.005, 0.3, 0.044, 0.06])


def test_holm_second_example_and_monotone_adjustment():
    assert holm_bonferroni([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    # adjusted p-values never decrease along the sorted order: (2 * 0.01, max(0.02, 0.011))
    assert holm_adjusted_pvalues([0.01, 0.011]) == pytest.approx([0.02, 0.02])


def test_holm_none_is_untested_and_not_counted():
    assert holm_bonferroni([None, 0.02, 0.04]) == [False, True, True]  # m = 2, not 3
    assert holm_adjusted_pvalues([None, 0.02, 0.04]) == [None, pytest.approx(0.04), 0.04]
    assert holm_bonferroni([None, None]) == [False, False]
    assert holm_bonferroni([]) == []


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(4)))[::5])
def test_holm_does_not_depend_on_order(permutation):
    pvalues = [0.012, 0.001, 0.02, 0.3]
    expected = holm_bonferroni(pvalues)
    shuffled = holm_bonferroni([pvalues[i] for i in permutation])
    assert shuffled == [expected[i] for i in permutation]


@pytest.mark.parametrize("bad", [[float("nan")], [1.5], [-0.1]])
def test_holm_rejects_invalid_pvalues(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_bonferroni(bad)


def _comparison_with_p(p_value):
    return Comparison(
        n=5,
        mean_difference=-0.1,
        ci_low=None,
        ci_high=None,
        p_value=p_value,
        wilcoxon_p_value=None,
        lower_is_better=True,
        significant=p_value is not None and p_value <= 0.05,
        p_value_adjusted=p_value,
    )


def test_correct_family_marks_significance_after_holm():
    family = [_comparison_with_p(p) for p in (0.03, 0.001, 0.2, None)]
    assert [verdict(c) for c in family[:2]] == [BETTER, BETTER]  # uncorrected
    corrected = correct_family(family)
    assert [c.significant for c in corrected] == [False, True, False, False]
    assert [verdict(c) for c in corrected[:2]] == [NO_DIFFERENCE, BETTER]
    assert all(c.correction == "holm" and c.family_size == 3 for c in corrected)
    assert corrected[0].p_value_adjusted == pytest.approx(0.06)
    assert corrected[0].p_value == 0.03  # raw p kept


# --- calibration --------------------------------------------------------------------------


def _null_experiment(rng, n_seeds, n_candidates):
    """Baseline and candidates from one distribution; a shared per-seed effect pairs them."""
    seed_effect = rng.normal(size=n_seeds)
    baseline = seed_effect + rng.normal(scale=0.3, size=n_seeds)
    candidates = seed_effect + rng.normal(scale=0.3, size=(n_candidates, n_seeds))
    return baseline, candidates


def test_uncorrected_paired_test_has_nominal_false_positive_rate():
    rng = np.random.default_rng(12345)
    n_experiments = 2000
    comparisons = []
    for _ in range(n_experiments):
        baseline, (candidate,) = _null_experiment(rng, n_seeds=5, n_candidates=1)
        comparisons.append(paired_comparison(candidate, baseline, lower_is_better=True))
    rate = np.mean([c.significant for c in comparisons])
    tolerance = 4.0 * math.sqrt(0.05 * 0.95 / n_experiments)  # binomial, 4 standard errors
    assert abs(rate - 0.05) < tolerance
    # the t-test never claims "better" or "worse" more often than that
    claims = np.mean([verdict(c) in (BETTER, WORSE) for c in comparisons])
    assert claims == rate
    # with 5 seeds the exact Wilcoxon test cannot reject at 0.05 at all
    assert min(c.wilcoxon_p_value for c in comparisons) >= 0.0625 - 1e-12


def test_holm_controls_family_wise_error_rate():
    rng = np.random.default_rng(2024)
    n_families, family_size = 1000, 4  # e.g. 4 runs against one shared baseline
    any_uncorrected, any_holm = [], []
    for _ in range(n_families):
        baseline, candidates = _null_experiment(rng, n_seeds=5, n_candidates=family_size)
        family = [paired_comparison(c, baseline, lower_is_better=True) for c in candidates]
        any_uncorrected.append(any(c.significant for c in family))
        any_holm.append(any(c.significant for c in correct_family(family)))
    tolerance = 3.0 * math.sqrt(0.05 * 0.95 / n_families)
    assert np.mean(any_holm) <= 0.05 + tolerance
    assert np.mean(any_uncorrected) > 0.10  # without correction the family error inflates


def test_holm_keeps_a_real_large_effect():
    rng = np.random.default_rng(7)
    baseline, candidates = _null_experiment(rng, n_seeds=5, n_candidates=4)
    candidates[0] -= 2.0  # only the first run is really better
    family = [paired_comparison(c, baseline, lower_is_better=True) for c in candidates]
    verdicts = [verdict(c) for c in correct_family(family)]
    assert verdicts[0] == BETTER
    assert all(v == NO_DIFFERENCE for v in verdicts[1:])


# --- floor-aware comparisons --------------------------------------------------------------

ORACLE = -0.08  # e.g. dino's KL floor, in bits
WORDS = {"below": "sharper than the data", "above": "farther from the data"}


def _kl_like(rng, offset, n_seeds=5, spread=0.02):
    """Per-seed values of a metric whose oracle value is ORACLE, `offset` away from it."""
    return ORACLE + offset + rng.normal(scale=spread, size=n_seeds)


def test_the_floor_aware_test_is_on_the_distances_to_the_oracle():
    candidate, baseline = np.array([0.1, 0.3, 0.2]), np.array([0.5, 0.4, 0.9])
    comparison = paired_comparison(candidate, baseline, oracle=0.0)
    expected = paired_comparison(np.abs(candidate), np.abs(baseline), lower_is_better=True)
    assert comparison.p_value == pytest.approx(expected.p_value)
    assert comparison.distance_difference == pytest.approx(expected.mean_difference)
    assert comparison.mean_difference == pytest.approx((candidate - baseline).mean())  # display
    assert comparison.goal == "oracle" and comparison.lower_is_better is None


@pytest.mark.parametrize("baseline_offset", [0.0, 0.05, 0.3, 0.6])
@pytest.mark.parametrize("overshoot", [0.1, 0.2, 0.4])
def test_over_sharp_runs_are_never_called_better(baseline_offset, overshoot):
    # candidate: significantly below the floor (sharper than the data); baseline: at the floor
    # (oracle samples) or above it (blurry), even farther from the floor than the candidate
    rng = np.random.default_rng(int(100 * baseline_offset + 10 * overshoot))
    for _ in range(20):
        candidate = _kl_like(rng, -overshoot)
        baseline = _kl_like(rng, baseline_offset)
        comparison = paired_comparison(
            candidate, baseline, oracle=ORACLE, past_side="below", past_wording=WORDS
        )
        (corrected,) = correct_family([comparison])
        for judged in (comparison, corrected):
            assert verdict(judged) == f"{PAST_ORACLE}: sharper than the data"
            assert is_past_oracle(verdict(judged)) and verdict(judged) != BETTER


def test_a_blind_direction_would_have_called_the_over_sharp_run_better():
    rng = np.random.default_rng(3)
    candidate, baseline = _kl_like(rng, -0.1), _kl_like(rng, 0.0)
    assert verdict(paired_comparison(candidate, baseline, lower_is_better=True)) == BETTER
    floor_aware = paired_comparison(candidate, baseline, oracle=ORACLE, past_side="below")
    assert verdict(floor_aware) == PAST_ORACLE  # no words given: the generic phrase


def test_a_run_genuinely_closer_to_the_floor_is_better():
    rng = np.random.default_rng(4)
    candidate, baseline = _kl_like(rng, 0.1), _kl_like(rng, 0.4)
    comparison = paired_comparison(
        candidate, baseline, oracle=ORACLE, past_side="below", past_wording=WORDS
    )
    assert verdict(comparison) == BETTER
    assert comparison.past_p_value is None  # above the floor: nothing to test on the past side
    assert verdict(paired_comparison(baseline, candidate, oracle=ORACLE)) == WORSE


def test_without_a_declared_side_past_is_the_side_opposite_the_baseline():
    rng = np.random.default_rng(5)
    below, above = _kl_like(rng, -0.3), _kl_like(rng, 0.3)
    comparison = paired_comparison(above, below, oracle=ORACLE, past_wording=WORDS)
    assert comparison.past_side == "above"
    assert verdict(comparison) == f"{PAST_ORACLE}: farther from the data"


def test_floor_aware_null_comparisons_keep_the_nominal_rate():
    rng = np.random.default_rng(6)
    n_experiments = 1000
    claims = []
    for _ in range(n_experiments):
        seed_effect = rng.normal(scale=0.05, size=5)
        candidate = ORACLE + 0.2 + seed_effect + rng.normal(scale=0.03, size=5)
        baseline = ORACLE + 0.2 + seed_effect + rng.normal(scale=0.03, size=5)
        comparison = paired_comparison(candidate, baseline, oracle=ORACLE, past_side="below")
        claims.append(verdict(comparison) in (BETTER, WORSE) or comparison.past_significant)
    assert np.mean(claims) <= 0.05 + 4.0 * math.sqrt(0.05 * 0.95 / n_experiments)


def test_holm_corrects_both_floor_aware_tests():
    rng = np.random.default_rng(7)
    baseline = _kl_like(rng, 0.3)
    barely_below = ORACLE + np.array([-0.006, -0.001, -0.004, 0.001, -0.005])  # p ≈ 0.08
    candidates = [_kl_like(rng, 0.3), _kl_like(rng, 0.3), _kl_like(rng, -0.2), barely_below]
    family = [paired_comparison(c, baseline, oracle=ORACLE, past_side="below") for c in candidates]
    corrected = correct_family(family)
    assert all(c.family_size == 4 and c.correction == "holm" for c in corrected)
    assert [c.p_value_adjusted for c in corrected] == pytest.approx(
        holm_adjusted_pvalues([c.p_value for c in family])
    )
    past = [c.past_p_value for c in family]
    assert past[:2] == [None, None] and None not in past[2:]  # tested only below the floor
    assert [c.past_p_value_adjusted for c in corrected] == holm_adjusted_pvalues(past)
    assert corrected[2].past_p_value_adjusted == pytest.approx(2 * past[2])  # smallest of 2
    assert verdict(corrected[2]) == PAST_ORACLE
    # barely below the floor (not significantly past it) and much closer than the baseline
    assert not corrected[3].past_significant and verdict(corrected[3]) == BETTER


def test_floor_aware_arguments_are_validated():
    with pytest.raises(ValueError, match="exactly one of lower_is_better"):
        paired_comparison([1.0, 2.0], [1.0, 3.0])
    with pytest.raises(ValueError, match="exactly one of lower_is_better"):
        paired_comparison([1.0, 2.0], [1.0, 3.0], lower_is_better=True, oracle=0.0)
    with pytest.raises(ValueError, match="finite"):
        paired_comparison([1.0, 2.0], [1.0, 3.0], oracle=float("nan"))


def test_an_oracle_metric_without_its_oracle_value_is_not_judged():
    comparison = not_judged([0.1, 0.2, 0.3], [0.5, 0.6, 0.7])
    assert verdict(comparison) == NOT_TESTED_NO_ORACLE
    assert comparison.mean_difference == pytest.approx(-0.4)
    assert not correct_family([comparison])[0].significant


# --- the report's tables judge every catalogue metric by its goal -------------------------


def _runs(candidate, baseline, dataset="dino"):
    return {
        "baseline": {dataset: dict(enumerate(baseline))},
        "candidate": {dataset: dict(enumerate(candidate))},
    }


def test_report_tables_judge_kl_against_its_floor():
    rng = np.random.default_rng(8)
    values = _runs(_kl_like(rng, -0.15), _kl_like(rng, 0.0))
    comparisons = tables.compare_runs(
        values, "baseline", ["candidate"], metric="kl_divergence", oracle={"dino": ORACLE}
    )
    comparison = comparisons[("candidate", "dino")]
    assert verdict(comparison) == f"{PAST_ORACLE}: {METRICS['kl_divergence'].below_oracle}"
    text = tables.format_delta(comparison, "kl_divergence")
    text += tables.describe_comparison(comparison, "kl_divergence", " bits")
    assert "better" not in text and "past the oracle value" in text
    # without its floor the same metric is not judged; a plain metric keeps its direction
    unjudged = tables.compare_runs(values, "baseline", ["candidate"], metric="kl_divergence")
    assert verdict(unjudged[("candidate", "dino")]) == NOT_TESTED_NO_ORACLE
    timed = tables.compare_runs(values, "baseline", ["candidate"], metric="training_time")
    assert verdict(timed[("candidate", "dino")]) == BETTER  # lower is better for a time


def test_report_tables_call_a_closer_run_better_with_its_numbers():
    rng = np.random.default_rng(9)
    values = _runs(_kl_like(rng, 0.05), _kl_like(rng, 0.4))
    comparison = tables.compare_runs(
        values, "baseline", ["candidate"], metric="kl_divergence", oracle={"dino": ORACLE}
    )[("candidate", "dino")]
    assert verdict(comparison) == BETTER
    described = tables.describe_comparison(comparison, "kl_divergence", " bits")
    assert "closer to the oracle value −0.080 bits" in described


def test_every_compared_sample_metric_is_judged_by_its_floor():
    for metric in tables.TABLE_METRICS:
        info = METRICS[metric]
        assert (metric in tables.ORACLE_METRICS) == (info.goal == "oracle")
        if info.goal == "oracle" and info.from_samples:
            assert info.below_oracle and info.above_oracle
