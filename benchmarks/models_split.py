"""Intra-op threads against a split of the models: which uses two cores better at one M.

For each M, the same work two ways, alternated within each repeat:

- intra-op: one Trainer of M models, its step on all torch threads (lowdiff's way);
- models split: two Trainers of M/2 models, each stepped in its own Python thread with one
  torch thread (torch releases the GIL inside its kernels, so the two run at once).

It prints ms per model-step of each and their ratio per repeat, then the median ratio
(above 1: the split is faster). Each model's numbers are the same either way: a model's
training does not depend on its batch-mates or on the thread count (tests/test_engine.py).
Two lowdiff processes of M/2 models each are the same split across processes:
`benchmarks/concurrency.py` prints it as all/alone.

    python benchmarks/models_split.py [--models 16,64] [--repeats 6] [--seconds 3]

Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable

import torch
from throughput import EAGER_FP32, hardware, make_trainer, stepper

from lowdiff.runtime import configure_cpu


def split_seconds(steppers: list[Callable[[], None]], steps: int) -> float:
    """Wall seconds of `steps` steps of every stepper, each in its own thread, one torch thread."""

    def work(step: Callable[[], None]) -> None:
        for _ in range(steps):
            step()

    threads = [threading.Thread(target=work, args=(step,)) for step in steppers]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="16,64", help="M values, each even")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0, help="per timing, about")
    args = parser.parse_args()
    models = [int(m) for m in args.models.split(",")]
    if any(m < 2 or m % 2 for m in models) or args.repeats < 1 or args.seconds <= 0:
        parser.error("--models: even numbers >= 2; --repeats >= 1; --seconds > 0")
    configure_cpu(0)  # lowdiff's choice of threads, as throughput.py
    device = torch.device("cpu")
    threads = torch.get_num_threads()
    print(hardware(device))
    for num_models in models:
        whole = stepper(make_trainer(num_models, EAGER_FP32, device))
        halves = [stepper(make_trainer(num_models // 2, EAGER_FP32, device)) for _ in range(2)]
        for step in (whole, *halves):  # warm-up: allocator, first data chunk
            for _ in range(3):
                step()
        start = time.perf_counter()
        whole()
        steps = max(2, round(args.seconds / (time.perf_counter() - start)))
        ratios = []
        for _ in range(args.repeats):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            for _ in range(steps):
                whole()
            intra = (time.perf_counter() - start) / steps / num_models
            torch.set_num_threads(1)
            split = split_seconds(halves, steps) / steps / num_models
            torch.set_num_threads(threads)
            ratios.append(intra / split)
            print(
                f"M = {num_models}: intra-op ({threads} threads) {intra * 1e3:.3f} ms per "
                f"model-step, models split (2 x 1 thread) {split * 1e3:.3f}, "
                f"ratio {ratios[-1]:.2f}",
                flush=True,
            )
        print(f"M = {num_models}: median ratio intra-op / split {statistics.median(ratios):.2f}\n")


if __name__ == "__main__":
    main()
