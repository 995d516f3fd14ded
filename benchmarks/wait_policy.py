"""OpenMP's wait between the kernels of a step: ms per training step, and how often the worker
threads fall asleep, for each wait setting, each in a new process.

GNU OpenMP (torch's CPU wheels) lets a thread that has finished its part of a kernel spin
GOMP_SPINCOUNT times before it sleeps, and a sleeping thread must be woken for the next parallel
kernel. Where a step's serial stretches (Python between kernels, the optimiser's bookkeeping)
outlast the spin, the workers sleep several times a step and each wake-up costs time. The sleeps
are counted from the threads' voluntary context switches (Linux /proc): a count, which a noisy
host does not blur the way it blurs times.

Settings: `lowdiff` (what the command line sets when it is alone on the machine:
runtime.ALONE_ENVIRONMENT), `default` (torch's: GNU OpenMP spins 300,000 times), `passive` (sleep
at once: runtime.SHARING_ENVIRONMENT, what a run beside other busy processes gets),
`spin=N` for each N given with --spins, and `threads=N` for each N given with --fewer-threads
(lowdiff's wait on N threads instead of every usable CPU: fewer threads at small M). Each repeat
runs every setting once, in a new process started without thread or wait settings, in the
opposite order to the repeat before (on a shared host the first of a row of processes has run
slower than the rest); the ratio to `lowdiff` is taken within a repeat.

    python benchmarks/wait_policy.py [--models 1,4,16] [--steps 300] [--repeats 4]
                                     [--spins 10000,100000] [--only lowdiff,spin=10000]
                                     [--threads 0] [--fewer-threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from concurrency import run_fresh

from lowdiff import runtime

WARM_UP = 30  # steps before the timed ones: allocator, first chunk of random numbers


def settings(spins: list[int], fewer: list[int]) -> dict[str, tuple[dict[str, str], int]]:
    """Each setting's environment variables (added to a fresh environment) and thread count
    (0: --threads)."""
    chosen = {
        "lowdiff": (dict(runtime.ALONE_ENVIRONMENT), 0),
        "default": ({}, 0),
        "passive": (dict(runtime.SHARING_ENVIRONMENT), 0),
    }
    chosen |= {f"spin={n}": ({"GOMP_SPINCOUNT": str(n)}, 0) for n in spins}
    return chosen | {f"threads={n}": (dict(runtime.ALONE_ENVIRONMENT), n) for n in fewer}


def voluntary_switches() -> dict[int, int]:
    """Voluntary context switches (a thread blocked: slept) of each thread of this process."""
    counts = {}
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                counts[int(task.name)] = int(line.split()[1])
    return counts


def worker(num_models: int, steps: int, threads: int) -> None:
    """Train `steps` steps of M models; print ms per step and the sleeps per step as JSON."""
    runtime.configure_cpu(threads)
    import throughput
    import torch

    trainer = throughput.make_trainer(num_models, throughput.EAGER_FP32, torch.device("cpu"))
    step = throughput.stepper(trainer)
    for _ in range(WARM_UP):
        step()
    before, start = voluntary_switches(), time.perf_counter()
    for _ in range(steps):
        step()
    seconds, after = time.perf_counter() - start, voluntary_switches()
    workers = sum(after[t] - before.get(t, 0) for t in after if t != os.getpid())
    print(json.dumps({"ms": seconds / steps * 1e3, "worker_sleeps": workers / steps}))


def measure(
    variables: dict[str, str], threads: int, num_models: int, args: argparse.Namespace
) -> dict:
    command = [sys.executable, __file__, "--worker", "--models", str(num_models)]
    command += ["--steps", str(args.steps), "--threads", str(threads or args.threads)]
    output = run_fresh(command, f"the worker for {variables or 'defaults'}", variables)
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="1,4,16")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--spins", default="", help="GNU OpenMP spin counts to try, e.g. 10000")
    parser.add_argument("--only", default="", help="the settings to run (lowdiff always runs)")
    parser.add_argument("--threads", type=int, default=0, help="0: every usable CPU")
    parser.add_argument("--fewer-threads", default="", help="lowdiff's wait on N threads, e.g. 1")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        spins = [int(n) for n in args.spins.split(",") if n]
        models = [int(m) for m in args.models.split(",")]
        fewer = [int(n) for n in args.fewer_threads.split(",") if n]
    except ValueError:
        parser.error(
            "--models, --spins and --fewer-threads take comma-separated integers, e.g. 1,4"
        )
    if args.steps < 1 or args.repeats < 1 or args.threads < 0 or any(m < 1 for m in models):
        parser.error("--steps, --repeats and each M >= 1; --threads >= 0")
    if any(n < 1 for n in fewer):
        parser.error("--fewer-threads: each thread count >= 1")
    args.threads = args.threads or runtime.available_cpus()
    if args.worker:
        worker(models[0], args.steps, args.threads)
        return
    if not Path("/proc/self/task").is_dir():
        parser.error("the sleeps are counted from /proc (Linux only)")
    chosen = settings(spins, fewer)
    only = {"lowdiff", *(name for name in args.only.split(",") if name)}
    if args.only and not only <= set(chosen):
        parser.error(f"--only: unknown setting among {sorted(only)}; known: {', '.join(chosen)}")
    chosen = {name: chosen[name] for name in chosen if not args.only or name in only}
    print(f"lowdiff alone: {runtime.ALONE_ENVIRONMENT}; {args.threads} threads; medians of")
    print(f"{args.repeats} repeats of {args.steps} steps; ratio to lowdiff's within a repeat")
    print(f"\n{'M':>4}  {'setting':<14} {'ms/step':>8} {'/ lowdiff':>10}  worker sleeps/step")
    for num_models in models:
        runs: dict[str, list[dict]] = {name: [] for name in chosen}
        for repeat in range(args.repeats):
            order = list(chosen.items())
            for name, (variables, threads) in order[:: -1 if repeat % 2 else 1]:
                runs[name].append(measure(variables, threads, num_models, args))
        for name, measured in runs.items():
            ratios = [m["ms"] / b["ms"] for m, b in zip(measured, runs["lowdiff"], strict=True)]
            ms = statistics.median(m["ms"] for m in measured)
            sleeps = statistics.median(m["worker_sleeps"] for m in measured)
            print(
                f"{num_models:>4}  {name:<14} {ms:8.2f} {statistics.median(ratios):9.2f}x "
                f"{sleeps:18.2f}"
            )


if __name__ == "__main__":
    main()
