"""A two-node Ray cluster on loopback (scripts/ray_cluster.sh): the experiment spreads over
both nodes, survives losing the worker node mid-run, and every cell equals the local run."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_support import (
    SCRIPTS,
    cell_metrics,
    exports,
    packs_in_training,
    start_lowdiff,
    wait_until,
)

RAY = str(Path(sys.executable).with_name("ray"))


def cluster(command: str, directory: Path) -> str:
    done = subprocess.run(
        [str(SCRIPTS / "ray_cluster.sh"), command, str(directory)],
        env={**os.environ, "RAY": RAY},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """The cluster's directory and the environment a driver joins it with."""
    directory = tmp_path_factory.mktemp("ray")
    started = time.monotonic()
    try:
        env = {**os.environ, **exports(cluster("start", directory).splitlines()[-1])}
        print(f"two-node Ray cluster up in {time.monotonic() - started:.1f} s")
        yield directory, env
    finally:
        cluster("stop", directory)


NODE_ADDRESSES = """
import ray
ray.init()  # RAY_ADDRESS and the token from the environment, as a driver joins
print(sorted(node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]))
"""


def test_both_nodes_are_on_loopback(ray_cluster):
    _, env = ray_cluster
    done = subprocess.run(
        [sys.executable, "-c", NODE_ADDRESSES], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['127.0.0.2', '127.0.0.3']"


def test_losing_the_worker_node_mid_run_retries_and_equals_local(
    ray_cluster, experiment_file, local_cells, tmp_path
):
    directory, env = ray_cluster
    out = tmp_path / "ray"
    address = f'executor.ray_address="{env["RAY_ADDRESS"]}"'
    started = time.monotonic()
    run = start_lowdiff(
        ["run", str(experiment_file), "--out", str(out), "--executor", "ray", "--set", address],
        env,
    )
    # each node has one CPU, so two packs training at once are one on each node: lose the worker
    # node then, with its pack mid-training (after the first cell instead, the two packs of the
    # first wave may both have ended before the worker was given the next, and nothing is lost)
    wait_until(lambda: packs_in_training(out) >= 2, 240, "two packs training at once")
    cluster("kill-worker", directory)
    stdout, stderr = run.communicate(timeout=300)
    print(f"run with a lost node: {time.monotonic() - started:.1f} s")
    assert run.returncode == 0, stderr
    assert "attempt 1 failed" in stderr  # a pack was lost with the node, and retried
    assert cell_metrics(out) == local_cells
    assert "report:" in stdout


def test_a_cluster_with_token_auth_refuses_a_driver_without_the_token(
    ray_cluster, experiment_file, tmp_path
):
    _, env = ray_cluster
    bare = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    bare["RAY_AUTH_MODE"] = "disabled"
    out = tmp_path / "refused"
    address = f'executor.ray_address="{env["RAY_ADDRESS"]}"'
    run = start_lowdiff(
        ["run", str(experiment_file), "--out", str(out), "--executor", "ray", "--set", address],
        bare,
    )
    _, stderr = run.communicate(timeout=180)
    assert run.returncode == 2, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("lowdiff: error: executor.ray_address = ")
    assert "RAY_AUTH_MODE=token" in line
    assert not out.exists()
