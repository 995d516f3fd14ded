"""Training and sampling speed of the batched engine against a plain single-model loop, and
of the real pipeline (what `lowdiff run` / `lowdiff train` do) against the engine's bare step.

Prints ms per model-step of the baseline training step for M = 1, 4, 16 (and more with --models),
the same for a plain loop written the usual way (DataLoader over a TensorDataset, one nn.Module,
AdamW, clipping, EMA, one Python step at a time), their ratio, the ms per model-step of every
architecture family, and the time to sample 10,000 points x 100 steps per model.

The pipeline rows run `lowdiff train --datasets ... --seeds ...` itself, as a user runs it: a
new process started without thread or OpenMP wait settings, which chooses them as the command
line does (threads shared among busy processes, a spin before sleeping when alone; docs/speed.md,
"Threads"), then trains (packs, data order, random-number chunks, learning-rate schedule, EMA,
divergence checks, checkpoints, progress) and evaluates; its training time is read from
cell.json. Right after it, each in a new process of its own, the engine's bare step of the same
M (CPU set up as the command line sets it, so the gap is the loop's) and the plain loop (torch's
defaults, as a user's script has them); repeated and interleaved, each ratio taken within a
repeat.

    python benchmarks/train_speed.py [--steps 60] [--models 1,4,16] [--device cpu|cuda]
                                     [--pipeline-steps 300] [--pipeline-models 1,4,16]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from concurrency import run_fresh
from repeats import Repeats
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lowdiff.data import load
from lowdiff.engine import CHUNK_STEPS, Member, TrainConfig, Trainer, resolve_device
from lowdiff.models import ModelConfig
from lowdiff.models.reference import PlainMLPDenoiser
from lowdiff.runtime import configure_cpu
from lowdiff.samplers import sample
from lowdiff.schedule import NoiseSchedule, ScheduleConfig

FAMILIES = {
    "mlp (baseline)": ModelConfig(),
    "dual_scale fixed": ModelConfig(arch="dual_scale", weighting="fixed"),
    "dual_scale learned": ModelConfig(arch="dual_scale", weighting="learned"),
    "dual_scale learned_deep": ModelConfig(arch="dual_scale", weighting="learned_deep"),
    "dual_expert simple": ModelConfig(arch="dual_expert"),
    "dual_expert enhanced+larger": ModelConfig(
        arch="dual_expert", gate="enhanced", larger_experts=True
    ),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_stepper(points: torch.Tensor, device: torch.device) -> Callable[[], torch.Tensor]:
    """One step of the plain single-model loop per call, written the usual way: a DataLoader
    over a TensorDataset (reshuffled every epoch, the last partial batch dropped), one
    nn.Module, AdamW, clipping, and an EMA updated every 10 steps. A step returns its loss."""
    schedule = NoiseSchedule(ScheduleConfig(), device)
    model = PlainMLPDenoiser().to(device)
    ema = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    loader = DataLoader(TensorDataset(points), batch_size=256, shuffle=True, drop_last=True)
    state = {"batches": iter(loader), "step": 0}

    def step() -> torch.Tensor:
        batch = next(state["batches"], None)
        if batch is None:  # a new epoch
            state["batches"] = iter(loader)
            batch = next(state["batches"])
        x0 = batch[0].to(device)
        eps = torch.randn_like(x0)
        t = torch.randint(0, 100, (x0.shape[0],), device=device)
        loss = nn.functional.mse_loss(model(schedule.add_noise(x0, eps, t), t), eps)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        optimizer.zero_grad()
        if state["step"] % 10 == 0:
            with torch.no_grad():
                for p, q in zip(ema.parameters(), model.parameters(), strict=True):
                    p.lerp_(q, 0.005)
        state["step"] += 1
        return loss.detach()

    return step


def plain_loop_ms(points: torch.Tensor, steps: int, device: torch.device) -> float:
    """Median ms per step of `plain_stepper` over blocks of 10 steps (the first block warm-up)."""
    step = plain_stepper(points, device)
    block_times = []
    for block in range(steps // 10 + 1):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(10):
            step()
        synchronize(device)
        if block:
            block_times.append((time.perf_counter() - start) / 10)
    return statistics.median(block_times) * 1e3


def plain_cpu_ms(steps: int) -> float:
    """plain_loop_ms on dino, on the CPU."""
    return plain_loop_ms(torch.from_numpy(load("dino")), steps, torch.device("cpu"))


def engine_ms(
    config: ModelConfig, num_models: int, points: torch.Tensor, steps: int, device: torch.device
) -> float:
    """Median ms per model-step of the batched engine over blocks of 10 steps (after warm-up).

    Includes drawing the random numbers (one chunk per CHUNK_STEPS steps) and the EMA update.
    """
    members = [Member("dino", seed) for seed in range(num_models)]
    schedule = NoiseSchedule(ScheduleConfig(), device)
    trainer = Trainer(config, members, {"dino": points}, schedule, TrainConfig(), device)
    block_times, step = [], 0
    for block in range(steps // 10 + 1):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(10):
            if step % CHUNK_STEPS == 0:
                x0, t, eps = trainer.source.next_chunk(CHUNK_STEPS)
            k = step % CHUNK_STEPS
            trainer.step(x0[k], t[k], eps[k])
            trainer.ema.update(trainer.model)
            step += 1
        synchronize(device)
        if block:  # the first block is warm-up
            block_times.append((time.perf_counter() - start) / 10)
    return statistics.median(block_times) / num_models * 1e3


PIPELINE_DATASETS = ("circle", "dino", "line", "moons")


def train_arguments(num_models: int, steps: int, out: Path, threads: int = 0) -> list[str]:
    """`lowdiff train`'s arguments for M models of the baseline, with a small evaluation."""
    datasets = PIPELINE_DATASETS[: min(num_models, 4)]
    seeds = range(max(1, num_models // len(datasets)))
    settings = {
        "train.num_steps": steps,
        "eval.num_samples": 500,
        "eval.process_snapshots": 0,
        "eval.ground_truth": "false",
        "experiment.oracle_draws": 1,
    }
    arguments = ["train", "--model", "mlp", "--datasets", ",".join(datasets)]
    arguments += ["--seeds", ",".join(map(str, seeds)), "--out", str(out), "--device", "cpu"]
    for key, value in settings.items():
        arguments += ["--set", f"{key}={value}"]
    return arguments + (["--threads", str(threads)] if threads else [])


def pipeline_ms(num_models: int, steps: int, threads: int = 0) -> float:
    """ms per model-step of the training loop of `lowdiff train` (cell.json's batch record)."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "pipeline"
        arguments = train_arguments(num_models, steps, out, threads)
        run_fresh([sys.executable, "-m", "lowdiff.cli", *arguments], "lowdiff train")
        record = json.loads(next(out.rglob("cell.json")).read_text())
    batch = record["batch"]
    return batch["training_time"] / steps / batch["models"] * 1e3


def in_new_process(call: str, threads: int, *, as_lowdiff: bool) -> float:
    """The value of `call` (an expression of this module's functions) evaluated in a new
    process. `as_lowdiff`: its CPU set up first as the command line sets it up (OpenMP wait
    policy before torch loads, threads, allocator); else torch's defaults, as a user's script
    has them. `threads` > 0 fixes the thread count either way."""
    setup = "from lowdiff import runtime\n"
    if as_lowdiff:
        setup += f"runtime.share_cpu_environment()\nruntime.configure_cpu({threads})\n"
    elif threads:
        setup += f"runtime.limit_threads({threads})\n"
    code = f"{setup}import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
    code += f"import torch, train_speed\nprint(train_speed.{call})\n"
    return float(run_fresh([sys.executable, "-c", code], call).strip().splitlines()[-1])


def bare_ms(num_models: int, steps: int, device: torch.device) -> float:
    """ms per model-step of the engine's bare step over `steps` steps, on the pipeline's data."""
    names = [PIPELINE_DATASETS[m % 4] for m in range(num_models)]
    tensors = {name: torch.from_numpy(load(name)) for name in set(names)}
    members = [Member(name, m // 4) for m, name in enumerate(names)]
    schedule = NoiseSchedule(ScheduleConfig(), device)
    trainer = Trainer(ModelConfig(), members, tensors, schedule, TrainConfig(), device)
    synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        if step % CHUNK_STEPS == 0:
            x0, t, eps = trainer.source.next_chunk(min(CHUNK_STEPS, steps - step))
        k = step % CHUNK_STEPS
        trainer.step(x0[k], t[k], eps[k])
        trainer.ema.update(trainer.model)
    synchronize(device)
    return (time.perf_counter() - start) / steps / num_models * 1e3


@dataclass
class PipelineGap:
    """One M of the pipeline comparison: a value per repeat, ratios within a repeat."""

    real_ms: Repeats  # ms per model-step of the real pipeline's training loop
    bare_ms: Repeats  # the engine's bare step on the same data
    plain_ms: Repeats  # the plain single-model loop
    gap: Repeats  # real / bare - 1
    over_plain: Repeats  # real / plain


def pipeline_gaps(
    models: list[int], steps: int, repeats: int, threads: int = 0
) -> dict[int, PipelineGap]:
    """`lowdiff train` against the bare step and the plain loop, each in a new process and
    interleaved: each repeat runs all three and each ratio is taken within a repeat, so a machine
    whose speed drifts (a shared host) moves both sides of every ratio together."""
    gaps = {}
    for num_models in models:
        real, bare, plain = [], [], []
        for _ in range(repeats):
            real.append(pipeline_ms(num_models, steps, threads))
            bare_call = f"bare_ms({num_models}, {steps}, torch.device('cpu'))"
            bare.append(in_new_process(bare_call, threads, as_lowdiff=True))
            plain.append(in_new_process(f"plain_cpu_ms({steps})", threads, as_lowdiff=False))
        gaps[num_models] = PipelineGap(
            Repeats.of(real),
            Repeats.of(bare),
            Repeats.of(plain),
            Repeats.of(r / b - 1 for r, b in zip(real, bare, strict=True)),
            Repeats.of(r / p for r, p in zip(real, plain, strict=True)),
        )
    return gaps


def pipeline_gap(models: list[int], steps: int, repeats: int, threads: int) -> None:
    """Print pipeline_gaps: medians of the repeats."""
    print(f"\n`lowdiff train` ({steps} steps) against the bare engine step, each in a new process")
    for num_models, gap in pipeline_gaps(models, steps, repeats, threads).items():
        print(
            f"M={num_models:<3} pipeline {gap.real_ms.median:6.2f} ms/model-step, bare step "
            f"{gap.bare_ms.median:6.2f} ({100 * gap.gap.median:+.1f} %), plain loop "
            f"{gap.plain_ms.median:6.2f}, pipeline/plain loop {gap.over_plain.median:.2f}"
        )


def sampling_s(num_models: int, points: torch.Tensor, device: torch.device) -> float:
    members = [Member("dino", seed) for seed in range(num_models)]
    schedule = NoiseSchedule(ScheduleConfig(), device)
    trainer = Trainer(
        ModelConfig(), members, {"dino": points}, schedule, TrainConfig(num_steps=1), device
    )
    generators = [g["sample"] for g in trainer.generators]
    drawn = sample(trainer.ema.model, schedule, generators, device, num_samples=10_000)
    return drawn.inference_time / num_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--models", default="1,4,16")
    parser.add_argument("--family-models", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--skip-families", action="store_true")
    parser.add_argument("--pipeline-steps", type=int, default=300)
    parser.add_argument("--pipeline-models", default="1,4,16", help="'' to skip")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configure_cpu(args.threads, register=False)  # the `lowdiff train`s it starts must not see it
    device = resolve_device(args.device)
    points = torch.from_numpy(load("dino")).to(device)
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    plain = plain_loop_ms(points.cpu() if device.type == "cpu" else points, args.steps, device)
    print(f"plain single-model loop (DataLoader): {plain:7.2f} ms/model-step")
    for num_models in (int(m) for m in args.models.split(",")):
        ms = engine_ms(ModelConfig(), num_models, points, args.steps, device)
        ratio = plain / ms
        print(
            f"engine baseline M={num_models:<3} {ms:6.2f} ms/model-step, plain/engine {ratio:.2f}x"
        )
    if args.pipeline_models and device.type == "cpu":
        models = [int(m) for m in args.pipeline_models.split(",")]
        pipeline_gap(models, args.pipeline_steps, args.repeats, args.threads)
    if not args.skip_families:
        base = None
        for name, config in FAMILIES.items():
            ms = engine_ms(config, args.family_models, points, args.steps, device)
            base = base or ms
            relative = ms / base
            print(
                f"family {name:26} M={args.family_models} {ms:6.2f} ms/model-step ({relative:.2f}x)"
            )
    for num_models in (1, 4):
        seconds = sampling_s(num_models, points, device)
        print(f"sampling 10,000 points x 100 steps, M={num_models}: {seconds:6.2f} s per model")


if __name__ == "__main__":
    main()
