"""A quick variant of every shipped experiment file runs end to end and reports its figures."""

from pathlib import Path

import pytest

from lowdiff.config import ConfigError, load_experiment
from lowdiff.experiments import execute
from lowdiff.precision import bf16_missing
from lowdiff.report import write_report

EXPERIMENTS = sorted(
    path
    for path in (Path(__file__).parent.parent / "experiments").glob("*.toml")
    if not path.name.endswith(".claims.toml")  # the write-ups' claims, read by the report
)
QUICK = [
    'experiment.datasets=["dino", "moons"]',
    "experiment.seeds=[0, 1]",
    "experiment.num_points=1500",
    "experiment.oracle_draws=1",
    "train.num_steps=8",
    "train.batch_size=32",
    "eval.num_samples=200",
    "eval.field_resolution=6",
    "eval.ground_truth=false",
    "model.hidden_dim=16",
    "model.embedding_dim=8",
]
SERIES_FIGURES = {
    "dual_scale": ["weight_evolution.png"],
    "dual_expert": [
        "dino_generated_samples.png",
        "dino_train_loss.png",
        "dino_gating_weights_histogram.png",
    ],
    "diversity_sweep": ["sweep_diversity_weight.png"],
}
COMMON_FIGURES = ["train_loss.png", "generated_images.png", "kl_divergence_comparison.png"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_quick_variant_runs_and_reports(path, tmp_path):
    config = load_experiment(path, QUICK)
    precisions = {p for run in config.runs for p in (run.train.precision, run.eval.precision)}
    if "bf16" in precisions and bf16_missing("cpu"):  # refused at once, nothing written
        with pytest.raises(ConfigError, match="needs native bf16.*use 'fp32'"):
            execute(config, tmp_path, progress=False)
        assert not any(tmp_path.iterdir())
        return
    execute(config, tmp_path, progress=False)
    report = write_report(tmp_path).read_text()
    headings = [line for line in report.splitlines() if line.startswith("## Run")]
    for index, run in enumerate(config.runs):  # identical runs share one section
        assert any(f" {index}" in h.split(":")[0] and run.name in h for h in headings), run.name
    for figure in COMMON_FIGURES + SERIES_FIGURES.get(path.stem, []):
        assert (tmp_path / "figures" / figure).is_file(), figure
    if path.stem == "dual_expert":
        assert list((tmp_path / "figures").glob("expert_specialisation*.png"))
