"""What a real cluster costs: start-up, overhead per pack, and the cost of one lost pack.

Stands up the two-node Ray cluster (scripts/ray_cluster.sh, one CPU per node) and the
single-node Slurm (scripts/slurm_cluster.sh, root) on loopback, and times the tiny experiment
of the cluster tests (tests/clusters: four packs of one model) with `lowdiff run`:

- local:   in one process on one thread (packs one after another)
- clean:   through the executor (two packs at once: two Ray nodes, two Slurm CPUs)
- failure: the same, losing packs mid-run (Ray: the worker node's raylet is killed once the
  first cell is written; Slurm: the running array tasks' processes are killed (SIGKILL)
  once a pack has checkpointed, as the cluster tests do)

Overhead per pack = (clean x slots - local) / packs: the time a pack spends beyond its
training when two run at once. Retry cost = failure - clean. Run it alone on the machine:

    python benchmarks/clusters.py [--engines ray,slurm]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clusters"))
from cluster_support import (  # noqa: E402
    EXPERIMENT,
    first_cell_written,
    in_training,
    kill_running_tasks,
)

PACKS, SLOTS = 4, 2


def script(name: str, command: str, directory: Path) -> tuple[float, dict[str, str]]:
    """Run a cluster script; (seconds, the variables its last `export` line sets)."""
    env = {**os.environ, "RAY": str(Path(sys.executable).with_name("ray"))}
    started = time.monotonic()
    done = subprocess.run(
        [str(ROOT / "scripts" / name), command, str(directory)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    exports = lines[-1].split()[1:] if lines and lines[-1].startswith("export ") else []
    return time.monotonic() - started, dict(item.split("=", 1) for item in exports)


def lowdiff_run(
    experiment: Path, out: Path, env: dict[str, str], *extra: str, lose=None, when=None
) -> float:
    """Seconds of one `lowdiff run`; `lose()` is called once `when(out)` holds."""
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "lowdiff.cli", "run", str(experiment), "--out", str(out)]
    started = time.monotonic()
    run = subprocess.Popen(
        [*command, "--quiet", *extra], env={**env, "PYTHONPATH": path}, stdout=subprocess.DEVNULL
    )
    if lose is not None:
        while not when(out) and run.poll() is None:
            time.sleep(0.2)
        lose()
    if run.wait() != 0:
        raise RuntimeError(f"{' '.join(command)} failed")
    return time.monotonic() - started


def ray_rows(experiment: Path, scratch: Path) -> dict[str, float]:
    directory = scratch / "ray"
    up, exports = script("ray_cluster.sh", "start", directory)
    try:
        env = {**os.environ, **exports}
        options = ["--executor", "ray", "--set", f'executor.ray_address="{exports["RAY_ADDRESS"]}"']
        clean = lowdiff_run(experiment, scratch / "ray-clean", env, *options)
        lose = lambda: script("ray_cluster.sh", "kill-worker", directory)  # noqa: E731
        failure = lowdiff_run(
            experiment, scratch / "ray-failure", env, *options, lose=lose, when=first_cell_written
        )
    finally:
        script("ray_cluster.sh", "stop", directory)
    return {"start-up": up, "clean": clean, "failure": failure}


def slurm_rows(experiment: Path, scratch: Path) -> dict[str, float]:
    directory = scratch / "slurm"
    up, exports = script("slurm_cluster.sh", "start", directory)
    env = {**os.environ, **exports}

    try:
        options = ["--executor", "slurm"]
        clean = lowdiff_run(experiment, scratch / "slurm-clean", env, *options)
        cancel = lambda: kill_running_tasks(env)  # noqa: E731
        failure = lowdiff_run(
            experiment, scratch / "slurm-failure", env, *options, lose=cancel, when=in_training
        )
    finally:
        script("slurm_cluster.sh", "stop", directory)
    return {"start-up": up, "clean": clean, "failure": failure}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="ray,slurm")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lowdiff-clusters-") as name:
        scratch = Path(name)
        experiment = scratch / "cluster.toml"
        experiment.write_text(EXPERIMENT)
        local = lowdiff_run(experiment, scratch / "local", dict(os.environ), "--threads", "1")
        print(f"local, one thread: {local:.1f} s")
        print(
            "| engine | start-up s | run s | overhead per pack s | run losing a pack s | retry s |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        engines = {"ray": ray_rows, "slurm": slurm_rows}
        for engine in args.engines.split(","):
            row = engines[engine](experiment, scratch)
            overhead = (row["clean"] * SLOTS - local) / PACKS
            retry = row["failure"] - row["clean"]
            print(
                f"| {engine} | {row['start-up']:.1f} | {row['clean']:.1f} | {overhead:.1f} | "
                f"{row['failure']:.1f} | {retry:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
