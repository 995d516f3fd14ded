"""The four verdicts' statistics against literal references: published alpha-spending
boundaries, scipy's t-tests, a hand-written TOST, Holm, known power values, and a fast
version of benchmarks/verdict_calibration.py."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from lowdiff import decisions, stats


@pytest.mark.parametrize(
    ("fractions", "published"),
    [
        # Lan-DeMets O'Brien-Fleming-type, two-sided 0.05 (DeMets & Lan 1994; gsDesign sfLDOF)
        ((0.2, 0.4, 0.6, 0.8, 1.0), (4.877, 3.357, 2.680, 2.290, 2.031)),
        ((1 / 3, 2 / 3, 1.0), (3.710, 2.511, 1.993)),
        ((0.5, 1.0), (2.963, 1.969)),
    ],
)
def test_spending_boundaries_match_published_values(fractions, published):
    two_sided = decisions.spending_boundaries(fractions, 0.05, True)
    one_sided = decisions.spending_boundaries(fractions, 0.025, False)
    assert np.allclose(two_sided, published, atol=2e-3)
    assert np.allclose(one_sided, published, atol=2e-3)  # one-sided 0.025 = one side of it


def test_spending_spends_alpha_exactly_by_simulation():
    """The crossing probability of the boundaries, by Monte Carlo of Brownian motion."""
    fractions = (0.2, 0.5, 1.0)
    bounds = np.array(decisions.spending_boundaries(fractions, 0.05, True))
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(400_000, 3)) * np.sqrt(np.diff((0.0, *fractions)))
    z = np.cumsum(steps, axis=1) / np.sqrt(fractions)  # (N, 3)
    crossed = (np.abs(z) >= bounds).any(axis=1).mean()
    assert abs(crossed - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 400_000)


def test_fixed_design_is_plain_alpha():
    design = decisions.Design()
    assert decisions.nominal_level(design, 7, True) == 0.05
    assert design.looks(7) == (7,)


def test_design_looks_follow_rounds():
    design = decisions.Design(max_seeds=15, round_seeds=5)
    assert design.looks(5) == (5,)
    assert design.looks(12) == (5, 10, 12)
    assert design.looks(15) == (5, 10, 15)
    assert design.fractions(10) == (1 / 3, 2 / 3)


def test_tost_matches_two_scipy_one_sided_tests():
    differences = np.array([0.01, -0.02, 0.03, 0.0, 0.015])
    margin = 0.05
    lower = scipy.stats.ttest_1samp(differences, -margin, alternative="greater").pvalue
    upper = scipy.stats.ttest_1samp(differences, margin, alternative="less").pvalue
    assert decisions.tost_p_value(differences, margin) == pytest.approx(max(lower, upper))


def test_tost_by_hand_on_a_small_case():
    differences = np.array([0.1, 0.3, 0.2])  # mean 0.2, sd 0.1, se 0.1/sqrt(3)
    se = 0.1 / math.sqrt(3.0)
    by_hand = max(
        scipy.stats.t.sf((0.2 + 0.5) / se, 2),  # H0: mu <= -0.5
        scipy.stats.t.cdf((0.2 - 0.5) / se, 2),  # H0: mu >= +0.5
    )
    assert decisions.tost_p_value(differences, 0.5) == pytest.approx(by_hand)
    assert decisions.tost_p_value(differences, None) is None
    assert decisions.tost_p_value(differences[:1], 0.5) is None


def test_fixed_design_family_is_holm_on_scipy_t_tests():
    rng = np.random.default_rng(3)
    arrays = [rng.normal(shift, 1.0, 6) for shift in (0.0, 1.5, -2.0, 0.3)]
    decided = decisions.decide_family(arrays, [None] * 4, decisions.Design(), power=False)
    p_values = [scipy.stats.ttest_1samp(a, 0.0).pvalue for a in arrays]
    assert [d.significant for d in decided] == stats.holm_bonferroni(p_values)
    assert [d.p_value for d in decided] == pytest.approx(p_values)


def test_equivalence_declared_and_holm_corrected():
    tight = np.array([0.01, -0.01, 0.005, -0.004, 0.002, 0.0])
    decided = decisions.decide_family([tight], [0.05], decisions.Design(), power=False)
    assert decided[0].equivalent and not decided[0].significant
    loose = decisions.decide_family([tight], [0.001], decisions.Design(), power=False)
    assert not loose[0].equivalent


def test_sequential_decision_is_final_at_its_look():
    """Crossing at the first look decides; later seeds that pull the mean back do not undo it."""
    first = np.full(5, -1.0) + np.array([0.0, 0.001, -0.001, 0.002, -0.002])
    later = np.array([3.0, -2.0, 2.5, 1.0, 2.0])
    design = decisions.Design(max_seeds=10, round_seeds=5)
    decided = decisions.decide_family([np.concatenate([first, later])], [None], design)
    assert decided[0].significant and decided[0].decided_at == 5 and decided[0].direction == -1
    assert decided[0].power is None


@pytest.mark.parametrize(("n", "effect", "expected"), [(10, 1.0, 0.8031), (20, 0.5, 0.5645)])
def test_paired_power_matches_known_values(n, effect, expected):
    # published power of the two-sided one-sample t-test at alpha 0.05 (G*Power; R power.t.test)
    assert decisions.paired_power(effect, 1.0, n, 0.05) == pytest.approx(expected, abs=2e-3)


def test_power_statement_seeds_needed_and_uncertainty():
    rng = np.random.default_rng(1)
    differences = rng.normal(0.5, 1.0, 6)
    statement = decisions.power_statement(differences, 0.05, margin=None)
    sd, effect = differences.std(ddof=1), abs(differences.mean())
    needed = statement.seeds_for_effect
    assert decisions.paired_power(effect, sd, needed, 0.05) >= 0.8
    assert decisions.paired_power(effect, sd, needed - 1, 0.05) < 0.8
    low, high = statement.seeds_for_effect_range
    assert low <= needed and (high is None or high >= needed)
    assert statement.sd_low < sd < statement.sd_high
    mde = statement.minimum_detectable
    assert decisions.paired_power(mde, sd, 6, 0.05) == pytest.approx(0.8, abs=1e-6)


def test_default_margin_from_the_oracle_spread():
    assert decisions.default_margin(0.01) == pytest.approx(1.959964 * math.sqrt(2) * 0.01)
    assert decisions.default_margin(None) is None


def _calibration():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "verdict_calibration.py"
    spec = importlib.util.spec_from_file_location("verdict_calibration", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def test_fast_calibration_sequential_holds_alpha_and_naive_does_not_do_better():
    calibration = _calibration()
    experiments = 300
    sequential = calibration.simulate(0.0, True, experiments, seed=11)
    naive = calibration.simulate(0.0, False, experiments, seed=11)  # the same draws
    type_one = sequential.better + sequential.worse
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / experiments)
    assert type_one <= bound
    # naive tests at alpha at every look: it rejects whenever the sequential design does
    assert naive.better + naive.worse >= type_one
    at_margin = calibration.simulate(calibration.MARGIN, True, experiments, seed=12)
    assert at_margin.equivalent <= bound
