"""The Python API: configs through JSON, reloading a trained model, tables, the notebook."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lowdiff
from lowdiff import config, metrics
from lowdiff.config import ConfigError
from lowdiff.results import ResultsError

EXPERIMENTS = Path(__file__).parents[1] / "experiments"
EXAMPLES = Path(__file__).parents[1] / "examples"
TINY = {
    "num_points": 1000,
    "num_steps": 40,
    "batch_size": 64,
    "num_samples": 300,
    "ground_truth": False,
    "oracle_draws": 1,
    "hidden_dim": 32,
    "embedding_dim": 16,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-run experiment: mlp on moons and line, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("api") / "mlp"
    table = lowdiff.train("mlp", ["moons", "line"], [0, 1], root, device="cpu", **TINY)
    return root, table


# --- configs through JSON --------------------------------------------------------------------


SHIPPED = sorted(p for p in EXPERIMENTS.glob("*.toml") if not p.name.endswith(".claims.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_experiment_round_trips_through_json(path):
    original = config.load_experiment(path)
    written = json.loads(json.dumps(config.to_dict(original)))  # what experiment.json holds
    with pytest.raises(ConfigError, match="expected a table"):
        config.resolve(written)  # the TOML shape only: the reason from_json exists
    assert config.from_json(written) == original


def test_from_json_rejects_what_it_cannot_read():
    with pytest.raises(ConfigError, match="expected a JSON object"):
        config.from_json([1, 2])
    with pytest.raises(ConfigError, match="duplicate run name 'a'"):
        config.from_json({"experiment": {"name": "x"}, "runs": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match=r"runs\[0\]: expected an object with a 'name'"):
        config.from_json({"experiment": {"name": "x"}, "runs": [{"model": {}}]})


def test_run_experiment_from_its_own_json_resumes_without_training(trained):
    root, table = trained
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("*/*/seed_*/cell.json")}
    again = lowdiff.run_experiment(root / "experiment.json", out=root)
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/*/seed_*/cell.json")} == stamps
    assert again.rows == table.rows


# --- a trained model, reloaded ---------------------------------------------------------------


def test_load_restores_the_saved_weights(trained):
    root, _ = trained
    model = lowdiff.load(root / "mlp" / "moons" / "seed_1")
    assert (model.dataset, model.seed, model.run.name) == ("moons", 1, "mlp")
    with np.load(root / "mlp" / "moons" / "seed_1" / "model_ema.npz") as saved:
        names = set(saved.files)
        for name, parameter in model.network.named_parameters():
            np.testing.assert_array_equal(parameter.detach()[0].numpy(), saved[name])
    assert names == {name for name, _ in model.network.named_parameters()}


def test_load_from_a_run_directory_picks_the_cell(trained):
    root, _ = trained
    model = lowdiff.load(root / "mlp", dataset="line", seed=0)
    assert model.directory == root / "mlp" / "line" / "seed_0"
    assert lowdiff.load(root, dataset="line", seed=0).directory == model.directory
    with pytest.raises(ResultsError, match="several cells match.*moons/seed_0"):
        lowdiff.load(root / "mlp")
    with pytest.raises(ResultsError, match="not a lowdiff cell, run or results directory"):
        lowdiff.load(root / "mlp" / "moons")


def test_the_cells_own_stream_replays_its_samples(trained):
    """Sampling the reloaded weights with the cell's stream gives the samples it saved."""
    root, _ = trained
    cell = root / "mlp" / "line" / "seed_1"
    model = lowdiff.load(cell)
    np.testing.assert_allclose(
        model.sample(300, seed=None), np.load(cell / "samples.npy"), rtol=0, atol=1e-5
    )
    first, again, other = model.sample(50, seed=3), model.sample(50, seed=3), model.sample(50)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (50, 2) and not np.allclose(first, other)


def test_denoise_takes_one_timestep_or_one_per_point(trained):
    root, _ = trained
    model = lowdiff.load(root / "mlp" / "moons" / "seed_0")
    xt = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    shared = model.denoise(xt, 10)
    np.testing.assert_allclose(model.denoise(xt, np.full(7, 10)), shared, atol=1e-6)
    mixed = model.denoise(xt, np.arange(7) * 10)
    np.testing.assert_allclose(mixed[1], model.denoise(xt[1:2], 10)[0], atol=1e-6)
    assert not np.allclose(mixed[5], model.denoise(xt[5:6], 10)[0])  # t matters
    with pytest.raises(ValueError, match=r"t must be integers in \[0, 99\]"):
        model.denoise(xt, 100)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        model.denoise(xt[:, :1], 0)


def test_a_compact_results_folder_says_the_weights_are_not_kept(trained, tmp_path):
    root, _ = trained
    cell = tmp_path / "mlp" / "moons" / "seed_0"
    cell.mkdir(parents=True)
    (tmp_path / "mlp" / "config.json").write_bytes((root / "mlp" / "config.json").read_bytes())
    for path in (root / "mlp" / "moons" / "seed_0").iterdir():
        if path.name != "model_ema.npz":
            (cell / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ResultsError, match="no model weights.*compact results folder"):
        lowdiff.load(cell)


def test_a_stale_cell_is_not_loaded(trained, tmp_path):
    import shutil

    root, _ = trained
    copy = tmp_path / "mlp"
    shutil.copytree(root / "mlp", copy)
    record = json.loads((copy / "moons" / "seed_0" / "cell.json").read_text())
    (copy / "moons" / "seed_0" / "cell.json").write_text(
        json.dumps({**record, "config_hash": "0" * 16})
    )
    with pytest.raises(ResultsError, match="stale: the cell was written under another config"):
        lowdiff.load(copy / "moons" / "seed_0")


def test_unknown_sampler_is_named_with_a_suggestion(trained):
    model = lowdiff.load(trained[0] / "mlp" / "moons" / "seed_0")
    with pytest.raises(ConfigError, match="unknown sampler 'ancestrall'; did you mean 'ancestral'"):
        model.sample(10, sampler="ancestrall")


# --- measuring -------------------------------------------------------------------------------


def test_evaluate_is_metrics_measure_against_the_training_points():
    points = np.random.default_rng(1).normal(size=(400, 2)).astype(np.float32)
    reference = metrics.load_reference("moons", 1000)
    assert lowdiff.evaluate(points, "moons", k=3, num_points=1000) == metrics.measure(
        points, reference, 3
    )


def test_evaluate_scores_true_draws_better_than_noise():
    from lowdiff import data

    truth = lowdiff.evaluate(data.load("moons", 400, seed=7), "moons", num_points=2000)
    noise = lowdiff.evaluate(
        np.random.default_rng(0).normal(size=(400, 2)), "moons", num_points=2000
    )
    assert truth["kl_divergence"] < noise["kl_divergence"] - 1
    assert truth["high_quality_fraction"] > noise["high_quality_fraction"]
    with pytest.raises(ConfigError, match="unknown dataset 'mons'; did you mean 'moons'"):
        lowdiff.evaluate(noise, "mons")


def test_train_settings_by_name_and_typos(tmp_path):
    made = lowdiff.api.train_config("mlp", ["moons"], [0], settings={"train__num_steps": 7})
    assert made.runs[0].train.num_steps == 7
    assert lowdiff.api.train_config(settings={"hidden_dim": 8}).runs[0].model.hidden_dim == 8
    with pytest.raises(ConfigError, match="unknown setting 'num_step'; did you mean 'num_steps'"):
        lowdiff.train("mlp", ["moons"], out=tmp_path / "never", num_step=3)
    with pytest.raises(ConfigError, match="model=: unknown architecture 'mpl'; did you mean 'mlp'"):
        lowdiff.train("mpl", out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


# --- tables ----------------------------------------------------------------------------------


def test_results_table_holds_every_finished_metric(trained):
    root, table = trained
    cells = sorted(root.glob("mlp/*/seed_*/cell.json"))
    assert len(cells) == 4
    expected = set()
    for path in cells:
        record = json.loads(path.read_text())
        for metric, value in record["metrics"].items():
            expected.add(
                ("mlp", "mlp", record["dataset"], record["seed"], metric, value, str(root))
            )
    assert {tuple(row.values()) for row in table} == expected and len(table) == len(expected)
    kl = table.select(metric="kl_divergence", dataset="line")
    assert sorted(row["seed"] for row in kl) == [0, 1]
    with pytest.raises(ValueError, match="unknown column 'model'"):
        table.select(model="mlp")


def test_results_table_csv_round_trip_and_dataframe(trained, tmp_path):
    _, table = trained
    text = table.to_csv(tmp_path / "metrics.csv")
    assert (tmp_path / "metrics.csv").read_text() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["experiment", "run", "dataset", "seed", "metric", "value", "source"]
    assert [float(r["value"]) for r in rows] == table.values()  # repr: exact floats
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            table.to_dataframe()
    else:
        assert table.to_dataframe().shape == (len(table), 7)


# --- the package stays light; the notebook runs -------------------------------------------


def test_import_lowdiff_does_not_import_torch():
    code = "import sys, lowdiff; assert 'torch' not in sys.modules; print(lowdiff.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert set(lowdiff.__all__) >= {"train", "load", "evaluate", "run_experiment"}


def test_quickstart_notebook_runs_in_a_kernel_and_is_committed_with_outputs(tmp_path):
    """examples/quickstart.ipynb executed through a real Jupyter kernel (nbclient), in order."""
    nbformat = pytest.importorskip("nbformat", reason="the dev extra is not installed")
    nbclient = pytest.importorskip("nbclient", reason="the dev extra is not installed")
    pytest.importorskip("ipykernel", reason="the dev extra is not installed")
    path = EXAMPLES / "quickstart.ipynb"
    committed = nbformat.read(path, as_version=4)
    code = [cell for cell in committed.cells if cell.cell_type == "code"]
    assert len(code) >= 6 and all(cell.execution_count for cell in code)  # committed executed
    assert all(cell.outputs for cell in code[1:])  # every cell but the imports shows something
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )  # fmt: skip
    source = str(Path(lowdiff.__file__).resolve().parents[1])  # this lowdiff, in the kernel too
    paths = os.pathsep.join(p for p in [source, os.environ.get("PYTHONPATH", "")] if p)
    client.execute(env=os.environ | {"PYTHONPATH": paths})  # CellExecutionError on a failure
    assert (tmp_path / "runs" / "quickstart-api" / "experiment.json").is_file()
    assert os.path.getsize(tmp_path / "metrics.csv") > 0
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the scatter figure


def test_api_applies_the_command_lines_thread_policy(tmp_path, monkeypatch):
    import torch

    from lowdiff import runtime

    chosen = []
    monkeypatch.setattr(runtime, "configure_cpu", lambda threads: chosen.append(threads))
    before = torch.get_num_threads()
    lowdiff.train("mlp", ["moons"], [0], tmp_path / "t", device="cpu", threads=1, **TINY)
    assert chosen == [1]
    with pytest.raises(ValueError, match="--threads must be >= 0"):
        lowdiff.train("mlp", ["moons"], [0], tmp_path / "u", threads=-1, **TINY)
    monkeypatch.undo()
    try:  # the real policy: the requested count reaches torch
        runtime.configure_cpu(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_sample_goes_through_the_sampler_registry_when_there_is_one(trained, monkeypatch):
    """The contract of lowdiff.samplers: sample(model, schedule, generators, device, ...)."""
    import types

    calls = []

    def sample(model, schedule, generators, device, **options):
        calls.append((model, schedule, len(generators), device, options))
        points = np.zeros((1, options["num_samples"], 2), np.float32)
        return types.SimpleNamespace(points=points)

    fake = types.SimpleNamespace(SAMPLERS={"ancestral": 1, "ddim": 2}, sample=sample)
    monkeypatch.setitem(sys.modules, "lowdiff.samplers", fake)
    monkeypatch.setattr(lowdiff, "samplers", fake, raising=False)
    model = lowdiff.load(trained[0] / "mlp" / "moons" / "seed_0")
    assert model.sample(12, sampler="ddim", sampling_steps=5, seed=2, eta=0.5).shape == (12, 2)
    network, schedule, count, device, options = calls[0]
    assert (network, schedule, count, device) == (model.network, model.schedule, 1, model.device)
    assert options == {"num_samples": 12, "sampler": "ddim", "sampling_steps": 5, "eta": 0.5}
    with pytest.raises(ConfigError, match="unknown sampler 'dim'; did you mean 'ddim'"):
        model.sample(12, sampler="dim")


def test_run_experiment_runs_the_packs_where_the_experiment_says(tmp_path, monkeypatch):
    from lowdiff import executors

    asked = []

    class Refusing:
        def check(self):
            asked.append(True)
            raise executors.ExecutorError("executor.slurm_partition: no such partition")

    monkeypatch.setattr(executors, "make_executor", lambda config, root: Refusing())
    experiment = {
        "experiment": {"name": "e", "datasets": ["moons"], "seeds": [0], "executor": "slurm"},
        "runs": {"a": {}},
    }
    with pytest.raises(executors.ExecutorError, match="slurm_partition"):
        lowdiff.run_experiment(experiment, out=tmp_path / "out")
    assert asked and not (tmp_path / "out").exists()
