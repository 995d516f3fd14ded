"""The report's answer-first parts against literal references: the headline (gap closed,
stratified bootstrap, probability of improvement), the variance split of sampling repeats,
the forest plot, and repeat 0 of eval.sample_repeats being the cell's own sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_results import TINY_EXPERIMENT, TINY_SECOND_RUN

from lowdiff import headline, plots, stats
from lowdiff.cli import main


def test_gap_closed_and_probability_of_improvement_by_hand():
    candidate, baseline, floor = np.array([1.1, 1.3, 0.9]), np.array([1.5, 1.2, 1.4]), 1.0
    # distances: candidate 0.1, 0.3, 0.1 (mean 1/6 ~ 0.1667); baseline 0.5, 0.2, 0.4 (mean 0.3667)
    assert headline.gap_closed(candidate, baseline, floor) == pytest.approx(1 - 0.5 / 1.1)
    assert headline.probability_of_improvement(candidate, baseline, floor) == pytest.approx(2 / 3)
    tie = headline.probability_of_improvement(np.array([1.2]), np.array([0.8]), floor)
    assert tie == 0.5


def test_stratified_bootstrap_matches_a_literal_loop():
    rng = np.random.default_rng(0)
    pairs = {
        "a": (rng.normal(1.0, 0.1, 4), rng.normal(1.2, 0.1, 4)),
        "b": (rng.normal(0.5, 0.05, 6), rng.normal(0.55, 0.05, 6)),
    }
    floors = {"a": 0.9, "b": 0.4}
    found = headline.headline(pairs, floors, resamples=500)
    assert found.aggregate_gap_closed == pytest.approx(
        np.mean([headline.gap_closed(c, b, floors[d]) for d, (c, b) in pairs.items()])
    )
    # the literal stratified bootstrap: the same generator, the same draw order
    literal_rng = np.random.default_rng(0)
    draws = {d: literal_rng.integers(0, c.size, size=(500, c.size)) for d, (c, b) in pairs.items()}
    aggregates = [
        np.mean(
            [
                headline.gap_closed(c[draws[d][r]], b[draws[d][r]], floors[d])
                for d, (c, b) in pairs.items()
            ]
        )
        for r in range(500)
    ]
    assert found.aggregate_ci == pytest.approx(tuple(np.percentile(aggregates, [2.5, 97.5])))
    assert headline.headline({"a": pairs["a"]}, {"a": None}) is None


def test_variance_split_by_hand():
    table = np.array([[1.0, 1.2, 1.1], [2.0, 2.4, 2.2]])  # 2 seeds x 3 repeats
    within = np.mean([np.var(row, ddof=1) for row in table])  # 0.01 and 0.04 -> 0.025
    between = np.var(table.mean(axis=1), ddof=1) - within / 3
    split = stats.variance_split(table)
    assert split.within_model == pytest.approx(within)
    assert split.between_seeds == pytest.approx(between)
    flat = stats.variance_split(np.array([[1.0, 2.0], [2.0, 1.0]]))
    assert flat.between_seeds == 0.0  # floored at 0
    with pytest.raises(ValueError, match="seeds >= 2, repeats >= 2"):
        stats.variance_split(np.ones((1, 3)))


def test_forest_plot_draws_one_row_per_comparison():
    rows = [
        plots.EffectRow("a on x", -0.1, -0.2, 0.0, 0.05, "better", "better"),
        plots.EffectRow("b on x", 0.01, -0.3, 0.3, None, "undecided", "undecided (~40 seeds)"),
    ]
    figure = plots.forest_plot(rows, xlabel="Δ", title="t")
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["b on x", "a on x"]
    with pytest.raises(ValueError, match="no comparison rows"):
        plots.forest_plot([], xlabel="Δ", title="t")


TINY = TINY_EXPERIMENT + TINY_SECOND_RUN


def test_sample_repeats_keep_repeat_zero_and_report_the_split(tmp_path):
    (tmp_path / "rep.toml").write_text(TINY)
    common = [str(tmp_path / "rep.toml"), "--quiet", "--threads", "1"]
    common += ["--set", 'experiment.datasets=["moons"]']
    assert main(["run", *common, "--out", str(tmp_path / "one")]) == 0
    repeated = ["--out", str(tmp_path / "three"), "--set", "eval.sample_repeats=3"]
    assert main(["run", *common, *repeated]) == 0
    single = tmp_path / "one" / "wide" / "moons" / "seed_1"
    triple = tmp_path / "three" / "wide" / "moons" / "seed_1"
    assert np.array_equal(np.load(single / "samples.npy"), np.load(triple / "samples.npy"))
    assert not (single / "repeats.npz").exists()
    metrics = json.loads((triple / "cell.json").read_text())["metrics"]
    with np.load(triple / "repeats.npz") as repeats:
        kl = repeats["kl_divergence"]
    assert kl.shape == (3,) and kl[0] == metrics["kl_divergence"] and np.ptp(kl) > 0.0
    markdown = (tmp_path / "three" / "report.md").read_text()
    assert markdown.index("## Verdicts") < markdown.index("## Summary")
    assert "Measurement noise apart from training noise" in markdown
    assert (tmp_path / "three" / "figures" / "effects.png").is_file()
    info = json.loads((tmp_path / "three" / "wide" / "final_info.json").read_text())
    versus = info["moons"]["versus_baseline"]
    assert "aggregate" in versus and versus["verdict"] in (
        stats.BETTER,
        stats.WORSE,
        stats.EQUIVALENT,
        stats.NO_DIFFERENCE,
    )
