"""`lowdiff export --mlflow / --tensorboard`: written with the real packages and read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fake_results import write_fake_results

from lowdiff import plots, summary, tracking
from lowdiff.cli import main

RAW = {
    "experiment": {"name": "tracked", "datasets": ["moons", "dino"], "seeds": [0, 1],
                   "num_points": 2000},
    "runs": {"baseline": {"model": {"arch": "mlp"}},
             "wide": {"model": {"arch": "mlp", "hidden_dim": 64}, "train": {"num_steps": 77}}},
}  # fmt: skip


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tracked") / "tracked"
    write_fake_results(root, RAW, process=False)
    fig = plots.loss_curves({"baseline": {"moons": np.ones((1, 30))}})
    plots.save_figure(fig, root / "figures" / "train_loss.png")
    record = json.loads((root / "experiment.json").read_text())
    record["provenance"] = {"torch": "9.9", "git": {"commit": "abc"}}
    (root / "experiment.json").write_text(json.dumps(record))
    return root


def test_mlflow_runs_hold_config_metrics_loss_curve_and_figures(results_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    pytest.importorskip("sqlalchemy", reason="the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # the sqlite store keeps artifacts beside it
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["export", str(results_dir), "--mlflow", uri]) == 0
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    cells = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    loaded = summary.load(results_dir)
    assert len(cells) == len(loaded.cells) == 8
    assert parent.data.tags["lowdiff.provenance.torch"] == "9.9"
    assert parent.data.tags["lowdiff.provenance.git.commit"] == "abc"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert artifacts == {"figures/train_loss.png"}
    for run in cells:
        tags = run.data.tags
        cell = loaded.cells[(tags["run"], tags["dataset"], int(tags["seed"]))]
        assert run.data.params["model.hidden_dim"] == ("64" if tags["run"] == "wide" else "256")
        assert run.data.params["train.num_steps"] == ("77" if tags["run"] == "wide" else "10000")
        for name, value in cell.metrics.items():
            assert run.data.metrics[name] == pytest.approx(value)
        history = client.get_metric_history(run.info.run_id, "train_loss")
        steps = sorted(history, key=lambda m: m.step)
        np.testing.assert_allclose([m.value for m in steps], cell.losses)
        assert [m.step for m in steps] == list(range(len(cell.losses)))


def test_tensorboard_event_files_hold_losses_metrics_and_figures(results_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert tracking.to_tensorboard([results_dir], tmp_path) == 8
    loaded = summary.load(results_dir)
    for (run, dataset, seed), cell in loaded.cells.items():
        events = EventAccumulator(str(tmp_path / "tracked" / run / dataset / f"seed_{seed}"))
        events.Reload()
        losses = [e.value for e in events.Scalars("train/loss")]
        np.testing.assert_allclose(losses, cell.losses, rtol=1e-6)
        kl = events.Scalars("metrics/kl_divergence")[0].value
        assert kl == pytest.approx(cell.metrics["kl_divergence"], rel=1e-6)
    figures = EventAccumulator(str(tmp_path / "tracked" / "figures"), size_guidance={"images": 0})
    figures.Reload()
    assert figures.Tags()["images"] == ["train_loss"]
    image = figures.Images("train_loss")[0]
    assert (image.width, image.height) == plots.style.render(
        plots.loss_curves({"baseline": {"moons": np.ones((1, 30))}})
    ).size


def test_missing_extra_is_one_line(results_dir, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name.startswith("mlflow"):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    assert main(["export", str(results_dir), "--mlflow", "sqlite:///x.db"]) == 2
    assert "pip install 'lowdiff[mlflow]'" in capsys.readouterr().err
