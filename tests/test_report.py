"""Tests of lowdiff.report, on results directories written directly (no training).

The main fixture is the dual-scale series (6 runs, runs 2-4 identical, 4 datasets, 3 seeds) with
one diverged cell; smaller directories check claims, options and the comparison of directories.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fake_results import default_metrics, write_fake_results

from lowdiff import report, results, stats
from lowdiff.report import analysis, claims, options, tables, text
from lowdiff.report.compare import write_comparison
from lowdiff.report.load import load_results
from lowdiff.report.text import STAR

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HTML_LIMIT = 1_500_000  # bytes, the whole self-contained page (full-colour PNGs at 150 dpi)


def _series(name: str, **experiment) -> dict:
    """A shipped series' runs, on 3 seeds (whatever the file says) and fewer points."""
    raw = tomllib.loads((ROOT / "experiments" / f"{name}.toml").read_text())
    raw["experiment"] |= {"num_points": 3000, "seeds": [0, 1, 2], **experiment}
    return raw


@pytest.fixture(scope="module")
def series_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("a") / "dual_scale"
    write_fake_results(root, _series("dual_scale"), diverged={("deep_weights", "moons", 1): 120})
    report.write_report(root)
    return root


def _sections(markdown: str) -> list[str]:
    return re.findall(r"^## (.+)$", markdown, flags=re.M)


# --- the report's shape --------------------------------------------------------------------------


def test_summary_table_is_first_and_identical_runs_are_collapsed(series_a):
    markdown = (series_a / "report.md").read_text()
    sections = _sections(markdown)
    assert sections[:2] == ["Verdicts", "Summary"]  # the answer first: effects.png
    group = "learned = weight_analysis = weight_visualisation"
    assert f"Runs 2, 3, 4: {group}" in sections
    assert not any(s.startswith(("Run 3:", "Run 4:")) for s in sections)
    summary = markdown.split("## Summary")[1].split("\n## ")[0]
    rows = [line.split(" | ")[0] for line in summary.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| baseline", "| fixed", f"| {group}", "| deep_weights", "| oracle floor"]
    assert "KL in bits" in summary


def test_diverged_cell_says_where_it_stopped(series_a):
    markdown = (series_a / "report.md").read_text()
    summary = markdown.split("## Summary")[1].split("\n## ")[0]
    assert "diverged at step 120 (seed 1)" in summary
    deep = markdown.split("## Run 5: deep_weights")[1].split("\n## ")[0]
    # a wide table is split into parts that repeat the dataset column: read the row across
    moons = " ".join(line for line in deep.splitlines() if line.startswith("| moons |"))
    assert "diverged at step 120 (seed 1)" in moons and "(n = 2 of 3)" in moons
    assert "- deep_weights: moons / seed 1 (diverged at step 120)" in markdown  # missing cells


def test_bounded_intervals_are_clipped_and_times_are_measured(series_a):
    markdown = (series_a / "report.md").read_text()
    baseline = markdown.split("## Run 0: baseline")[1].split("\n## ")[0]
    circle = next(line for line in baseline.splitlines() if line.startswith("| circle |"))
    cells = circle.split(" | ")
    hq = cells[4]  # HQ fraction: mean 0.97 ± a wide 3-seed interval, clipped at 1
    low, high = map(float, re.search(r"\[([\d.]+), ([\d.]+)\]", hq).groups())
    assert high == 1.0 and low < 1.0
    assert "train 24.0 s / batch of 12" in circle and "±" not in cells[-1]


def test_every_figure_is_drawn_small_and_inlined(series_a):
    markdown = (series_a / "report.md").read_text()
    page = (series_a / "report.html").read_text()
    names = re.findall(r"\]\(figures/([^)]+)\)", markdown)
    expected = {"train_loss.png", "generated_images.png", "kl_divergence_comparison.png"}
    expected |= {"modes_captured.png", "weight_evolution.png", "reverse_process_dino.png"}
    assert expected <= set(names)
    assert not any(name.startswith(("dino_gating", "expert_")) for name in names)  # no gate
    for name in names:
        assert (series_a / "figures" / name).read_bytes()[:8] == PNG_SIGNATURE
    assert page.count('src="data:image/png;base64,') == len(names)
    assert len(page.encode()) < HTML_LIMIT, len(page.encode())
    assert [p.name for p in series_a.iterdir() if p.name.startswith(".")] == []


def test_markdown_and_html_tell_the_same_story(series_a):
    markdown = (series_a / "report.md").read_text()
    page = (series_a / "report.html").read_text()
    headings = re.findall(r"<h2 id=\"[^\"]*\">(.+?)</h2>", page)
    assert [h.replace("&#x27;", "'") for h in headings] == _sections(markdown)


def test_rebuilding_gives_the_same_bytes(series_a):
    before = {p: p.read_bytes() for p in [series_a / "report.md", series_a / "report.html"]}
    report.write_report(series_a)
    assert all(path.read_bytes() == content for path, content in before.items())


def test_weight_names_come_from_the_architecture(series_a):
    markdown = (series_a / "report.md").read_text()
    assert "### Branch weights (w_global, w_local)" in markdown
    assert "w_global goes from 0.70" in markdown


# --- options, gates, the reverse process ----------------------------------------------------------


TINY = {
    "experiment": {"name": "tiny", "datasets": ["moons", "line"], "seeds": [0, 1, 2],
                   "num_points": 2000},
    "runs": {
        "baseline": {"model": {"arch": "mlp"}},
        "expert": {"model": {"arch": "dual_expert"}},
    },
}  # fmt: skip


def test_gate_figures_follow_the_figure_dataset_option(tmp_path):
    root = tmp_path / "tiny"
    write_fake_results(root, TINY)
    assert options.default_figure_datasets(["line", "moons"]) == ("moons",)  # multi-modal first
    assert options.default_figure_datasets(["line", "dino"]) == ("dino",)
    report.write_report(root)
    names = set(re.findall(r"figures/([^)]+)\)", (root / "report.md").read_text()))
    assert {"moons_generated_samples.png", "moons_gating_weights_histogram.png"} <= names
    assert "expert_specialisation.png" in names and "weight_evolution.png" not in names
    report.write_report(root, report.ReportOptions(datasets=("line",), animate=True))
    markdown = (root / "report.md").read_text()
    assert "line_generated_samples.png" in markdown and "moons_generated" not in markdown
    gifs = sorted((root / "figures").glob("*.gif"))
    assert [g.name for g in gifs] == [
        "reverse_process_baseline_line.gif",
        "reverse_process_expert_line.gif",
    ]
    assert gifs[0].read_bytes()[:6] == b"GIF89a"
    assert (root / "report.html").read_text().count("data:image/gif;base64,") == 2
    with pytest.raises(ValueError, match="not datasets of this experiment"):
        report.write_report(root, report.ReportOptions(datasets=("dino",)))


def test_one_seed_is_said_once_not_in_every_cell(tmp_path):
    root = tmp_path / "tiny"
    write_fake_results(root, {**TINY, "experiment": {**TINY["experiment"], "seeds": [0]}})
    markdown = report.write_report(root).read_text()
    assert markdown.count("Every cell has a single seed") == 1
    assert "1 seed" not in markdown.replace("a single seed", "") and "untested" not in markdown


def test_a_cell_without_process_is_skipped_quietly_and_missing_runs_are_one_line(tmp_path):
    root = tmp_path / "tiny"
    write_fake_results(root, TINY, process=False)
    shutil.rmtree(root / "expert")
    markdown = report.write_report(root).read_text()
    assert "reverse_process" not in markdown
    assert re.search(r"^- expert: all 6 cells \(not finished", markdown, flags=re.M)
    assert "| expert | missing | missing |" in markdown  # the summary row


# --- claims --------------------------------------------------------------------------------------

CLAIMED = {
    "experiment": {"name": "claimed", "datasets": ["moons"], "seeds": [0, 1, 2],
                   "num_points": 2000},
    "runs": {
        "baseline": {"model": {"arch": "mlp"}},
        "good": {"model": {"arch": "mlp", "hidden_dim": 64}},
        "same": {"model": {"arch": "mlp", "hidden_dim": 32}},
        "bad": {"model": {"arch": "mlp", "hidden_layers": 1}},
    },
}  # fmt: skip
SHIFT = {"baseline": 0.0, "good": -0.3, "same": 0.0, "bad": +0.3}
WOBBLE = {"baseline": [0, 0, 0], "good": [0.01, -0.01, 0.004], "same": [0.02, -0.03, 0.015],
          "bad": [0.01, -0.005, 0.0]}  # fmt: skip
CLAIMS_TOML = """
[[claim]]
id = "C1"
text = "good improves moons"
candidates = ["good"]
comparison = ["baseline"]
reported = { moons = 0.8 }

[[claim]]
id = "C2"
text = "same improves moons"
candidates = ["same"]
comparison = "baseline"

[[claim]]
id = "C3"
text = "bad improves moons"
candidates = ["bad"]
comparison = "baseline"
reported = { moons = 2.0 }
"""


def _claimed_metrics(run: str, dataset: str, seed: int) -> dict[str, float]:
    kl = 1.0 + 0.1 * seed + SHIFT[run] + WOBBLE[run][seed]  # the oracle floor is 0.05
    return {**default_metrics(run, dataset, seed), "kl_divergence": kl}


def test_claims_verdicts_of_a_constructed_case(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "claimed.claims.toml").write_text(CLAIMS_TOML)
    root = tmp_path / "results" / "claimed"  # the claims file is found by walking up
    write_fake_results(root, CLAIMED, metrics=_claimed_metrics)
    markdown = report.write_report(root).read_text()
    section = markdown.split("## Claims")[1].split("\n## ")[0]
    rows = {r.split(" | ")[1]: r for r in section.splitlines() if r.startswith("| moons |")}
    assert rows["good vs baseline"].endswith(f"better: {claims.CONFIRMED} |")
    # a long verdict is set below its row, in a table of its own (wide tables are split)
    assert "same vs baseline" in rows
    c2 = section.split("### C2")[1].split("### C3")[0]
    assert f"| moons | better: {claims.UNDECIDED} (" in c2
    assert rows["bad vs baseline"].endswith(f"better: {claims.CONTRADICTED} |")
    assert "inside [" in rows["good vs baseline"] and "outside [" in rows["bad vs baseline"]
    assert "Holm-corrected over the 3 tested comparisons" in section
    assert _sections(markdown).index("Claims") < _sections(markdown).index("Run 0: baseline")


def test_kl_claims_are_floor_aware():
    def verdict(candidate, baseline, expected="better"):
        comparison = stats.paired_comparison(candidate, baseline, oracle=0.0, past_side="below")
        return claims.claim_verdict(comparison, expected)

    baseline = [0.5, 0.52, 0.49]
    assert verdict([0.2, 0.21, 0.19], baseline) == claims.CONFIRMED  # closer to the floor
    assert verdict([0.8, 0.85, 0.79], baseline) == claims.CONTRADICTED  # farther from it
    assert verdict([0.8, 0.85, 0.79], baseline, "worse") == claims.CONFIRMED
    # far below the floor is over-sharp: never "better", whatever the raw difference says
    assert verdict([-0.9, -0.85, -0.95], baseline) == claims.PAST_ORACLE
    assert claims.claim_verdict(None, "better") == claims.NOT_COMPARED


def test_claims_file_errors_name_the_problem(tmp_path):
    path = tmp_path / "x.claims.toml"
    path.write_text('[[claim]]\nid = "A9"\ntext = "t"\ncandidates = ["a"]\nkind = "vibes"\n')
    with pytest.raises(ValueError, match="A9: unknown kind 'vibes'"):
        claims.load_claims(path)
    path.write_text('[[claim]]\nid = "A9"\ntext = "t"\ncandidates = ["a"]\nexpected = "up"\n')
    with pytest.raises(ValueError, match="direction 'up'"):
        claims.load_claims(path)


@pytest.mark.parametrize("name", ["dual_scale", "dual_expert"])
def test_shipped_claims_files_load_and_name_real_runs(name):
    claimed = claims.load_claims(ROOT / "experiments" / f"{name}.claims.toml")
    runs = set(tomllib.loads((ROOT / "experiments" / f"{name}.toml").read_text())["runs"])
    for claim in claimed:
        assert set(claim.candidates) | set(claim.comparison) <= runs, claim.id
    assert (
        claims.find_claims(ROOT / "results" / name, name)
        == ROOT / "experiments" / f"{name}.claims.toml"
    )


def test_bimodality_separates_two_modes_from_one():
    rng = np.random.default_rng(0)
    two = np.r_[rng.normal(0.1, 0.03, 500), rng.normal(0.9, 0.03, 500)]
    assert claims.bimodality(two) > claims.BIMODAL > claims.bimodality(rng.normal(0.5, 0.1, 1000))
    assert claims.bimodality(np.full(10, 0.5)) == 0.0


# --- comparing directories -----------------------------------------------------------------------


def test_comparison_pairs_matching_datasets_and_seeds_and_states_the_rest(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    write_fake_results(first, TINY)
    other = {
        **TINY,
        "experiment": {**TINY["experiment"], "datasets": ["moons", "circle"], "seeds": [0, 1, 7]},
    }
    write_fake_results(second, other)
    markdown = write_comparison([first, second], tmp_path / "out").read_text()
    assert "Reference: first/baseline" in markdown
    assert "not compared (the reference lacks them): circle" in markdown
    assert "seeds without a partner: 7" in markdown
    assert "| second/expert |" in markdown and "Δ " in markdown
    assert (tmp_path / "out" / "report.html").is_file()
    assert (tmp_path / "out" / "figures" / "kl_divergence_comparison.png").is_file()


def _kl_rows(markdown: str) -> dict[str, str]:
    """The KL table's rows of a comparison report, by run name."""
    table = markdown.split("## KL", 1)[1].split("\n## ", 1)[0]
    return {
        line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")
    }


def _kl_of(values: Mapping[str, float]) -> Callable[[str, str, int], dict[str, float]]:
    def metrics(run: str, dataset: str, seed: int) -> dict[str, float]:
        made_up = default_metrics(run, dataset, seed)  # KL 0.5 + N(0, 0.05²), per run and seed
        return {**made_up, "kl_divergence": values[run] + 0.1 * (made_up["kl_divergence"] - 0.5)}

    return metrics


FIVE_SEEDS = {**TINY, "experiment": {**TINY["experiment"], "seeds": [0, 1, 2, 3, 4]}}


@pytest.mark.parametrize(("expert_kl", "starred"), [(0.35, True), (0.05, False)])
def test_comparison_judges_sample_metrics_by_the_distance_to_the_floor(
    tmp_path, expert_kl, starred
):
    """Floor 0.30, baseline 0.60: an expert at 0.35 is closer to the floor (better); one at
    0.05 has lower KL but lies farther from the floor (past it: sharper than the data)."""
    first, second = tmp_path / "first", tmp_path / "second"
    floor = {"moons": 0.3, "line": 0.3}
    write_fake_results(first, FIVE_SEEDS, metrics=_kl_of({"baseline": 0.6, "expert": 0.6}),
                       oracle_kl=floor)  # fmt: skip
    write_fake_results(second, FIVE_SEEDS, metrics=_kl_of({"baseline": 0.6, "expert": expert_kl}),
                       oracle_kl=floor)  # fmt: skip
    markdown = write_comparison([first, second], tmp_path / "out").read_text()
    rows = _kl_rows(markdown)
    assert (STAR in rows["second/expert"]) is starred
    assert "Δ " in rows["second/expert"] and STAR not in rows["second/baseline"]
    assert "0.300" in rows["oracle floor (reference)"]
    if not starred:
        assert "past the oracle value" in rows["second/expert"]


def test_comparison_does_not_pair_runs_measured_on_another_sample_count(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    write_fake_results(first, FIVE_SEEDS, metrics=_kl_of({"baseline": 0.6, "expert": 0.6}))
    fewer = {
        **FIVE_SEEDS,
        "runs": {"fewer": {"model": {"arch": "mlp"}, "eval": {"num_samples": 200}}},
    }
    write_fake_results(second, fewer, metrics=_kl_of({"fewer": 0.2}))
    markdown = write_comparison([first, second], tmp_path / "out").read_text()
    assert "second/fewer is measured on 2,000 training points, 200 samples" in markdown
    assert "not compared" in markdown
    assert "Δ" not in _kl_rows(markdown)["second/fewer"]
    assert "Δ" in _kl_rows(markdown)["first/expert"]


# --- errors and honesty ---------------------------------------------------------------------


def test_foreign_directory_is_a_results_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not an experiment")
    with pytest.raises(results.ResultsError, match="not a lowdiff results directory"):
        report.write_report(tmp_path)
    with pytest.raises(results.ResultsError, match="not a directory"):
        report.write_report(tmp_path / "nowhere")


def test_clipped_interval_text():
    summary = stats.summarize([0.99, 0.97, 1.0])
    assert summary.ci_high > 1.0
    written = text.format_summary(summary, "high_quality_fraction", "moons", 3)
    assert written.endswith(", 1.000]") and "±" not in written
    kl = text.format_summary(stats.summarize([0.5, 0.6, 0.55]), "kl_divergence", "moons", 3)
    assert re.fullmatch(r"0\.550 ± 0\.\d{3}", kl)


def _synthetic(shift: float, spread: float, seeds: int = 6) -> dict:
    rng = np.random.default_rng(0)
    baseline = 2.0 + rng.normal(0.0, 0.3, seeds)
    candidate = baseline + shift + rng.normal(0.0, spread, seeds)
    return {
        "baseline": {"dino": dict(enumerate(baseline))},
        "candidate": {"dino": dict(enumerate(candidate))},
    }


@pytest.mark.parametrize(
    ("shift", "spread", "expected"),
    [(-1.0, 0.02, stats.BETTER), (1.0, 0.02, stats.WORSE), (0.0, 0.0, stats.NO_DIFFERENCE),
     (-0.01, 0.3, stats.NO_DIFFERENCE)],
)  # fmt: skip
def test_words_of_comparisons_come_from_the_verdict(shift, spread, expected):
    comparisons = tables.compare_runs(
        _synthetic(shift, spread), "baseline", ["candidate"], lower_is_better=True
    )
    written = text.format_delta(comparisons[("candidate", "dino")], "kl_divergence")
    written += " ".join(
        analysis.summary_items({"kl_divergence": comparisons}, ["candidate"], ["dino"])
    )
    assert ("better" in written) == (expected == stats.BETTER)
    assert (text.STAR in written) == (expected == stats.BETTER)


def test_weight_shift_finds_the_crossing_and_direction():
    w_global = np.linspace(0.8, 0.2, 100)  # row 0 is t = 99
    written = analysis.weight_shift(np.stack([w_global, 1 - w_global], axis=1))
    assert "from 0.80 at t = 99 to 0.20 at t = 0" in written
    assert "towards the local branch" in written and "crosses 0.5 at t = 49" in written


# --- torch-free ------------------------------------------------------------------------------

TORCH_MODULES = {
    "torch",
    "lowdiff.models",
    "lowdiff.engine",
    "lowdiff.evaluation",
    "lowdiff.experiments",
}


@pytest.mark.parametrize("package", ["report", "plots"])
def test_report_and_plots_import_nothing_that_needs_torch(package):
    for path in (ROOT / "src" / "lowdiff" / package).glob("*.py"):
        if path.name == "load.py":  # the results reader, made torch-free with the results layer
            continue
        tree = ast.parse(path.read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        imported |= {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not {m for m in imported if m.split(".")[0] == "torch" or m in TORCH_MODULES}, (
            path.name
        )


def test_building_a_report_leaves_torch_unimported(series_a):
    probe = "import sys, lowdiff.config; print('torch' in sys.modules)"
    if (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
        == "True"
    ):
        pytest.skip("lowdiff.config still imports torch (the torch-free results layer is not in)")
    code = (
        "import sys; from pathlib import Path; from lowdiff import report; "
        f"report.write_report(Path({str(series_a)!r})); assert 'torch' not in sys.modules, 'torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cell_json_of_the_fixture_is_what_the_runner_writes(series_a):
    record = json.loads(
        (results.cell_dir(series_a, "deep_weights", "moons", 1) / "cell.json").read_text()
    )
    assert record["status"] == "diverged" and record["metrics"] == {}


def test_measured_claims_of_the_shipped_series_a_file(tmp_path):
    root = tmp_path / "dual_scale"
    write_fake_results(root, _series("dual_scale", datasets=["dino", "moons"], seeds=[0, 1]))
    path = ROOT / "experiments" / "dual_scale.claims.toml"
    markdown = report.write_report(root, report.ReportOptions(claims=path)).read_text()
    section = markdown.split("## Claims")[1].split("\n## ")[0]
    group = "learned = weight_analysis = weight_visualisation"
    assert f"- {group}: change of w_global from t = T−1 to t = 0" in section  # fake: 0.7 -> 0.3
    assert "dino -0.400" in section
    assert "- fixed / baseline: train time ratio 1.00" in section  # equal batch times
    assert "the write-up says 2×" in section
    assert section.count("### A") == 5


def test_bimodal_gate_claim_measures_the_last_step_gates(tmp_path):
    root = tmp_path / "tiny"
    write_fake_results(root, TINY)  # the fake gate sits near 0.05 or 0.95: two modes
    loaded = load_results(root)
    claim = claims.Claim(id="B5", text="bimodal", kind="bimodal_gate", candidates=("expert",))
    items = claims.bimodal_gate_items(claim, loaded)
    assert len(items) == 2 and all("above 5/9 in 3 of 3 seed(s)" in item for item in items)
    assert claims.bimodal_gate_items(replace(claim, candidates=("baseline",)), loaded) == [
        "no recorded gate for the claim's runs"
    ]


def test_setup_states_the_ema_mean_age_and_warns_on_a_short_budget(series_a, tmp_path):
    """The protocol's EMA (beta 0.995 every 10 steps) at 10,000 steps: mean age 1,978 steps,
    20 % of the budget, so the report warns; an EMA fit for the budget gets no warning."""
    markdown = (series_a / "report.md").read_text()
    assert "mean age 1,978 steps at the end of training (20% of the 10,000-step budget)" in markdown
    assert "Warning: The EMA of the weights" in markdown
    raw = _series("dual_scale")
    raw["train"] = {"num_steps": 3000, "ema_beta": 0.99, "ema_update_every": 1}
    root = tmp_path / "fit"
    write_fake_results(root, raw)
    report.write_report(root)
    fitted = (root / "report.md").read_text()
    assert "mean age 99 steps" in fitted and "Warning: The EMA" not in fitted
