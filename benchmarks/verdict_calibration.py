"""Error rates of lowdiff's verdicts under optional stopping, by simulation.

Each simulated experiment compares one candidate run with the baseline on one dataset: the
paired per-seed differences are N(effect, 1) (effect in paired standard deviations), seeds
arrive in rounds of 5 up to 15, and after each round the verdict is read through the report's
own code path (`lowdiff.report.tables.compare_runs` -> `lowdiff.decisions`). Two procedures:

- sequential: the group-sequential design the report uses for `--until-decided`
  (O'Brien-Fleming-type alpha spending, Lan & DeMets 1983; TOST for equivalence), stopping at
  the first look that decides;
- naive: a fixed-sample test at alpha after every round, stopping at the first decision
  (what re-testing without a sequential design does).

Settings: null (effect 0: any better/worse is a type-I error; equivalent is correct), at the
margin (effect = margin = 0.5 sd: declaring equivalent is the equivalence error), and effects
of 0.5 and 1 sd (power: the share declared better). Printed with Monte-Carlo standard errors.

    python benchmarks/verdict_calibration.py [--experiments 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np

from lowdiff import decisions, stats
from lowdiff.report.tables import compare_runs

MARGIN = 0.5  # equivalence margin, in paired standard deviations
ROUND, MAX_SEEDS, ALPHA = 5, 15, 0.05
SETTINGS = {"null (effect 0)": 0.0, "effect 0.5 sd = margin": 0.5, "effect 1 sd": 1.0}


@dataclass(frozen=True)
class Rates:
    better: float
    worse: float
    equivalent: float
    mean_seeds: float


def verdict_at(differences: np.ndarray, design: decisions.Design) -> str:
    """The report's verdict on these paired differences (candidate - baseline, lower better)."""
    seeds = range(differences.size)
    values = {
        "candidate": {"d": {s: float(differences[s]) for s in seeds}},
        "baseline": {"d": dict.fromkeys(seeds, 0.0)},
    }
    found = compare_runs(
        values, "baseline", ["candidate"], lower_is_better=True, margins={"d": MARGIN},
        design=design, alpha=ALPHA, power=False,
    )  # fmt: skip
    return stats.verdict(found[("candidate", "d")])


def run_experiment(differences: np.ndarray, sequential: bool) -> tuple[str, int]:
    """Add rounds until a verdict other than undecided, or the budget; (verdict, seeds)."""
    design = decisions.Design(
        alpha=ALPHA, max_seeds=MAX_SEEDS if sequential else None, round_seeds=ROUND
    )
    for n in range(ROUND, MAX_SEEDS + 1, ROUND):
        verdict = verdict_at(differences[:n], design)
        if verdict != stats.NO_DIFFERENCE:
            return verdict, n
    return verdict, MAX_SEEDS


def simulate(effect: float, sequential: bool, experiments: int, seed: int) -> Rates:
    """Negative differences are improvements, so an effect e > 0 is simulated as -e."""
    rng = np.random.default_rng(seed)
    counts = {stats.BETTER: 0, stats.WORSE: 0, stats.EQUIVALENT: 0}
    seeds_used = 0
    for _ in range(experiments):
        verdict, n = run_experiment(rng.normal(-effect, 1.0, MAX_SEEDS), sequential)
        counts[verdict] = counts.get(verdict, 0) + 1
        seeds_used += n
    share = {key: value / experiments for key, value in counts.items()}
    return Rates(
        share[stats.BETTER], share[stats.WORSE], share[stats.EQUIVALENT], seeds_used / experiments
    )


def standard_error(rate: float, experiments: int) -> float:
    return math.sqrt(max(rate * (1.0 - rate), 1e-12) / experiments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.experiments
    print(
        f"{n} simulated experiments per setting; rounds of {ROUND} seeds up to {MAX_SEEDS}; "
        f"alpha {ALPHA}; margin {MARGIN} paired sd; MC standard error in brackets"
    )
    header = f"{'setting':<24} {'procedure':<11} {'better':>15} {'worse':>15} {'equivalent':>15}"
    print(header + f" {'mean seeds':>10}")
    for index, (name, effect) in enumerate(SETTINGS.items()):
        for sequential in (True, False):
            rates = simulate(effect, sequential, n, args.seed + index)
            cells = [
                f"{rate:.3f} ({standard_error(rate, n):.3f})"
                for rate in (rates.better, rates.worse, rates.equivalent)
            ]
            procedure = "sequential" if sequential else "naive"
            print(f"{name:<24} {procedure:<11} " + " ".join(f"{c:>15}" for c in cells)
                  + f" {rates.mean_seeds:>10.1f}")  # fmt: skip
    print(
        "type-I error = better + worse under the null; equivalence error = equivalent at the "
        "margin; power = better under an effect."
    )


if __name__ == "__main__":
    main()
