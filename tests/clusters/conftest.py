"""Real engines on this machine: a two-node Ray cluster and a single-node Slurm, started by
scripts/ray_cluster.sh and scripts/slurm_cluster.sh on the loopback interface.

They start daemons (and Slurm's script installs Debian packages when missing, as root), so
they run only when asked: `make test-clusters` (LOWDIFF_CLUSTER_TESTS=1). The reference is
the same tiny experiment run in this process on one thread, as each Ray task or Slurm job
runs it (executor.cpus_per_task = 1).
"""

import os
import time
from pathlib import Path

import pytest
from cluster_support import EXPERIMENT, cell_metrics

if os.environ.get("LOWDIFF_CLUSTER_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def experiment_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("experiment") / "cluster.toml"
    path.write_text(EXPERIMENT)
    return path


@pytest.fixture(scope="session")
def local_cells(experiment_file) -> dict:
    """The experiment run here, one pack after another (the reference)."""
    from lowdiff.config import load_experiment
    from lowdiff.experiments import execute

    root = experiment_file.parent / "local"
    started = time.monotonic()
    execute(load_experiment(experiment_file), root, progress=False)
    print(f"local run: {time.monotonic() - started:.1f} s")  # docs/scale.md, Measured
    return cell_metrics(root)
