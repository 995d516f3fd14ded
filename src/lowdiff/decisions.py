"""Four verdicts (better / worse / equivalent / undecided), margins, power and seeds needed,
and the group-sequential design that keeps them valid when seeds are added until decided.

Pure numpy/scipy, no I/O. Based on:

- Equivalence by two one-sided tests, TOST (Schuirmann 1987): the paired mean difference mu
  lies within (-margin, +margin) when both H0: mu <= -margin and H0: mu >= +margin are
  rejected by one-sided t-tests at level alpha; its p is the larger of the two.
- Alpha spending (Lan & DeMets 1983) with the O'Brien-Fleming-type function
  alpha(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t)) of a one-sided level alpha, t = seeds so far /
  maximum seeds: the error spent up to each look is alpha(t), whatever the number and timing
  of the looks. A two-sided test is symmetric and spends alpha / 2 per side (the convention of
  the published tables: K = 5 equal looks at two-sided 0.05 give 4.877, 3.357, 2.680, 2.290,
  2.031).
  The boundaries c_k of the standardised statistic solve
  P(no crossing at looks 1..k-1, crossing at look k) = alpha(t_k) - alpha(t_{k-1}) under the
  canonical joint distribution (independent increments, Jennison & Turnbull 2000, ch. 3),
  computed by the numerical integration of Armitage, McPherson & Rowe (1969) on a grid.
- t-tests at those boundaries through their nominal levels: at look k a test rejects when its
  exact t-test p-value is at most the nominal level of c_k (2 (1 - Phi(c_k)) two-sided,
  1 - Phi(c_k) one-sided) -- the usual treatment of an estimated variance in group-sequential
  tests (Jennison & Turnbull 2000, ch. 3.8); benchmarks/verdict_calibration.py measures the
  error rates this gives.
- Holm across a family with group-sequential boundaries (Maurer & Bretz 2013): the j-th
  smallest p is compared with the nominal level of a design spending alpha / (m - j + 1).

Power (`power_statement`) uses the noncentral t distribution of a fixed-sample paired t-test
at Holm's strictest level alpha / m (m tested comparisons of the family: a conservative count);
TOST power uses the usual approximation P(T1 > t) + P(T2 > t) - 1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.optimize
import scipy.stats

__all__ = [
    "BETTER",
    "EQUIVALENT",
    "UNDECIDED",
    "WORSE",
    "Design",
    "PowerStatement",
    "Decision",
    "decide_family",
    "default_margin",
    "holm_sequential",
    "nominal_level",
    "power_statement",
    "spending_boundaries",
    "tost_p_value",
]

BETTER = "better"
WORSE = "worse"
EQUIVALENT = "equivalent"
UNDECIDED = "undecided"
TARGET_POWER = 0.8
MAX_SEEDS_STATED = 1000  # beyond this "seeds needed" is said as "more than 1000"
# A difference within the 95 % range of two measurements of one and the same distribution
# cannot be told from measuring twice: margin = z_{0.975} * sqrt(2) * (oracle estimator's sd).
MARGIN_FACTOR = float(scipy.stats.norm.ppf(0.975) * math.sqrt(2.0))
_GRID_POINTS = 801  # per look; boundaries are then accurate to ~1e-4


@dataclass(frozen=True, kw_only=True)
class Design:
    """When seeds are looked at. ``max_seeds`` None: a fixed-sample test at whatever n.

    Otherwise looks are at ``round_seeds``, 2 ``round_seeds``, ... up to ``max_seeds`` (and at
    the current n if it falls between); the information fraction of a look is n / max_seeds.
    """

    alpha: float = 0.05
    max_seeds: int | None = None
    round_seeds: int = 5

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must lie strictly between 0 and 1, got {self.alpha}")
        if self.round_seeds < 2:
            raise ValueError(f"round_seeds must be >= 2, got {self.round_seeds}")
        if self.max_seeds is not None and self.max_seeds < self.round_seeds:
            raise ValueError(
                f"max_seeds ({self.max_seeds}) must be >= round_seeds ({self.round_seeds})"
            )

    @property
    def sequential(self) -> bool:
        return self.max_seeds is not None

    def looks(self, n: int) -> tuple[int, ...]:
        """The seed counts looked at up to and including n (the current look)."""
        if self.max_seeds is None:
            return (n,)
        scheduled = list(range(self.round_seeds, self.max_seeds, self.round_seeds))
        scheduled.append(self.max_seeds)
        return tuple([look for look in scheduled if look < n] + [n])

    def fractions(self, n: int) -> tuple[float, ...]:
        if self.max_seeds is None:
            return (1.0,)
        return tuple(min(1.0, look / self.max_seeds) for look in self.looks(n))


# --- alpha spending boundaries --------------------------------------------------------------


def obrien_fleming_spent(fraction: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending of a one-sided level alpha:
    2 - 2 Phi(z_{1-alpha/2} / sqrt(t))."""
    if fraction <= 0.0:
        return 0.0
    z = scipy.stats.norm.ppf(1.0 - alpha / 2.0)
    return float(2.0 - 2.0 * scipy.stats.norm.cdf(z / math.sqrt(min(fraction, 1.0))))


def _spent(fraction: float, alpha: float, two_sided: bool) -> float:
    """Error spent by ``fraction``: two-sided designs are symmetric, alpha / 2 per side."""
    if two_sided:
        return 2.0 * obrien_fleming_spent(fraction, alpha / 2.0)
    return obrien_fleming_spent(fraction, alpha)


def _crossing(grid: np.ndarray, density: np.ndarray, step: float, c: float, two_sided: bool):
    """P(cross at this look) from the sub-density on the previous look's continuation grid."""
    scale = math.sqrt(step)
    upper = scipy.stats.norm.sf((c - grid) / scale)
    lower = scipy.stats.norm.cdf((-c - grid) / scale) if two_sided else 0.0
    return float(np.trapezoid(density * (upper + lower), grid))


@functools.lru_cache(maxsize=256)
def spending_boundaries(
    fractions: tuple[float, ...], alpha: float, two_sided: bool = True
) -> tuple[float, ...]:
    """Boundaries of the score S_k = Z_k sqrt(t_k) written as Z-values c_k, one per look.

    Two-sided: reject at look k when |Z_k| >= c_k; one-sided: when Z_k >= c_k. The probability
    under H0 of a first crossing at look k is alpha(t_k) - alpha(t_{k-1}) (Lan & DeMets 1983);
    the sub-density of the continuing paths is carried from look to look on a grid
    (Armitage, McPherson & Rowe 1969).
    """
    boundaries: list[float] = []
    grid, density = np.zeros(1), np.ones(1)  # a point mass at S_0 = 0
    previous_t, spent = 0.0, 0.0
    for t in fractions:
        step = t - previous_t
        target = _spent(t, alpha, two_sided) - spent
        if step <= 0.0 or target <= 0.0:  # a repeated look spends nothing more
            boundaries.append(math.inf)
            continue
        if grid.size == 1:  # first look: closed form
            tail = target / 2.0 if two_sided else target
            z = float(scipy.stats.norm.isf(tail))
        else:
            z = scipy.optimize.brentq(
                _excess_crossing, 0.0, 40.0, args=(grid, density, step, t, two_sided, target)
            )
        boundaries.append(z)
        grid, density = _continue(grid, density, step, z * math.sqrt(t), two_sided)
        previous_t, spent = t, spent + target
    return tuple(boundaries)


def _excess_crossing(z, grid, density, step, t, two_sided, target) -> float:
    """Crossing probability at Z-boundary z minus the error to spend (a root in z)."""
    return _crossing(grid, density, step, z * math.sqrt(t), two_sided) - target


def _continue(grid: np.ndarray, density: np.ndarray, step: float, c: float, two_sided: bool):
    """The sub-density of S at this look on (-c, c) (or (-inf, c)), paths not yet stopped."""
    scale = math.sqrt(step)
    low = -c if two_sided else min(float(grid.min()), 0.0) - 8.0 * scale
    new_grid = np.linspace(low, c, _GRID_POINTS)
    if grid.size == 1:
        new_density = scipy.stats.norm.pdf((new_grid - grid[0]) / scale) / scale
    else:
        kernel = scipy.stats.norm.pdf((new_grid[:, None] - grid[None, :]) / scale) / scale
        new_density = np.trapezoid(kernel * density[None, :], grid, axis=1)
    return new_grid, new_density


def nominal_level(design: Design, n: int, two_sided: bool, alpha: float | None = None) -> float:
    """The p-value a t-test must reach at the current look of n seeds (the last of
    ``design.looks(n)``); a fixed-sample design gives alpha itself."""
    level = design.alpha if alpha is None else alpha
    if not design.sequential:
        return level
    c = spending_boundaries(design.fractions(n), level, two_sided)[-1]
    if math.isinf(c):
        return 0.0
    return float(2.0 * scipy.stats.norm.sf(c) if two_sided else scipy.stats.norm.sf(c))


def _per_hypothesis(design: Design | Sequence[Design], count: int) -> list[Design]:
    return [design] * count if isinstance(design, Design) else list(design)


def holm_sequential(
    p_values: Sequence[float | None],
    seeds: Sequence[int],
    design: Design | Sequence[Design],
    two_sided: bool,
) -> list[bool]:
    """Holm's step-down at the current look of each hypothesis (Maurer & Bretz 2013).

    The j-th smallest p is compared with the nominal level of its design (one for all, or one
    per hypothesis) spending alpha / (m - j + 1) at that hypothesis' own look (``seeds``: its
    paired seeds); None is untested and does not count. With fixed-sample designs this is
    exactly Holm (1979).
    """
    designs = _per_hypothesis(design, len(p_values))
    tested = [i for i, p in enumerate(p_values) if p is not None]
    order = sorted(tested, key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    m = len(order)
    for j, index in enumerate(order):
        level = designs[index].alpha / (m - j)
        if p_values[index] > nominal_level(designs[index], seeds[index], two_sided, level):
            break
        rejected[index] = True
    return rejected


# --- equivalence --------------------------------------------------------------------------


def tost_p_value(differences: np.ndarray, margin: float | None) -> float | None:
    """TOST p of |mean difference| < margin: the larger of the two one-sided t-test p's
    (Schuirmann 1987). None with fewer than 2 values, zero spread, or no positive margin."""
    if differences.size < 2 or margin is None or not margin > 0.0:
        return None
    sd = float(differences.std(ddof=1))
    if sd == 0.0:
        return None
    se = sd / math.sqrt(differences.size)
    mean, df = float(differences.mean()), differences.size - 1
    p_above_lower = scipy.stats.t.sf((mean + margin) / se, df)  # H0: mu <= -margin
    p_below_upper = scipy.stats.t.cdf((mean - margin) / se, df)  # H0: mu >= +margin
    return float(max(p_above_lower, p_below_upper))


def default_margin(oracle_sd: float | None) -> float | None:
    """The default equivalence margin of a metric on a dataset: z_{0.975} sqrt(2) times the
    standard deviation of its oracle estimator (fresh true draws, oracle.json)."""
    if oracle_sd is None or not math.isfinite(oracle_sd):
        return None
    return MARGIN_FACTOR * float(oracle_sd)


# --- power --------------------------------------------------------------------------------


def paired_power(effect: float, sd: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test at level alpha (noncentral t)."""
    if n < 2 or sd <= 0.0:
        return 0.0
    df = n - 1
    critical = scipy.stats.t.isf(alpha / 2.0, df)
    noncentrality = abs(effect) * math.sqrt(n) / sd
    power = scipy.stats.nct.sf(critical, df, noncentrality)
    power += scipy.stats.nct.cdf(-critical, df, noncentrality)
    return 1.0 if math.isnan(power) else float(min(power, 1.0))  # nan: far in the tail


def tost_power(effect: float, sd: float, n: int, margin: float, alpha: float) -> float:
    """Approximate TOST power, P(T1 > t) + P(T2 > t) - 1, clipped at 0."""
    if n < 2 or sd <= 0.0 or margin <= abs(effect):
        return 0.0
    df, scale = n - 1, math.sqrt(n) / sd
    critical = scipy.stats.t.isf(alpha, df)
    both = scipy.stats.nct.sf(critical, df, (margin - abs(effect)) * scale)
    both += scipy.stats.nct.sf(critical, df, (margin + abs(effect)) * scale)
    return float(max(0.0, both - 1.0))


def minimum_detectable_effect(sd: float, n: int, alpha: float) -> float | None:
    """The smallest |effect| the paired t-test detects with 80 % power at n seeds (None: not
    within 10,000 paired sd, e.g. 2 seeds at a strict level)."""
    if n < 2 or sd <= 0.0:
        return None
    upper = 1e4 * sd
    if paired_power(upper, sd, n, alpha) < TARGET_POWER:
        return None
    return float(
        scipy.optimize.brentq(
            lambda e: paired_power(e, sd, n, alpha) - TARGET_POWER, 1e-12 * sd, upper
        )
    )


def seeds_needed(power_at, start: int = 2) -> int | None:
    """The smallest n >= start with power_at(n) >= 80 %, or None beyond MAX_SEEDS_STATED."""
    if power_at(MAX_SEEDS_STATED) < TARGET_POWER:
        return None
    low, high = start, MAX_SEEDS_STATED  # power grows with n: bisect
    while low < high:
        middle = (low + high) // 2
        if power_at(middle) >= TARGET_POWER:
            high = middle
        else:
            low = middle + 1
    return low


@dataclass(frozen=True, kw_only=True)
class PowerStatement:
    """What the seeds so far can detect, and what deciding would take (80 % power)."""

    n: int
    alpha: float  # the level the power is computed at (alpha / family size)
    sd: float  # paired standard deviation of the tested differences
    sd_low: float  # 95 % chi-square interval of that sd
    sd_high: float
    minimum_detectable: float | None
    seeds_for_effect: int | None  # to show the observed mean difference; None: > 1000
    seeds_for_effect_range: tuple[int | None, int | None]  # at sd_low, sd_high
    seeds_for_equivalence: int | None  # to show |difference| < margin; None: not reachable
    kind: Literal["difference", "equivalence"]  # which of the two the observed effect favours


def power_statement(
    differences: np.ndarray, alpha: float, margin: float | None
) -> PowerStatement | None:
    """The power statement of an undecided comparison; None with < 2 seeds or zero spread.

    The sd is itself estimated from n seeds: its 95 % interval is
    sd sqrt((n-1) / chi2_{0.975}) .. sd sqrt((n-1) / chi2_{0.025}), and the seeds needed are
    recomputed at both ends (seeds scale with sd^2)."""
    n = differences.size
    if n < 2:
        return None
    sd = float(differences.std(ddof=1))
    if sd == 0.0:
        return None
    effect = float(differences.mean())
    chi_high, chi_low = scipy.stats.chi2.ppf([0.975, 0.025], n - 1)
    sd_low, sd_high = sd * math.sqrt((n - 1) / chi_high), sd * math.sqrt((n - 1) / chi_low)

    def for_effect(s: float) -> int | None:
        return seeds_needed(lambda k: paired_power(effect, s, k, alpha))

    equivalence = None
    if margin is not None and margin > abs(effect):
        equivalence = seeds_needed(lambda k: tost_power(effect, sd, k, margin, alpha))
    favours = "equivalence" if margin is not None and abs(effect) < margin else "difference"
    return PowerStatement(
        n=n,
        alpha=alpha,
        sd=sd,
        sd_low=sd_low,
        sd_high=sd_high,
        minimum_detectable=minimum_detectable_effect(sd, n, alpha),
        seeds_for_effect=for_effect(sd),
        seeds_for_effect_range=(for_effect(sd_low), for_effect(sd_high)),
        seeds_for_equivalence=equivalence,
        kind=favours,
    )


# --- a family of comparisons, look by look ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Decision:
    """One comparison's outcome; ``direction`` is the sign of the tested mean difference at
    the deciding look (-1, 0, +1), ``decided_at`` the seeds of that look (None: undecided)."""

    significant: bool
    equivalent: bool
    direction: int
    decided_at: int | None
    p_value: float | None  # two-sided t-test at the deciding (else the current) look
    equivalence_p: float | None  # TOST p at that look
    nominal_alpha: float  # the two-sided level at the current look (alpha: fixed sample)
    power: PowerStatement | None  # for an undecided comparison


def _t_p_value(differences: np.ndarray) -> float | None:
    """Two-sided one-sample t-test of mean 0: t = mean / (sd / sqrt(n)), n - 1 df."""
    if differences.size < 2:
        return None
    sd = float(differences.std(ddof=1))
    if sd == 0.0:
        return None
    t = float(differences.mean()) / (sd / math.sqrt(differences.size))
    return float(2.0 * scipy.stats.t.sf(abs(t), differences.size - 1))


def decide_family(
    differences: Sequence[np.ndarray],
    margins: Sequence[float | None],
    design: Design | Sequence[Design],
    *,
    power: bool = True,
) -> list[Decision]:
    """Decide every comparison of a family, look by look (``design.looks``), on the first
    n_k of its paired differences (in seed order): at each look the two-sided t-tests and the
    TOST p's each go through ``holm_sequential``; the first look at which a comparison is
    significant or equivalent decides it for good (a later look cannot undo it -- that is
    what keeps the error rates under optional stopping). Differences are tested - reference;
    a fixed-sample design has one look, and then this is Holm's t-test and Holm's TOST.
    ``design`` is one for all or one per comparison (sequential for those that rounds of
    seeds could extend, fixed-sample for the others).
    ``power=False`` skips the power statements (simulations; the decisions are the same)."""
    arrays = [np.asarray(d, dtype=np.float64) for d in differences]
    designs = _per_hypothesis(design, len(arrays))
    schedules = [d.looks(a.size) for d, a in zip(designs, arrays, strict=True)]
    state: list[dict] = [{"decided_at": None} for _ in arrays]
    for k in range(max(len(s) for s in schedules) if schedules else 0):
        looks = [s[min(k, len(s) - 1)] for s in schedules]
        heads = [d[:look] for d, look in zip(arrays, looks, strict=True)]
        p_values = [_t_p_value(head) for head in heads]
        tost = [tost_p_value(h, m) for h, m in zip(heads, margins, strict=True)]
        rejected = holm_sequential(p_values, looks, designs, two_sided=True)
        equivalent = holm_sequential(tost, looks, designs, two_sided=False)
        for i, head in enumerate(heads):
            if state[i]["decided_at"] is not None:
                continue
            state[i] = {
                "decided_at": looks[i] if rejected[i] or equivalent[i] else None,
                "significant": rejected[i],
                "equivalent": equivalent[i] and not rejected[i],
                "direction": int(np.sign(head.mean())) if head.size else 0,
                "p_value": p_values[i],
                "equivalence_p": tost[i],
            }
    # power at Holm's strictest level alpha / m (m tested comparisons): a conservative count
    tested = max(1, sum(s.get("p_value") is not None for s in state))
    return [
        _decision(a, m, s, d, d.alpha / tested if power else None)
        for a, m, s, d in zip(arrays, margins, state, designs, strict=True)
    ]


def _decision(
    differences: np.ndarray,
    margin: float | None,
    state: dict,
    design: Design,
    power_level: float | None,
) -> Decision:
    undecided = power_level is not None and state["decided_at"] is None
    return Decision(
        significant=bool(state.get("significant", False)),
        equivalent=bool(state.get("equivalent", False)),
        direction=int(state.get("direction", 0)),
        decided_at=state["decided_at"],
        p_value=state.get("p_value"),
        equivalence_p=state.get("equivalence_p"),
        nominal_alpha=nominal_level(design, max(differences.size, 1), two_sided=True),
        power=power_statement(differences, power_level, margin) if undecided else None,
    )
