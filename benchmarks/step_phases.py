"""Where the training step's time goes, phase by phase: forward, backward, clipping, AdamW.

Runs the real `Trainer.step` (eager fp32, the baseline) and times its phases by wrapping, for the
duration of the benchmark, what the step calls: `torch.Tensor.backward` (the forward pass is the
time from the step's start to it), `engine.clip_grad_norm_per_model`, the optimiser's `step` and
`engine.release_grads` (the "zero_grad" phase). Prints the median of each phase over the timed
steps, its share of the step, and the step's share of the `bmm` floor (throughput.py's), for
each M.

With --ops M it also times every ATen call of the step at that M (a dispatch mode around each
call; the calls run as they do in the step, one after another) and prints the costliest, grouped
by operator and input shapes, with the matrix products' total against the floor: what the step
would reach if everything but its products took no time.

    python benchmarks/step_phases.py [--models 1,4,16,64] [--steps 30] [--threads 0] [--ops 16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import throughput
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lowdiff import engine
from lowdiff.runtime import configure_cpu

PHASES = ("forward", "backward", "clipping", "AdamW", "zero_grad", "step")


def timing(record: Callable[[float, float], None], function: Callable) -> Callable:
    def timed(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record(start, time.perf_counter())

    return timed


@contextmanager
def phases_of(trainer: engine.Trainer) -> Iterator[dict[str, float]]:
    """Within the block, each `trainer.step` fills the dict with its phases' seconds."""
    times: dict[str, float] = {}
    marks: dict[str, float] = {}

    def phase(name: str) -> Callable[[float, float], None]:
        def record(start: float, end: float) -> None:
            times[name] = end - start
            marks[name] = start

        return record

    backward, clip, release = (
        torch.Tensor.backward,
        engine.clip_grad_norm_per_model,
        engine.release_grads,
    )
    timed_step = timing(phase("step"), trainer.step)

    def step(*args: object) -> object:
        times.clear()
        result = timed_step(*args)
        times["forward"] = marks["backward"] - marks["step"]
        return result

    torch.Tensor.backward = timing(phase("backward"), backward)
    engine.clip_grad_norm_per_model = timing(phase("clipping"), clip)
    trainer.optimizer.step = timing(phase("AdamW"), trainer.optimizer.step)
    engine.release_grads = timing(phase("zero_grad"), release)
    trainer.step = step
    try:
        yield times
    finally:
        torch.Tensor.backward, engine.clip_grad_norm_per_model = backward, clip
        engine.release_grads = release
        delattr(trainer.optimizer, "step")
        del trainer.step


def warmed(num_models: int) -> tuple[engine.Trainer, Callable[[], None]]:
    """The eager fp32 baseline's trainer and its stepper, after five warm-up steps."""
    trainer = throughput.make_trainer(num_models, throughput.EAGER_FP32, torch.device("cpu"))
    run = throughput.stepper(trainer)
    for _ in range(5):
        run()
    return trainer, run


def measure(num_models: int, steps: int, flops: int) -> None:
    cpu = torch.device("cpu")
    trainer, run = warmed(num_models)
    samples: dict[str, list[float]] = {name: [] for name in PHASES}
    with phases_of(trainer) as times:
        for _ in range(steps):
            run()
            for name in PHASES:
                samples[name].append(times[name])
    peak = throughput.bmm_rate(torch.float32, cpu, 1.0)
    median = {name: statistics.median(values) for name, values in samples.items()}
    cells = [f"{1e3 * median[n]:7.2f} ({median[n] / median['step']:4.0%})" for n in PHASES[:-1]]
    share = num_models * flops / peak / median["step"]
    print(f"{num_models:4d} " + " ".join(cells) + f" {1e3 * median['step']:8.2f} {share:10.0%}")


PRODUCTS = {"aten.bmm.default", "aten.baddbmm.default", "aten.mm.default", "aten.addmm.default"}


class CallTimes(TorchDispatchMode):
    """Seconds spent in each ATen call, by (operator, input shapes)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        shapes = " ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
        key = (str(func), shapes)
        start = time.perf_counter()
        result = func(*args, **(kwargs or {}))
        self.seconds[key] += time.perf_counter() - start
        self.calls[key] += 1
        return result


def ops(num_models: int, steps: int, flops: int, top: int = 25) -> None:
    cpu = torch.device("cpu")
    _, run = warmed(num_models)
    timer = CallTimes()
    before = throughput.bmm_rate(torch.float32, cpu, 1.0)
    with timer:
        for _ in range(steps):
            run()
    peak = (before + throughput.bmm_rate(torch.float32, cpu, 1.0)) / 2  # timed around the calls
    per_step = {key: seconds / steps for key, seconds in timer.seconds.items()}
    total = sum(per_step.values())
    products = sum(t for (name, _), t in per_step.items() if name in PRODUCTS)
    floor = num_models * flops / peak
    print(f"\nM = {num_models}: ATen calls, ms per step (the mean of {steps} steps)")
    for (name, shapes), seconds in sorted(per_step.items(), key=lambda item: -item[1])[:top]:
        calls = timer.calls[name, shapes] / steps
        print(f"{1e3 * seconds:8.3f} ms {calls:5.1f}x  {name:32} {shapes}")
    print(
        f"all calls {1e3 * total:.1f} ms per step; matrix products {1e3 * products:.1f} ms "
        f"({products / total:.0%}); the floor {1e3 * floor:.1f} ms: the products alone at "
        f"{floor / products:.0%} of it, everything else {1e3 * (total - products):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="1,4,16,64")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="0: lowdiff's choice")
    parser.add_argument("--ops", type=int, default=0, help="M whose ATen calls to time (0: none)")
    args = parser.parse_args()
    if args.steps < 1 or args.ops < 0:
        parser.error("--steps >= 1, --ops >= 0")
    configure_cpu(args.threads)
    cpu = torch.device("cpu")
    print(throughput.hardware(cpu))
    flops = throughput.step_flops(throughput.make_trainer(1, throughput.EAGER_FP32, cpu))
    print(f"eager fp32 baseline, ms per step (share of the step), median of {args.steps} steps;")
    print("floor: the step's FLOPs at the (16, 256, 256) bmm rate timed after its steps\n")
    header = " ".join(f"{name:>14}" for name in PHASES[:-1])
    print(f"{'M':>4} {header} {'step':>8} {'of floor':>10}")
    for num_models in (int(m) for m in args.models.split(",")):
        measure(num_models, args.steps, flops)
    if args.ops:
        ops(args.ops, args.steps, flops)


if __name__ == "__main__":
    main()
