"""Cost of the ground-truth evaluation per model against one full-protocol training.

Measures, for M baseline models of dino and moons trained as one batch: the engine's ms per
model-step (median over blocks of 10 steps after warm-up, extrapolated to the protocol's 10,000
steps), and the wall clock of `lowdiff.ground_truth.measure_batch` (excess loss at every
timestep, exact probability-flow ODE likelihood, sample log-density) with the default eval
settings, divided by M. The datasets' own ground truth (floors, entropy: once per results
directory, cached in oracle.json) is computed before the timing starts and printed apart.
Target: ground truth per model <= 25 % of one model's training.

    python benchmarks/ground_truth.py [--models 4] [--steps 40]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from lowdiff import truth
from lowdiff.data import load
from lowdiff.engine import CHUNK_STEPS, Member, TrainConfig, Trainer
from lowdiff.ground_truth import measure_batch
from lowdiff.machine import machine
from lowdiff.models import ModelConfig
from lowdiff.schedule import NoiseSchedule, ScheduleConfig
from lowdiff.settings import EvalConfig

DATASETS = ("dino", "moons")


def training_ms(trainer: Trainer, steps: int) -> float:
    """Median ms per model-step over blocks of 10 steps, the first block (warm-up) dropped."""
    blocks, step = [], 0
    for _ in range(steps // 10 + 1):
        start = time.perf_counter()
        for _ in range(10):
            if step % CHUNK_STEPS == 0:
                x0, t, eps = trainer.source.next_chunk(CHUNK_STEPS)
            trainer.step(x0[step % CHUNK_STEPS], t[step % CHUNK_STEPS], eps[step % CHUNK_STEPS])
            trainer.ema.update(trainer.model)
            step += 1
        blocks.append((time.perf_counter() - start) / 10)
    return 1000 * statistics.median(blocks[1:]) / len(trainer.members)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    device = torch.device("cpu")
    names = [DATASETS[m % len(DATASETS)] for m in range(args.models)]
    members = [Member(name, seed) for seed, name in enumerate(names)]
    points = {name: torch.from_numpy(load(name)) for name in DATASETS}
    schedule = NoiseSchedule(ScheduleConfig(), device)
    trainer = Trainer(ModelConfig(), members, points, schedule, TrainConfig(), device)
    alpha_bar, config = schedule.alpha_bar64.numpy(), EvalConfig()
    start = time.perf_counter()
    for name in DATASETS:  # once per dataset and results directory (oracle.json)
        truth.dataset_truth(name, alpha_bar, config.ground_truth_points)
    per_dataset = (time.perf_counter() - start) / len(DATASETS)
    step_ms = training_ms(trainer, args.steps)
    train_s = step_ms * TrainConfig().num_steps / 1000
    samples = np.stack([load(name, config.num_samples, seed=5) for name in names])
    start = time.perf_counter()
    measure_batch(trainer.ema.model, names, alpha_bar, samples, config, device)
    truth_s = (time.perf_counter() - start) / args.models
    print(f"machine: {machine()}  threads: {torch.get_num_threads()}  M = {args.models}")
    print(f"training: {step_ms:.2f} ms per model-step -> {train_s:.1f} s per 10,000-step model")
    print(
        f"ground truth per model: {truth_s:.1f} s = {100 * truth_s / train_s:.1f} % (target 25 %)"
    )
    print(f"per dataset, once (floors, entropy, oracle values): {per_dataset:.1f} s")


if __name__ == "__main__":
    main()
