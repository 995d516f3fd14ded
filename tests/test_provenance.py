"""experiment.json records what produced a results folder; a sweep's runs read back."""

import json
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

from lowdiff import provenance, summary
from lowdiff.config import load_experiment
from lowdiff.experiments import execute

TINY = [
    'experiment.datasets=["moons"]',
    "experiment.seeds=[0]",
    "experiment.num_points=300",
    "experiment.oracle_draws=1",
    "train.num_steps=4",
    "train.batch_size=16",
    "eval.num_samples=60",
    "eval.field_resolution=4",
    "eval.ground_truth=false",
    "model.hidden_dim=8",
    "model.embedding_dim=8",
]


def test_record_matches_the_environment():
    record = provenance.record("cpu")
    assert record["torch"] == torch.__version__
    assert record["numpy"] == np.__version__
    assert record["python"] == platform.python_version()
    assert record["device"] == "cpu" and record["gpu"] is None
    source = Path(provenance.__file__).parent
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True)
    if head.returncode == 0:  # a clone: the commit of lowdiff's own source
        assert record["git"]["commit"] == head.stdout.decode().strip()
    else:
        assert record["git"] is None


def test_experiment_json_holds_provenance_and_the_sweep(tmp_path):
    toml = Path(__file__).parent.parent / "experiments" / "quickstart.toml"
    config = load_experiment(toml, TINY, ["train.diversity_weight=0,0.05"])
    execute(config, tmp_path, progress=False)
    written = json.loads((tmp_path / "experiment.json").read_text())
    assert written["provenance"]["torch"] == torch.__version__
    assert written["provenance"]["device"] == "cpu"
    loaded = summary.load(tmp_path)
    assert loaded.run_names == [
        f"{run}-diversity_weight={value}"
        for run in ("baseline", "dual_expert")
        for value in ("0", "0.05")
    ]
    assert loaded.config.sweep == config.sweep
    assert all(loaded.finished(run, "moons") for run in loaded.run_names)
