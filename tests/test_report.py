"""Tests of lowdiff.report: the report is built from the files on disk, completely and honestly.

One tiny real experiment (dino and moons, 2 seeds, baseline / dual-scale learned / dual-scale
fixed / dual-expert) is trained once per module; tests that change results work on a copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lowdiff import report, results, stats
from lowdiff.config import resolve
from lowdiff.experiments import execute

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUNS = ["baseline", "learned", "fixed", "expert"]
DATASETS = ["dino", "moons"]
SEEDS = [0, 1]
FIGURES = [
    "train_loss.png",
    "generated_images.png",
    "kl_divergence_comparison.png",
    "modes_captured.png",
    "weight_evolution.png",
    "dino_generated_samples.png",
    "dino_train_loss.png",
    "dino_gating_weights_histogram.png",
    "expert_specialisation.png",
]
TINY = {
    "experiment": {
        "name": "tiny",
        "question": "Do dual-scale or gated denoisers help on tiny budgets?",
        "datasets": DATASETS,
        "seeds": SEEDS,
        "num_points": 2000,
        "oracle_draws": 1,
        "device": "cpu",
    },
    "model": {"hidden_dim": 32, "embedding_dim": 16},
    "train": {"num_steps": 30, "batch_size": 64},
    "schedule": {"num_timesteps": 25},  # a short chain: sampling dominates the fixture's time
    "eval": {"num_samples": 400, "field_resolution": 8},
    "runs": {
        "baseline": {"description": "The MLP denoiser.", "model": {"arch": "mlp"}},
        "learned": {"description": "Dual-scale, learned w(t).", "model": {"arch": "dual_scale"}},
        "fixed": {
            "description": "Dual-scale, 0.5/0.5.",
            "model": {"arch": "dual_scale", "weighting": "fixed"},
        },
        "expert": {"description": "Two experts and a gate.", "model": {"arch": "dual_expert"}},
    },
}


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained tiny experiment, without a report (copy it before changing anything)."""
    root = tmp_path_factory.mktemp("tiny") / "results"
    threads = torch.get_num_threads()
    # Tiny models: one thread is fastest, and spinning intra-op threads on a busy 2-core machine
    # can be a hundred times slower.
    torch.set_num_threads(1)
    try:
        execute(resolve(TINY), root, progress=False)
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="module")
def report_dir(experiment_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _copy(experiment_dir, tmp_path_factory.mktemp("reported"))
    report.write_report(root)
    return root


def _copy(source: Path, parent: Path) -> Path:
    target = parent / "results"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("figures", "report.*"))
    return target


def _edit_metrics(root: Path, run: str, dataset: str, seed: int, **values: float) -> None:
    path = results.cell_dir(root, run, dataset, seed) / "cell.json"
    record = json.loads(path.read_text())
    record["metrics"].update(values)
    path.write_text(json.dumps(record))


def _metrics(root: Path, run: str, dataset: str, seed: int) -> dict[str, float]:
    return results.load_cell_record(results.cell_dir(root, run, dataset, seed))["metrics"]


# --- the report on disk ------------------------------------------------------------------------


def test_report_files_and_every_figure_exist(report_dir):
    assert (report_dir / "report.md").is_file() and (report_dir / "report.html").is_file()
    markdown = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    for name in FIGURES:
        path = report_dir / "figures" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        assert f"](figures/{name})" in markdown
    assert page.count('src="data:image/png;base64,') == len(FIGURES)  # self-contained
    assert "figures/" not in page.split("<body>")[1].replace("(figures/", "")


def test_runs_have_numbered_sections_and_tables_with_datasets(report_dir):
    markdown = (report_dir / "report.md").read_text()
    for index, run in enumerate(RUNS):
        assert f"## Run {index}: {run}\n" in markdown
    sections = markdown.split("## Run ")[1:]
    assert len(sections) == len(RUNS)
    for section in sections:
        rows = [line for line in section.splitlines() if line.startswith("| ")]
        for dataset in DATASETS:
            assert any(row.startswith(f"| {dataset} | ") for row in rows)
            assert any(row.startswith(f"| ↳ {dataset} oracle floor | ") for row in rows)
    assert "model.weighting = fixed" in sections[2]
    assert "Δ " in sections[1] and "Δ " not in sections[0].split("## Figures")[0]


def test_analysis_covers_summary_and_both_series(report_dir):
    markdown = (report_dir / "report.md").read_text()
    analysis = markdown.split("## Analysis")[1]
    for run in ("learned", "fixed", "expert"):
        for dataset in DATASETS:
            assert f"- {run} on {dataset}: KL vs baseline: " in analysis
    assert "### Series A" in analysis and "w_global goes from" in analysis
    assert "KL vs fixed (fixed weights)" in analysis
    assert "### Series B" in analysis and "gate: " in analysis


def test_rebuilding_gives_the_same_report(report_dir):
    before = {
        path.name: path.read_bytes()
        for path in [report_dir / "report.md", report_dir / "report.html"]
        + sorted((report_dir / "figures").iterdir())
    }
    report.write_report(report_dir)
    for name, content in before.items():
        folder = report_dir / "figures" if name.endswith(".png") else report_dir
        assert (folder / name).read_bytes() == content, name


def test_missing_cell_is_reported_not_fatal(experiment_dir, tmp_path):
    root = _copy(experiment_dir, tmp_path)
    (results.cell_dir(root, "expert", "dino", 1) / "cell.json").unlink()
    markdown = report.write_report(root).read_text()
    assert "expert / dino / seed 1: missing" in markdown
    assert "Cells finished: 15 of 16" in markdown
    expert = markdown.split("## Run 3: expert")[1].split("## ")[0]
    assert "(1 seed, no interval)" in expert


def test_a_whole_missing_run_and_no_oracle_still_build(experiment_dir, tmp_path):
    root = _copy(experiment_dir, tmp_path)
    shutil.rmtree(root / "learned")
    (root / "oracle.json").unlink()
    markdown = report.write_report(root).read_text()
    learned = markdown.split("## Run 1: learned")[1].split("## ")[0]
    assert "| dino | missing |" in learned
    assert "oracle floor |" not in markdown


def test_cells_of_another_configuration_are_stale_not_used(experiment_dir, tmp_path):
    root = _copy(experiment_dir, tmp_path)
    config = json.loads((root / "experiment.json").read_text())
    config["runs"][3]["train"]["num_steps"] = 31  # expert's cells were trained with 30
    (root / "experiment.json").write_text(json.dumps(config))
    markdown = report.write_report(root).read_text()
    assert markdown.count("stale: written under another configuration") == 4
    assert "train.num_steps = 31" in markdown.split("## Run 3: expert")[1]


def test_foreign_directory_is_a_results_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not an experiment")
    with pytest.raises(results.ResultsError, match="not a lowdiff results directory"):
        report.write_report(tmp_path)
    with pytest.raises(results.ResultsError, match="not a directory"):
        report.write_report(tmp_path / "nowhere")
    (tmp_path / "experiment.json").write_text('{"something": "else"}')
    with pytest.raises(results.ResultsError, match="not a lowdiff experiment record"):
        report.write_report(tmp_path)


# --- honesty -----------------------------------------------------------------------------------


def test_candidates_equal_to_baseline_are_never_called_better(experiment_dir, tmp_path):
    root = _copy(experiment_dir, tmp_path)
    for run in RUNS[1:]:
        for dataset in DATASETS:
            for seed in SEEDS:
                _edit_metrics(root, run, dataset, seed, **_metrics(root, "baseline", dataset, seed))
    report.write_report(root)
    for name in ("report.md", "report.html"):
        text = (root / name).read_text().lower()
        assert "better" not in text and "worse" not in text and "beats both" not in text
    assert "no significant difference" in (root / "report.md").read_text()


def test_a_clearly_lower_kl_is_called_better_end_to_end(experiment_dir, tmp_path):
    root = _copy(experiment_dir, tmp_path)
    for seed, gap in zip(SEEDS, (1.0, 1.002), strict=True):
        kl = _metrics(root, "baseline", "dino", seed)["kl_divergence"]
        _edit_metrics(root, "learned", "dino", seed, kl_divergence=kl - gap)
    markdown = report.write_report(root).read_text()
    assert "- learned on dino: KL vs baseline: better (significant)" in markdown
    learned = markdown.split("## Run 1: learned")[1].split("## ")[0]
    dino_row = next(row for row in learned.splitlines() if row.startswith("| dino |"))
    assert "Δ −1.001\\* better" in dino_row


def _synthetic(candidate_shift: float, spread: float, seeds: int = 6) -> dict:
    rng = np.random.default_rng(0)
    baseline = 2.0 + rng.normal(0.0, 0.3, seeds)  # seed-to-seed variation shared by both runs
    candidate = baseline + candidate_shift + rng.normal(0.0, spread, seeds)
    return {
        "baseline": {"dino": dict(enumerate(baseline))},
        "candidate": {"dino": dict(enumerate(candidate))},
    }


@pytest.mark.parametrize(
    ("shift", "spread", "expected"),
    [
        (-1.0, 0.02, stats.BETTER),
        (1.0, 0.02, stats.WORSE),
        (0.0, 0.0, stats.NO_DIFFERENCE),  # identical values
        (-0.01, 0.3, stats.NO_DIFFERENCE),  # noise far larger than the shift
    ],
)
def test_synthetic_comparisons_use_the_verdict(shift, spread, expected):
    values = _synthetic(shift, spread)
    comparisons = report.compare_runs(values, "baseline", ["candidate"], lower_is_better=True)
    comparison = comparisons[("candidate", "dino")]
    assert stats.verdict(comparison) == expected
    text = " ".join(report.summary_items({"kl_divergence": comparisons}, ["candidate"], ["dino"]))
    text += report.format_delta(comparison, "kl_divergence")
    text += report.tally(comparisons, "KL")
    assert ("better" in text) == (expected == stats.BETTER)
    assert ("worse" in text) == (expected == stats.WORSE)


def test_one_seed_has_no_interval_and_no_test():
    values = {"baseline": {"dino": {0: 2.0}}, "candidate": {"dino": {0: 0.5}}}
    comparison = report.compare_runs(values, "baseline", ["candidate"], lower_is_better=True)[
        ("candidate", "dino")
    ]
    assert report.format_delta(comparison, "kl_divergence") == "Δ −1.500 (untested)"
    summary = stats.summarize([0.5])
    assert report.format_summary(summary, "kl_divergence", 1) == "0.500 (1 seed, no interval)"


# --- the words of the series analyses ----------------------------------------------------------


def test_weight_shift_finds_the_crossing_and_direction():
    w_global = np.linspace(0.8, 0.2, 100)  # row 0 is t = 99
    text = report.weight_shift(np.stack([w_global, 1 - w_global], axis=1))
    assert "from 0.80 at t = 99 to 0.20 at t = 0" in text
    assert "towards the local branch" in text and "crosses 0.5 at t = 49" in text
    assert "half of the change reached by t = 49" in text
    flat = report.weight_shift(np.full((100, 2), 0.5) + [0.1, -0.1])
    assert "barely changes" in flat and "global branch keeps the larger weight" in flat


def _gate(final: np.ndarray, field_spread: float = 0.0, change: float = 0.0) -> report.GateStats:
    field = np.zeros((2, 4, 4, 1)) + 0.5
    field[1, :2, :, 0] += field_spread / 2  # the t = 0 field: half the plane shifted
    trace = np.linspace(0.5, 0.5 + change, 10)[:, None]
    weights = {
        "final": final[:, None],
        "trace": trace,
        "field": field,
        "field_timesteps": np.array([99, 0]),
    }
    return report.gate_stats(weights)


def test_gate_classification_thresholds():
    rng = np.random.default_rng(0)
    assert report.classify_gate(_gate(0.5 + rng.normal(0, 0.01, 500))).startswith(
        "no specialisation"
    )
    assert "one expert" in report.classify_gate(_gate(np.full(500, 0.99)))
    assert "expert 2" in report.classify_gate(_gate(np.full(500, 0.01)))
    spread = rng.uniform(0.1, 0.9, 500)
    assert report.classify_gate(_gate(spread, field_spread=0.6, change=0.1)).endswith("region")
    assert report.classify_gate(_gate(spread, field_spread=0.1, change=0.4)).endswith("timestep")
    assert report.classify_gate(_gate(spread, field_spread=0.02, change=0.02)).startswith("little")
