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
import time
import types
from pathlib import Path

import pytest
import torch
from executor_toys import Toy, toy_task

from lowdiff import executors, results
from lowdiff.executors import (
    EXECUTORS,
    ExecutorConfig,
    ExecutorError,
    LocalExecutor,
    Outcome,
    RayExecutor,
    SlurmExecutor,
    describe,
    loopback_address,
    make_executor,
    submission_error,
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
            _node_ip_address=loopback_address(),  # as lowdiff starts one: loopback only
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


# --- what a cluster refuses, and jobs whose state cannot be read ----------------------------

PARTITION_REFUSAL = (
    "sbatch: error: invalid partition specified: nope\n"
    "sbatch: error: Batch job submission failed: Invalid partition name specified"
)


@pytest.mark.parametrize(
    "said, setting",
    [
        (PARTITION_REFUSAL, "executor.slurm_partition"),
        ("sbatch: error: Invalid generic resource (gres) specification", "slurm_gpus_per_task"),
        ("sbatch: error: Requested time limit is invalid", "executor.slurm_time_min"),
        ("sbatch: error: something new", "the slurm_* settings of [executor]"),
    ],
)
def test_a_submission_refusal_is_one_line_naming_the_setting(said, setting):
    message = submission_error(f"Command ['sbatch', 'x.sh'] failed\n{said}")
    assert message.startswith("Slurm refused the job array: sbatch: error: ")
    assert "\n" not in message and message.endswith(")") and setting in message


class RefusingSubmitit:
    def map_array(self, *arguments):
        raise RuntimeError(f"Command failed with return code 1\n{PARTITION_REFUSAL}")


def test_refused_submission_fails_every_pack_once_without_raising(tmp_path, monkeypatch):
    executor = make_executor(ExecutorConfig(kind="slurm", max_retries=2), root=tmp_path)
    monkeypatch.setattr(executor, "_submitit_executor", RefusingSubmitit)
    outcomes = executor.map(print, [1, 2], names=["a", "b"])
    expected = submission_error(PARTITION_REFUSAL)
    assert outcomes == [Outcome("a", False, expected, 1), Outcome("b", False, expected, 1)]


def fake_slurm(monkeypatch, answers: dict[str, tuple[bool, str]], calls: list | None = None):
    """Slurm's commands answered from `answers` (by command name), sbatch on PATH."""
    monkeypatch.setattr(executors.shutil, "which", lambda name: f"/usr/bin/{name}")

    def run(command):
        if calls is not None:
            calls.append(command)
        return answers[command[0]]

    monkeypatch.setattr(executors, "_slurm", run)


def test_slurm_check_names_a_missing_partition_before_anything_is_written(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from lowdiff.experiments import execute

    fake_slurm(monkeypatch, {"sinfo": (True, "debug*\ngpu\n"), "sacct": (True, "")})
    config = ExecutorConfig(kind="slurm", slurm_partition="nope")
    executor = make_executor(config, root=tmp_path / "out")
    message = "executor.slurm_partition: Slurm has no partition 'nope'; valid: debug, gpu"
    with pytest.raises(ExecutorError, match=re.escape(message)):
        executor.check()
    (tmp_path / "tiny.toml").write_text(TINY)
    from lowdiff.config import load_experiment

    with pytest.raises(ExecutorError, match="slurm_partition"):
        execute(load_experiment(tmp_path / "tiny.toml"), tmp_path / "out", executor=executor)
    assert not (tmp_path / "out").exists()
    make_executor(dataclasses.replace(config, slurm_partition="gpu")).check()  # it exists


def test_slurm_check_needs_sbatch_and_an_answer(monkeypatch):
    pytest.importorskip("submitit")
    executor = make_executor(ExecutorConfig(kind="slurm"))
    monkeypatch.setattr(executors.shutil, "which", lambda name: None)
    with pytest.raises(ExecutorError, match="sbatch is not on PATH.*slurm_cluster = 'local'"):
        executor.check()
    fake_slurm(monkeypatch, {"sinfo": (False, "sinfo: error: Unable to contact slurm controller")})
    with pytest.raises(ExecutorError, match=r"does not answer \(sinfo: sinfo: error: Unable"):
        executor.check()


def test_slurm_check_warns_without_accounting(monkeypatch, caplog):
    pytest.importorskip("submitit")
    off = "sacct: error: Slurm accounting storage is disabled"
    fake_slurm(monkeypatch, {"sinfo": (True, "debug*\n"), "sacct": (False, off)})
    make_executor(ExecutorConfig(kind="slurm", slurm_state_timeout_s=7)).check()
    assert off in caplog.text and "accounting" in caplog.text and "7 s" in caplog.text


class FakeJob:
    """A Slurm job as submitit shows it: done after `polls` looks, or never (None)."""

    def __init__(self, job_id: str, polls: int | None, state: str = "UNKNOWN") -> None:
        self.job_id, self.polls, self._state, self.looks = job_id, polls, state, 0
        self.paths = types.SimpleNamespace(stdout=Path(f"/logs/{job_id}.out"))

    def done(self) -> bool:
        self.looks += 1
        return self.polls is not None and self.looks > self.polls

    @property
    def state(self) -> str:
        return self._state

    def result(self) -> None:
        return None


def test_a_job_whose_state_cannot_be_read_fails_after_the_deadline(monkeypatch):
    """Accounting off: sacct says UNKNOWN for every job. A job squeue still lists is alive
    however long it runs; one that squeue no longer lists and left no result is failed once
    slurm_state_timeout_s has passed, and the others' outcomes are kept."""
    calls: list = []
    queued = "12_1\n"  # 12_0 finishes; 12_1 is queued (long); 12_2 vanished (scancel)
    fake_slurm(monkeypatch, {"squeue": (True, queued)}, calls)
    config = ExecutorConfig(kind="slurm", slurm_state_timeout_s=1)
    executor = make_executor(config)
    executor.poll_s = 0.05
    jobs = [FakeJob("12_0", 0), FakeJob("12_1", 40), FakeJob("12_2", None)]
    errors: list = [None, None, None]
    started = time.monotonic()
    executor._wait(dict(enumerate(jobs)), errors)
    assert errors[0] is None and errors[1] is None  # 12_1 outlived the deadline, in the queue
    assert time.monotonic() - started > 1
    assert errors[2].startswith("job 12_2 left no result and its state could not be read for ")
    assert "is Slurm accounting on?" in errors[2] and "/logs/12_2.out" in errors[2]
    assert calls[0] == ["squeue", "--noheader", "--array", "--format=%i", "--jobs=12"]


def test_a_job_with_a_known_state_is_waited_for(monkeypatch):
    fake_slurm(monkeypatch, {"squeue": (True, "")})
    executor = make_executor(ExecutorConfig(kind="slurm", slurm_state_timeout_s=1))
    executor.poll_s = 0.05
    errors: list = [None]
    executor._wait({0: FakeJob("3_0", 30, state="RUNNING")}, errors)  # sacct reads it
    assert errors == [None]


class FakeRay(types.ModuleType):
    """`ray` as far as RayExecutor uses it to connect; `init` fails with `failure`."""

    def __init__(self, failure: Exception | None = None) -> None:
        super().__init__("ray")
        self.failure, self.inits = failure, []

    def is_initialized(self) -> bool:
        return False

    def init(self, **options) -> None:
        self.inits.append(options)
        if self.failure:
            raise self.failure


def test_a_cluster_lowdiff_starts_is_on_loopback_and_a_joined_one_is_left_alone(monkeypatch):
    ray = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    RayExecutor(ExecutorConfig(kind="ray", ray_address="local")).check()
    RayExecutor(ExecutorConfig(kind="ray", ray_address="10.1.2.3:6379")).check()
    assert ray.inits == [
        {"address": "local", "_node_ip_address": loopback_address()},
        {"address": "10.1.2.3:6379"},
    ]
    if sys.platform.startswith("linux"):
        assert loopback_address().startswith("127.")


def test_a_cluster_that_cannot_be_joined_is_one_line_with_the_auth_recipe(monkeypatch):
    failure = ConnectionError("Failed to connect to GCS within 60 seconds.\nmore detail")
    monkeypatch.setitem(sys.modules, "ray", FakeRay(failure))
    executor = RayExecutor(ExecutorConfig(kind="ray", ray_address="127.0.0.2:6379"))
    with pytest.raises(ExecutorError) as raised:
        executor.check()
    message = str(raised.value)
    assert message.startswith("executor.ray_address = '127.0.0.2:6379': cannot join the Ray ")
    assert "(Failed to connect to GCS within 60 seconds.)" in message and "\n" not in message
    assert "RAY_AUTH_MODE=token" in message and "docs/scale.md" in message


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
def test_a_cluster_started_here_is_on_the_loopback_interface(ray_cluster):
    addresses = [node["NodeManagerAddress"] for node in ray_cluster.nodes()]
    assert addresses and all(address.startswith("127.") for address in addresses)


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
ground_truth = false
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
