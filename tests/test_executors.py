"""Executors: every item run, failures retried then named, worker crashes survived, and an
experiment run through Ray or submitit equal to the same experiment run in this process.

Ray runs a cluster on this machine (`ray.init(num_cpus=2)`); submitit's "local" cluster runs
each job as a local process through the same code path as Slurm. No cluster is needed.
"""

import dataclasses
import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from executor_toys import Toy, toy_task

from lowdiff import results
from lowdiff.executors import (
    EXECUTORS,
    ExecutorConfig,
    LocalExecutor,
    Outcome,
    RayExecutor,
    SlurmExecutor,
    describe,
    make_executor,
)

HAS_RAY = importlib.util.find_spec("ray") is not None
HAS_SUBMITIT = importlib.util.find_spec("submitit") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray not installed (pip install lowdiff[ray])")
needs_submitit = pytest.mark.skipif(
    not HAS_SUBMITIT, reason="submitit not installed (pip install lowdiff[slurm])"
)
TESTS = Path(__file__).parent


@pytest.fixture
def worker_path(monkeypatch):
    """Let worker processes import this module (they start from the environment)."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PYTHONPATH", path)


@pytest.fixture(scope="module")
def ray_cluster():
    if not HAS_RAY:
        pytest.skip("ray not installed (pip install lowdiff[ray])")
    import ray

    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH", "")]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", path)  # the workers inherit the driver's environment
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=128 * 1024**2,  # small: the tasks pass no data through Ray
        )
    yield ray
    ray.shutdown()


def run_toys(executor, directory: Path, behaviours: dict[str, str]) -> list[Outcome]:
    toys = [Toy(str(directory), name, i, b) for i, (name, b) in enumerate(behaviours.items())]
    return executor.map(toy_task, toys, names=[t.name for t in toys])


def check_generic(outcomes: list[Outcome], directory: Path, retries: int) -> None:
    """One outcome per item in order; ok items written; the failing one named with its error
    after 1 + retries attempts; the flaky one ok on its second attempt."""
    assert [o.name for o in outcomes] == ["a", "broken", "flaky", "d"]
    by_name = {o.name: o for o in outcomes}
    assert by_name["a"] == Outcome("a", True, None, 1)
    assert by_name["d"] == Outcome("d", True, None, 1)
    assert by_name["flaky"] == Outcome("flaky", True, None, 2)
    broken = by_name["broken"]
    assert not broken.ok and broken.attempts == 1 + retries
    assert broken.error == "ValueError: bad item broken"
    for name, value in {"a": 0, "flaky": 2, "d": 3}.items():
        assert (directory / f"{name}.out").read_text() == str(value**2)
    assert not (directory / "broken.out").exists()


BEHAVIOURS = {"a": "ok", "broken": "fail", "flaky": "flaky", "d": "ok"}


# --- configuration --------------------------------------------------------------------------


def test_default_config_runs_here_and_every_kind_is_made():
    assert ExecutorConfig().kind == "local"
    assert isinstance(make_executor(ExecutorConfig()), LocalExecutor)
    assert isinstance(make_executor(ExecutorConfig(kind="ray")), RayExecutor)
    slurm = make_executor(ExecutorConfig(kind="slurm"), root=Path("out"))
    assert isinstance(slurm, SlurmExecutor) and slurm.folder == Path("out/.submitit/%j")
    assert set(EXECUTORS) == {"local", "ray", "slurm"}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"kind": "dask"}, "executor.kind: unknown 'dask'; valid: local, ray, slurm"),
        ({"cpus_per_task": 0}, "executor.cpus_per_task must be an integer >= 1, got 0"),
        (
            {"gpus_per_task": 0.5},
            "executor.gpus_per_task must be an integer >= 0, got 0.5; a task gets whole GPUs",
        ),
        ({"slurm_gpus_per_task": -1}, "executor.slurm_gpus_per_task must be an integer >= 0"),
        ({"max_retries": -1}, "executor.max_retries must be an integer >= 0, got -1"),
        ({"max_retries": True}, "executor.max_retries must be an integer"),
        ({"slurm_time_min": 0}, "executor.slurm_time_min"),
        ({"slurm_array_parallelism": 0}, "executor.slurm_array_parallelism"),
        ({"slurm_cluster": "pbs"}, "valid: slurm, local, debug"),
        ({"ray_address": None}, "executor.ray_address must be a string"),
    ],
)
def test_bad_settings_are_named(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ExecutorConfig(**fields)


def test_config_is_frozen_and_keyword_only():
    with pytest.raises(TypeError):
        ExecutorConfig("ray")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ExecutorConfig().kind = "ray"  # type: ignore[misc]


def test_names_must_match_items():
    with pytest.raises(ValueError, match="got 2 items but 1 names"):
        LocalExecutor().map(print, [1, 2], names=["one"])


def test_describe_keeps_type_and_message():
    assert describe(ValueError(" two\nlines ")) == "ValueError: two\nlines"
    assert describe(KeyError()) == "KeyError"


def test_missing_engine_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ImportError, match=r"needs 'ray'.*pip install 'lowdiff\[ray\]'"):
        RayExecutor(ExecutorConfig(kind="ray")).map(print, [1], names=["one"])
    slurm = make_executor(ExecutorConfig(kind="slurm"))
    with pytest.raises(ImportError, match=r"pip install 'lowdiff\[slurm\]'"):
        slurm.map(print, [1], names=["one"])


# --- the same behaviour on every executor ---------------------------------------------------


def test_local_retries_reports_and_keeps_the_rest(tmp_path):
    outcomes = run_toys(LocalExecutor(ExecutorConfig(max_retries=2)), tmp_path, BEHAVIOURS)
    check_generic(outcomes, tmp_path, retries=2)


def test_local_without_retries_tries_once(tmp_path):
    outcomes = run_toys(LocalExecutor(ExecutorConfig(max_retries=0)), tmp_path, BEHAVIOURS)
    assert [o.attempts for o in outcomes] == [1, 1, 1, 1]
    assert [o.ok for o in outcomes] == [True, False, False, True]
    assert outcomes[2].error == "RuntimeError: transient failure of flaky"


@needs_ray
def test_ray_retries_reports_and_keeps_the_rest(tmp_path, ray_cluster):
    executor = RayExecutor(ExecutorConfig(kind="ray", max_retries=1, cpus_per_task=2))
    check_generic(run_toys(executor, tmp_path, BEHAVIOURS), tmp_path, retries=1)
    assert (tmp_path / "a.threads").read_text() == "2"  # torch threads = the task's CPUs


@needs_ray
def test_ray_worker_killed_mid_task_is_retried(tmp_path, ray_cluster):
    executor = RayExecutor(ExecutorConfig(kind="ray", max_retries=1))
    outcomes = run_toys(executor, tmp_path, {"a": "ok", "killed": "crash", "c": "ok"})
    assert [(o.name, o.ok, o.attempts) for o in outcomes] == [
        ("a", True, 1),
        ("killed", True, 2),
        ("c", True, 1),
    ]
    assert (tmp_path / "killed.out").read_text() == "1"


def submitit_local(tmp_path: Path, **fields) -> SlurmExecutor:
    config = ExecutorConfig(kind="slurm", slurm_cluster="local", slurm_time_min=2, **fields)
    executor = make_executor(config, root=tmp_path / "results")
    assert isinstance(executor, SlurmExecutor)
    return executor


@needs_submitit
def test_submitit_local_retries_reports_and_keeps_the_rest(tmp_path, worker_path):
    work = tmp_path / "work"
    work.mkdir()
    executor = submitit_local(tmp_path, max_retries=1)
    check_generic(run_toys(executor, work, BEHAVIOURS), work, retries=1)
    assert (tmp_path / "results" / ".submitit").is_dir()  # logs beside the results


@needs_submitit
def test_submitit_job_killed_mid_task_is_resubmitted(tmp_path, worker_path, monkeypatch):
    from submitit.local.local import LocalJob

    # submitit waits 15 s for the result of a dead job to appear on a slow shared filesystem;
    # this one is local (submitit's own tests shorten the wait the same way)
    monkeypatch.setattr(LocalJob, "_results_timeout_s", 1)
    work = tmp_path / "work"
    work.mkdir()
    executor = submitit_local(tmp_path, max_retries=1, cpus_per_task=2)
    outcomes = run_toys(executor, work, {"killed": "crash", "b": "ok"})
    assert [(o.name, o.ok, o.attempts) for o in outcomes] == [("killed", True, 2), ("b", True, 1)]
    assert (work / "killed.threads").read_text() == "2"  # torch threads = the job's CPUs


# --- end to end: an experiment through each executor equals the local run ------------------

TINY = """\
[experiment]
name = "tiny"
datasets = ["moons", "line"]
seeds = [0, 1]
num_points = 500
oracle_draws = 1
max_models_per_batch = 2
[train]
num_steps = 60
batch_size = 64
[eval]
num_samples = 200
field_resolution = 4
[runs.baseline]
model = { arch = "mlp", hidden_dim = 32, embedding_dim = 16 }
"""


def cell_metrics(config, root: Path) -> dict:
    """Every cell's metrics except timings (which differ from run to run), by cell path."""
    found = {}
    for run in config.runs:
        for dataset in config.experiment.datasets:
            for seed in config.experiment.seeds:
                directory = results.cell_dir(root, run.name, dataset, seed)
                record = results.read_json(directory / "cell.json")
                metrics = record["metrics"]
                assert metrics, f"{directory}: no metrics"
                found[(run.name, dataset, seed)] = {
                    k: v for k, v in metrics.items() if not k.endswith("_time")
                }
    return found


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    """The tiny experiment run in this process on one thread (the reference)."""
    from lowdiff.config import load_experiment
    from lowdiff.experiments import execute

    base = tmp_path_factory.mktemp("tiny")
    (base / "tiny.toml").write_text(TINY)
    config = load_experiment(base / "tiny.toml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # executor workers run one thread per CPU given: compare alike
    try:
        execute(config, base / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    return config, cell_metrics(config, base / "local")


def run_through(config, root: Path, executor) -> dict:
    from lowdiff.experiments import execute

    executed = execute(config, root, progress=False, executor=executor)
    assert executed.ok and executed.failed == []
    return cell_metrics(config, root)


@needs_ray
def test_experiment_on_ray_equals_local(tmp_path, tiny_experiment, ray_cluster):
    config, expected = tiny_experiment
    executor = make_executor(ExecutorConfig(kind="ray", cpus_per_task=1))
    assert run_through(config, tmp_path / "ray", executor) == expected


@needs_submitit
def test_experiment_on_submitit_local_equals_local(tmp_path, tiny_experiment, worker_path):
    config, expected = tiny_experiment
    settings = ExecutorConfig(kind="slurm", slurm_cluster="local", slurm_time_min=5)
    executor = make_executor(settings, root=tmp_path / "slurm")
    assert run_through(config, tmp_path / "slurm", executor) == expected


def test_experiment_through_local_executor_resumes(tmp_path, tiny_experiment):
    config, expected = tiny_experiment
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        calls = []
        executor = LocalExecutor()
        original = executor.map

        def counting_map(fn, items, *, names):
            calls.append(list(names))
            return original(fn, items, names=names)

        executor.map = counting_map  # type: ignore[method-assign]
        assert run_through(config, tmp_path / "local", executor) == expected
        assert run_through(config, tmp_path / "local", executor) == expected
    finally:
        torch.set_num_threads(torch_threads)
    assert calls[0] and not any(calls[1:])  # the second run has no pack left to submit
