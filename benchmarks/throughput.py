"""Throughput of the batched engine against M, and what running packs through Ray costs.

1. models x steps per second of the baseline training step for M = 1, 4, 16, 64 models in one
   batch (where memory allows) on the chosen device, with the hardware recorded.
2. The same tiny experiment run by the local executor and by Ray (a cluster on this machine
   with one CPU, so both run one pack at a time): wall time of each and Ray's overhead, with
   the cluster's start-up time apart.

Run it alone on the machine (other load changes the figures):

    python benchmarks/throughput.py [--models 1,4,16,64] [--steps 300] [--device auto]
                                    [--overhead-steps 1000] [--skip-overhead]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from lowdiff import config as config_module
from lowdiff.data import load
from lowdiff.engine import Member, TrainConfig, Trainer, resolve_device
from lowdiff.executors import ExecutorConfig, LocalExecutor, RayExecutor
from lowdiff.models import ModelConfig
from lowdiff.runtime import available_cpus, configure_cpu
from lowdiff.schedule import NoiseSchedule, ScheduleConfig

WARMUP_STEPS = 20


def hardware(device: torch.device) -> str:
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        model = names[0] if names else model
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (
        f"device {device} ({name}); CPU {model}, {os.cpu_count()} CPUs, {available_cpus()} "
        f"usable; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_steps(trainer: Trainer, steps: int) -> None:
    for step in range(steps):
        if step % 100 == 0:
            x0, t, eps = trainer.source.next_chunk(min(100, steps - step))
        trainer.step(x0[step % 100], t[step % 100], eps[step % 100])
        trainer.ema.update(trainer.model)


def models_steps_per_s(num_models: int, steps: int, device: torch.device) -> float | None:
    """models x steps / s of the baseline over `steps` timed steps; None if out of memory."""
    points = torch.from_numpy(load("dino"))
    members = [Member("dino", seed) for seed in range(num_models)]
    schedule = NoiseSchedule(ScheduleConfig(), device)
    try:
        trainer = Trainer(ModelConfig(), members, {"dino": points}, schedule, TrainConfig(), device)
        train_steps(trainer, WARMUP_STEPS)
        synchronize(device)
        start = time.perf_counter()
        train_steps(trainer, steps)
        synchronize(device)
    except torch.OutOfMemoryError:
        return None
    return num_models * steps / (time.perf_counter() - start)


# --- local against Ray ---------------------------------------------------------------------


def tiny_experiment(steps: int) -> config_module.ExperimentConfig:
    raw = {
        "experiment": {
            "name": "overhead",
            "datasets": ["moons", "line"],
            "seeds": [0, 1],
            "num_points": 5000,
            "oracle_draws": 1,
            "max_models_per_batch": 1,  # four packs
            "device": "cpu",
        },
        "train": {"num_steps": steps},
        "eval": {"num_samples": 1000},
        "runs": {"baseline": {"model": {"arch": "mlp"}}},
    }
    return config_module.resolve(raw, "overhead")


def timed_run(executor: object, steps: int, root: Path) -> float:
    from lowdiff import experiments

    start = time.perf_counter()
    executed = experiments.execute(tiny_experiment(steps), root, progress=False, executor=executor)
    if executed.failed:
        raise RuntimeError(f"packs failed: {executed.failed}")
    return time.perf_counter() - start


def overhead(steps: int) -> None:
    import ray

    torch.set_num_threads(1)  # as a Ray task with one CPU
    with tempfile.TemporaryDirectory() as scratch:
        local = timed_run(LocalExecutor(), steps, Path(scratch) / "local")
        start = time.perf_counter()
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - start
        try:
            executor = RayExecutor(ExecutorConfig(kind="ray", cpus_per_task=1))
            on_ray = timed_run(executor, steps, Path(scratch) / "ray")
        finally:
            ray.shutdown()
    print(f"\ntiny experiment (4 packs of 1 model), {steps} training steps per pack, one CPU:")
    print(f"local executor {local:8.2f} s")
    print(f"Ray            {on_ray:8.2f} s  (+ {startup:.2f} s to start the cluster)")
    print(f"Ray overhead   {100 * (on_ray - local) / local:+7.1f} % (start-up excluded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="1,4,16,64")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="0: lowdiff's choice")
    parser.add_argument("--overhead-steps", type=int, default=1000)
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    configure_cpu(args.threads)
    device = resolve_device(args.device)
    print(hardware(device))
    print(f"baseline training step, {args.steps} steps after {WARMUP_STEPS} of warm-up\n")
    print(f"{'M':>4} {'models x steps/s':>17} {'ms per step':>12}")
    for num_models in (int(m) for m in args.models.split(",")):
        rate = models_steps_per_s(num_models, args.steps, device)
        if rate is None:
            print(f"{num_models:4d} {'out of memory':>17}")
            continue
        print(f"{num_models:4d} {rate:17.0f} {1e3 * num_models / rate:12.2f}")
    if not args.skip_overhead:
        overhead(args.overhead_steps)


if __name__ == "__main__":
    main()
