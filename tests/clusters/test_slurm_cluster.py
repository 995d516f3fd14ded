"""A single-node Slurm with accounting (scripts/slurm_cluster.sh): the tasks of a job array
killed mid-run (SIGKILL) are resubmitted and every cell equals the local run;
a partition that does not exist stops the run before anything is written; a refused
submission is one line naming the setting, and the report is still written."""

import os
import subprocess
import time

import pytest
from cluster_support import (
    SCRIPTS,
    cell_metrics,
    exports,
    in_training,
    kill_running_tasks,
    start_lowdiff,
    wait_until,
)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The environment a login node has: SLURM_CONF of the cluster."""
    directory = tmp_path_factory.mktemp("slurm")
    script = str(SCRIPTS / "slurm_cluster.sh")
    started = time.monotonic()
    try:
        done = subprocess.run(
            [script, "start", str(directory)], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr
        print(f"single-node Slurm up in {time.monotonic() - started:.1f} s")
        yield {**os.environ, **exports(done.stdout.strip().splitlines()[-1])}
    finally:
        subprocess.run([script, "stop", str(directory)], timeout=120, check=True)


def slurm_run(experiment_file, out, env, *settings: str) -> subprocess.Popen:
    arguments = ["run", str(experiment_file), "--out", str(out), "--executor", "slurm"]
    for setting in ("executor.slurm_time_min=10", *settings):
        arguments += ["--set", setting]
    return start_lowdiff(arguments, env)


def test_killed_array_tasks_are_resubmitted_and_equal_local(
    slurm, experiment_file, local_cells, tmp_path
):
    out = tmp_path / "slurm"
    started = time.monotonic()
    run = slurm_run(experiment_file, out, slurm, 'executor.slurm_partition="debug"')
    # a pack has checkpointed and trains on: every running task is killed in its training
    wait_until(lambda: in_training(out), 240, "a pack in training")
    assert kill_running_tasks(slurm), "no running array task while a pack trains"
    stdout, stderr = run.communicate(timeout=400)
    print(f"run with killed tasks: {time.monotonic() - started:.1f} s")
    assert run.returncode == 0, stderr
    assert "attempt 1 failed" in stderr and "ended without a result" in stderr
    assert cell_metrics(out) == local_cells
    assert "report:" in stdout


def test_a_missing_partition_stops_before_anything_is_written(slurm, experiment_file, tmp_path):
    out = tmp_path / "never"
    run = slurm_run(experiment_file, out, slurm, 'executor.slurm_partition="nope"')
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 2
    assert stderr.strip().splitlines() == [
        "lowdiff: error: executor.slurm_partition: Slurm has no partition 'nope'; valid: debug"
    ]
    assert not out.exists()


def test_a_refused_submission_names_the_setting_and_the_report_is_written(
    slurm, experiment_file, tmp_path
):
    out = tmp_path / "refused"
    run = slurm_run(experiment_file, out, slurm, "executor.slurm_gpus_per_task=1")
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 3, stderr
    failures = [line for line in stderr.splitlines() if line.startswith("lowdiff: packs")]
    assert len(failures) == 1, stderr  # every pack refused alike: said once
    assert "Slurm refused the job array: sbatch: error: " in failures[0]
    assert "executor.slurm_gpus_per_task" in failures[0]
    assert "Traceback" not in stderr and "report:" in stdout
