"""Two lowdiff trainings at once on a shared CPU: steps/s of each against one alone.

For each thread setting, one baseline training (the `lowdiff train` default: the baseline MLP on
the four reference datasets, M = 4 models in one batch) runs alone, then N of them at once
(each started after the previous one is ready, as a user would start them). Each training's
steps/s is measured over the window in which all N run. Settings:

- default:  torch's defaults (as many threads as CPUs, OpenMP threads spin while waiting)
- passive:  OMP_WAIT_POLICY=PASSIVE set before torch loads (runtime.SHARING_ENVIRONMENT)
- spin:     spin-then-sleep (runtime.ALONE_ENVIRONMENT: GOMP_SPINCOUNT) and chosen threads
- threads:  threads chosen by runtime.choose_threads (CPUs shared among busy processes)
- lowdiff:  what the command line does: threads chosen, and the wait policy chosen by
            runtime.share_cpu_environment (spin-then-sleep alone, passive beside others)

Where lowdiff chose the threads (threads, spin, lowdiff) they follow the other lowdiff
processes between chunks of 100 steps, as in `lowdiff run` (runtime.follow_sharing).

Run it alone on the machine (other load changes the figures):

    python benchmarks/concurrency.py [--steps 3000] [--processes 2] [--modes default,lowdiff]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

MODES = {
    "default": "torch's defaults",
    "passive": "passive OpenMP wait policy",
    "spin": "spin-then-sleep, threads chosen",
    "threads": "threads chosen from free CPUs",
    "lowdiff": "lowdiff's setting (both)",
}
DATASETS = ("circle", "dino", "line", "moons")
# Thread and OpenMP wait settings: a benchmark's child process starts without them, as from a
# fresh shell (the driver's own `configure_cpu` exports OMP_NUM_THREADS), and chooses its own.
CLEARED = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "KMP_BLOCKTIME",
    "GOMP_SPINCOUNT",
)


def fresh_environment() -> dict[str, str]:
    """This process's environment without the thread and wait settings (CLEARED)."""
    return {name: value for name, value in os.environ.items() if name not in CLEARED}


def run_fresh(command: list[str], what: str, variables: dict[str, str] | None = None) -> str:
    """Run `command` in a fresh environment (plus `variables`) and return its stdout; a failure
    raises RuntimeError naming `what` and the last line the command wrote to stderr."""
    environment = fresh_environment() | (variables or {})
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{what} failed (exit code {done.returncode}): {last}")
    return done.stdout


BLOCK = 50  # steps between time stamps


# --- one training (a child process) --------------------------------------------------------


def worker(mode: str, steps: int, models: int, points: int) -> None:
    """Set up a training, say READY, wait for GO, train; print time stamps as JSON."""
    from lowdiff import runtime

    if mode in ("passive", "spin", "lowdiff"):  # before torch is imported
        runtime.share_cpu_environment({"passive": False, "spin": True}.get(mode))
    import torch

    from lowdiff.data import load
    from lowdiff.engine import Member, TrainConfig, Trainer
    from lowdiff.models import ModelConfig
    from lowdiff.schedule import NoiseSchedule, ScheduleConfig

    if mode in ("threads", "spin", "lowdiff"):
        runtime.configure_cpu(0)
    else:
        runtime.keep_freed_memory()  # the allocator setting is common to every mode
    device = torch.device("cpu")
    names = [DATASETS[m % len(DATASETS)] for m in range(models)]
    tensors = {name: torch.from_numpy(load(name, points)) for name in set(names)}
    members = [Member(name, m // len(DATASETS)) for m, name in enumerate(names)]
    schedule = NoiseSchedule(ScheduleConfig(), device)
    config = TrainConfig(num_steps=steps)
    trainer = Trainer(ModelConfig(), members, tensors, schedule, config, device)
    print(f"READY {torch.get_num_threads()}", flush=True)
    sys.stdin.readline()
    stamps = [time.time()]
    for step in range(steps):
        if step % 100 == 0:  # a chunk, as in Trainer.run: threads follow the other runs there
            runtime.follow_sharing()
            x0, t, eps = trainer.source.next_chunk(min(100, steps - step))
        trainer.step(x0[step % 100], t[step % 100], eps[step % 100])
        trainer.ema.update(trainer.model)
        if (step + 1) % BLOCK == 0:
            stamps.append(time.time())
    print(json.dumps({"threads": torch.get_num_threads(), "stamps": stamps}), flush=True)


# --- the driver ----------------------------------------------------------------------------


def start(mode: str, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    env = fresh_environment()
    command = [sys.executable, __file__, "--worker", mode, "--steps", str(args.steps)]
    command += ["--models", str(args.models), "--points", str(args.points)]
    child = subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    line = child.stdout.readline().split()
    if not line or line[0] != "READY":
        raise RuntimeError(f"worker for {mode!r} did not start: {line}")
    return child, int(line[1])


def rate_in_window(stamps: list[float], begin: float, end: float) -> float:
    """Steps/s of one training between `begin` and `end` (blocks inside the window)."""
    inside = [s for s in stamps if begin <= s <= end]
    if len(inside) < 2:
        return float("nan")
    return (len(inside) - 1) * BLOCK / (inside[-1] - inside[0])


def measure(mode: str, count: int, args: argparse.Namespace) -> list[tuple[int, float]]:
    """(threads, steps/s) of each of `count` trainings run at once."""
    children = [start(mode, args) for _ in range(count)]
    for child, _ in children:
        child.stdin.write("GO\n")
        child.stdin.flush()
    runs = []
    for child, _ in children:
        output, _ = child.communicate()
        if child.returncode:
            raise RuntimeError(f"worker for {mode!r} failed with exit code {child.returncode}")
        runs.append(json.loads(output.strip().splitlines()[-1]))
    begin = max(run["stamps"][0] for run in runs)
    end = min(run["stamps"][-1] for run in runs)
    return [(run["threads"], rate_in_window(run["stamps"], begin, end)) for run in runs]


def hardware() -> str:
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        model = names[0] if names else model
    from lowdiff.runtime import available_cpus

    python = platform.python_version()
    return f"{model}; {os.cpu_count()} CPUs, {available_cpus()} usable; Python {python}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--models", type=int, default=4, help="models in the batch (M)")
    parser.add_argument("--points", type=int, default=100_000, help="training points per dataset")
    parser.add_argument("--processes", type=int, default=2, help="trainings at once")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.models, args.points)
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or args.steps < 2 * BLOCK or args.processes < 1:
        parser.error(f"modes from {', '.join(MODES)}; --steps >= {2 * BLOCK}; --processes >= 1")
    import torch

    print(f"hardware: {hardware()}; torch {torch.__version__}")
    print(f"baseline M={args.models}, {args.steps} steps, {args.processes} trainings at once\n")
    at_once = f"each, {args.processes} at once"
    header = (
        f"{'setting':32} {'alone':>16} {at_once:>28} {'each/alone':>11} {'all/alone':>10} "
        f"{'each/default':>13}"
    )
    print(header)
    default_alone = None
    for mode in modes:
        ((alone_threads, alone),) = measure(mode, 1, args)
        together = measure(mode, args.processes, args)
        default_alone = default_alone or (alone if mode == "default" else None)
        threads = ",".join(str(t) for t, _ in together)
        rates = ", ".join(f"{r:.1f}" for _, r in together)
        worst = min(r for _, r in together)
        versus_default = f"{worst / default_alone:.2f}" if default_alone else "-"
        print(
            f"{MODES[mode]:32} {alone:8.1f} ({alone_threads} thr) "
            f"{rates:>18} ({threads} thr) {worst / alone:11.2f} "
            f"{sum(r for _, r in together) / alone:10.2f} {versus_default:>13}"
        )
    print("\nsteps/s; the ratios use the slowest of the trainings run at once;")
    print("all/alone: the trainings' steps/s added up, against one alone: the machine's")
    print("throughput with the models split among processes against one process of all threads")
    print("each/default: against one training alone with torch's defaults")


if __name__ == "__main__":
    main()
