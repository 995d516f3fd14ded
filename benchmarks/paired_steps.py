"""Two training steps timed against each other, turn by turn: a change against the code before it
(two source trees), or two variants in one tree.

Each side is a worker process with its tree's `src/` and `benchmarks/` first on its path, the
baseline's trainer of M models in its variant (`throughput.make_trainer`, compiled variants
compiled in the warm-up), and its CPU set up as the command line sets it up. The parent tells one
worker at a time to take a turn of --turn steps (the real `Trainer.step` with its data chunks and
EMA, as `throughput.stepper` takes it) and reads back their mean time: A then B, then B then A,
and so on, so that neighbouring turns see the same host. It prints the median of the per-pair
ratios B / A of the time per model-step, their interquartile range, and a 95 % bootstrap interval
of the median. Both workers take the OpenMP wait of a lone process, and each turn starts `GAP_S`
after the last one ended, when the other worker's threads have stopped spinning.

Variant "plain" is the plain single-model loop a user would write (`train_speed.plain_stepper`:
DataLoader, nn.Module, AdamW, clipping, EMA) with torch's defaults for threads and OpenMP wait,
as a user's script has them, and always one model: against it, the ratio the one-model speed
aim is about (`lowdiff train` adds its pipeline's few per cent to the bare step, train_speed.py).

--b-env NAME=VALUE sets an environment variable for side B alone (one tree and variant on both
sides then compares a setting: an inductor option such as TORCHINDUCTOR_MAX_AUTOTUNE, an OpenMP
one).

On a shared host, repeats of a few hundred steps vary by ±14 %, which hides a 1-3 % change.
Paired turns scatter by some ±3 % (the interquartile range), and A/A runs (one tree against
itself) gave 95 % intervals of the median of 0.993-1.002 (eager fp32, M = 1, 400 pairs of ten
steps) and 0.992-1.008 (compiled bf16, M = 16, 200 pairs of five; docs/speed.md, "Steps timed
in pairs"). Single-step turns (--turn 1) start each step with the threads asleep and cold
caches: at M = 1 that step took 7.4 ms instead of 5.2, and its pairs scattered by ±14 %.

    git worktree add /tmp/before HEAD     # the code before a change, beside the working tree
    python benchmarks/paired_steps.py --a /tmp/before --variant "bf16 compiled" [--models 16]
    python benchmarks/paired_steps.py --variant fp32 --b-variant "fp32 compiled" [--pairs 200]
    python benchmarks/paired_steps.py --variant plain --b-variant fp32 --models 1 --turn 10
    python benchmarks/paired_steps.py --variant "bf16 compiled" --b-env TORCHINDUCTOR_MAX_AUTOTUNE=1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats
from tqdm import tqdm

VARIANTS = ("fp32", "bf16", "fp32 compiled", "bf16 compiled")
PLAIN = "plain"  # the plain single-model loop (train_speed.plain_stepper), one model
# Before each turn the parent waits this long, so that the other worker's OpenMP threads, which
# spin some 1-5 ms after their last parallel region (runtime.ALONE_ENVIRONMENT), sleep again.
GAP_S = 0.01
TURN = 5  # steps a side takes per turn: one step alone starts cold (docstring)

# The worker: set up as a lone `lowdiff` process sets itself up (both sides alike: the second
# to start would otherwise see the first as load and sleep at every barrier), or for the plain
# loop with torch's defaults, as a user's script has them; then N steps per "steps N" line on
# stdin, their mean seconds per model-step on the protocol stream (stdout; anything the library
# prints goes to stderr).
WORKER = """
import sys
protocol, sys.stdout = sys.stdout, sys.stderr
tree, variant, models, threads, warmup = sys.argv[1:6]
sys.path[:0] = [tree + "/src", tree + "/benchmarks"]
from lowdiff import runtime
if variant == "plain":
    if int(threads):
        runtime.limit_threads(int(threads))
else:
    runtime.share_cpu_environment(alone=True)
    runtime.configure_cpu(int(threads), register=False)
import tempfile, time
from pathlib import Path
import lowdiff, torch, throughput, train_speed
from lowdiff import compilation
from lowdiff.data import load
precision, _, compiled = variant.partition(" ")
with tempfile.TemporaryDirectory(prefix="lowdiff-paired-") as folder:
    scratch = Path(folder) if compiled else None
    if variant == "plain":
        models = 1
        step = train_speed.plain_stepper(torch.from_numpy(load("dino")), torch.device("cpu"))
    else:
        variant = throughput.Variant(precision, bool(compiled))
        trainer = throughput.make_trainer(int(models), variant, torch.device("cpu"), scratch)
        step = throughput.stepper(trainer)
    with compilation.scratch(scratch):
        for _ in range(int(warmup)):
            step()
        lowdiff_from = Path(lowdiff.__file__).resolve()
        print("ready", torch.get_num_threads(), lowdiff_from, file=protocol, flush=True)
        for line in sys.stdin:
            word, _, count = line.partition(" ")
            if word != "steps":
                break
            start = time.perf_counter()
            for _ in range(int(count)):
                step()
            seconds = (time.perf_counter() - start) / int(count) / int(models)
            print(seconds, file=protocol, flush=True)
"""


class Worker:
    """A process that answers each `steps(n)` with the mean seconds per model-step of its n
    steps; `threads` and `ready` (where its lowdiff came from) are what it reported at its start."""

    def __init__(self, command: list[str], environment: dict[str, str] | None = None) -> None:
        """`environment`: variables set for this worker on top of the parent's."""
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, **(environment or {})},
        )
        # "ready THREADS PATH": the worker's torch threads and where its lowdiff came from
        started = self._line("its start").removeprefix("ready").strip()
        threads, _, self.ready = started.partition(" ")
        self.threads = int(threads)

    def _line(self, waiting_for: str) -> str:
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"a worker stopped (exit {code}) before {waiting_for}")
        return line

    def steps(self, count: int) -> float:
        self.process.stdin.write(f"steps {count}\n")
        return float(self._line("answering a turn"))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


@dataclass(frozen=True)
class Paired:
    a: tuple[float, ...]  # seconds per model-step of A's turns, in the order they ran
    b: tuple[float, ...]

    @property
    def ratios(self) -> np.ndarray:
        return np.asarray(self.b) / np.asarray(self.a)

    @property
    def a_median(self) -> float:
        return statistics.median(self.a)

    @property
    def b_median(self) -> float:
        return statistics.median(self.b)

    def median_interval(self) -> tuple[float, float]:
        """A 95 % bootstrap interval of the median of B / A (seeded: the same for the same
        times)."""
        interval = stats.bootstrap(
            (self.ratios,), np.median, confidence_level=0.95, n_resamples=2000, random_state=0
        ).confidence_interval
        return float(interval.low), float(interval.high)

    def summary(self) -> str:
        ratios = self.ratios
        low, high = np.quantile(ratios, [0.25, 0.75])
        interval = self.median_interval()
        return (
            f"A {1e3 * self.a_median:.2f} ms, B {1e3 * self.b_median:.2f}"
            f" ms a model-step (medians); B / A: median {np.median(ratios):.3f} of"
            f" {len(ratios)} pairs, interquartile range {low:.3f}-{high:.3f}, 95 % interval of"
            f" the median {interval[0]:.3f}-{interval[1]:.3f}"
        )


@contextlib.contextmanager
def running(commands: list[tuple[list[str], dict[str, str]]]) -> Iterator[list[Worker]]:
    """A worker for each (command, environment), started one after the other (each ready
    before the next starts), all closed on leaving."""
    workers: list[Worker] = []
    try:
        for command, environment in commands:
            workers.append(Worker(command, environment))
        yield workers
    finally:
        for worker in workers:
            worker.close()


def paired(a: Worker, b: Worker, pairs: int, turn_steps: int = TURN) -> Paired:
    """`pairs` turns of `turn_steps` steps each, A B then B A, and so on."""
    times: dict[str, list[float]] = {"A": [], "B": []}
    workers = {"A": a, "B": b}
    for index in tqdm(range(pairs), desc="pairs", unit="pair", disable=None):
        for side in "AB" if index % 2 == 0 else "BA":
            time.sleep(GAP_S)
            times[side].append(workers[side].steps(turn_steps))
    return Paired(tuple(times["A"]), tuple(times["B"]))


def worker_command(tree: Path, variant: str, models: int, threads: int, warmup: int) -> list[str]:
    arguments = [str(tree), variant, str(models), str(threads), str(warmup)]
    return [sys.executable, "-c", WORKER, *arguments]


def checked_tree(value: str) -> Path:
    tree = Path(value).resolve()
    if not (tree / "src" / "lowdiff" / "engine.py").is_file():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a lowdiff source tree (no src/lowdiff/engine.py): give a checkout, "
            "e.g. one made by `git worktree add /tmp/before HEAD`"
        )
    if not (tree / "benchmarks" / "throughput.py").is_file():
        raise argparse.ArgumentTypeError(f"{value!r} has no benchmarks/throughput.py")
    return tree


def environment_setting(value: str) -> tuple[str, str]:
    """NAME=VALUE (--b-env) as (name, value)."""
    name, equals, setting = value.partition("=")
    if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not NAME=VALUE with NAME a variable's name, e.g. "
            "TORCHINDUCTOR_MAX_AUTOTUNE=1"
        )
    return name, setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--a", type=checked_tree, default=here, help="source tree of side A")
    parser.add_argument("--b", type=checked_tree, default=here, help="source tree of side B")
    choices = (*VARIANTS, PLAIN)
    parser.add_argument("--variant", choices=choices, default="fp32", help="A's (and B's)")
    parser.add_argument("--b-variant", choices=choices, help="B's, if not --variant")
    parser.add_argument(
        "--b-env",
        type=environment_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable set for B alone (repeatable), e.g. an inductor option",
    )
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--turn", type=int, default=TURN, help="steps a side takes per turn")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps, compiling")
    parser.add_argument("--threads", type=int, default=0, help="0: lowdiff's own choice")
    args = parser.parse_args()
    if min(args.models, args.turn, args.warmup) < 1 or args.pairs < 4:
        parser.error("--models, --turn and --warmup must be at least 1, --pairs at least 4")
    b_variant = args.b_variant or args.variant
    if args.a == args.b and b_variant == args.variant and not args.b_env:
        print("note: A and B are the same tree and variant (an A/A run: the ratio should be 1)")
    sides = {"A": (args.a, args.variant, {}), "B": (args.b, b_variant, dict(args.b_env))}
    started = time.perf_counter()
    commands = [
        (worker_command(tree, variant, args.models, args.threads, args.warmup), environment)
        for tree, variant, environment in sides.values()
    ]
    with running(commands) as workers:
        for (side, (_, variant, environment)), worker in zip(sides.items(), workers, strict=True):
            models = 1 if variant == PLAIN else args.models
            settings = "".join(f", {name}={value}" for name, value in environment.items())
            print(
                f"{side}: {variant}, M = {models}{settings}, {worker.threads} threads, "
                f"lowdiff from {worker.ready}"
            )
        result = paired(*workers, args.pairs, args.turn)
    print(result.summary())
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
