"""What the real-cluster tests share: the tiny experiment, its cells, a lowdiff process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lowdiff import results
from lowdiff.experiments import CHECKPOINTS

ROOT = Path(__file__).parents[2]
SCRIPTS = ROOT / "scripts"

# four packs of one model each (max_models_per_batch = 1); 2,000 steps, a checkpoint every 100:
# a pack is seen training (its checkpoint on disk) seconds before it ends, so it can be lost then
EXPERIMENT = """\
[experiment]
name = "cluster"
datasets = ["moons", "line"]
seeds = [0, 1]
num_points = 500
oracle_draws = 1
max_models_per_batch = 1
[train]
num_steps = 2000
batch_size = 64
checkpoint_every = 100
[eval]
num_samples = 200
field_resolution = 4
process_snapshots = 0
ground_truth = false
[runs.baseline]
model = { arch = "mlp", hidden_dim = 32, embedding_dim = 16, hidden_layers = 1 }
"""


def cell_metrics(root: Path) -> dict:
    """Every cell's metrics except timings, by (dataset, seed)."""
    found = {}
    for dataset in ("moons", "line"):
        for seed in (0, 1):
            record = results.read_json(
                results.cell_dir(root, "baseline", dataset, seed) / "cell.json"
            )
            found[(dataset, seed)] = {
                k: v for k, v in record["metrics"].items() if not k.endswith("_time")
            }
    return found


def packs_in_training(out: Path) -> int:
    """How many packs of the run into `out` have checkpointed and not yet finished."""
    return len(list((out / CHECKPOINTS).glob("*.npz")))


def in_training(out: Path) -> bool:
    """Whether a pack of the run into `out` has checkpointed and not yet finished."""
    return packs_in_training(out) > 0


def kill_running_tasks(env: dict[str, str]) -> list[str]:
    """SIGKILL the Python process of every running Slurm array task at once, as the OOM
    killer or a lost node would; the job ids of the tasks killed.

    Not `scancel`: Slurm cancels with SIGTERM, which submitit's jobs ignore, and SIGKILL only
    `KillWait` seconds later, time in which a pack may well finish and leave its result."""
    listed = subprocess.run(
        ["squeue", "--noheader", "--array", "--states=RUNNING", "--format=%A"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for job in listed:
        table = subprocess.run(
            ["scontrol", "listpids", job], env=env, capture_output=True, text=True, check=True
        ).stdout.splitlines()[1:]  # PID JOBID STEPID LOCALID GLOBALID
        for pid, _, step, local, _ in (row.split() for row in table):
            if step != "batch" and local != "-":  # the step's task: lowdiff's pack
                os.kill(int(pid), signal.SIGKILL)
    return listed


def exports(line: str) -> dict[str, str]:
    """`export A=1 B=2` -> {"A": "1", "B": "2"}."""
    assert line.startswith("export "), line
    return dict(item.split("=", 1) for item in line.split()[1:])


def start_lowdiff(arguments: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`lowdiff ARGUMENTS` in a new process (its output in .stdout/.stderr as text)."""
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-m", "lowdiff.cli", *arguments, "--quiet"],
        env={**env, "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {seconds} s"
        time.sleep(0.2)
