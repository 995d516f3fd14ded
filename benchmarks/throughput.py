"""How lowdiff's cost grows: training throughput against M and precision, the machine's floor,
and what evaluating a model costs beside training it.

1. models x steps per second of the baseline training step (the engine's step with its data
   chunks and EMA, as `Trainer.run` takes it) for M = 1, 4, 16, 64, in fp32 and, where the
   device has native bf16, in bf16 (`train.precision`), and with --compile each of them
   through torch.compile as well (`train.compile`). The variants alternate, each timed over at
   least --seconds, and the median of --repeats is printed with its ratio to eager fp32 (the
   default) in the same repeat, so the ratio comes from one run under one load.
2. The floor: the step's matrix-product FLOPs (counted by torch.utils.flop_counter) at the
   measured rate of a batched 256 x 256 `bmm` in each precision, and the fraction of that floor
   the step reaches (its bmm timed in slices alternating with the step's, in each repeat).
3. Sampling 10,000 points x 100 steps per model (ancestral), each variant (`eval.precision`,
   `eval.compile`; a compiled network is timed after one untimed draw that compiles it),
   against its own floor (the bmm timed just before and after each draw) and against eager fp32.
4. Evaluation per model at the protocol's sizes against its training: eval loss over the
   100,000 training points, sampling, every metric of `metrics.measure` (each function it calls,
   timed by cProfile, so a new metric appears by itself) and the dataset's reference (k-NN radii,
   once per dataset and process), beside 10,000 training steps at the M = 16 rate.
5. The same tiny experiment through the local executor and through Ray (--skip-overhead: not).

    python benchmarks/throughput.py [--models 1,4,16,64] [--quick] [--threads 0] [--compile]
                                    [--device auto] [--skip-overhead] [--overhead-steps 1000]

--quick: M = 1, 4, 16, shorter timings, 2,000 samples, no Ray (a check in about a minute).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from repeats import Repeats
from torch.utils.flop_counter import FlopCounterMode

from lowdiff import compilation
from lowdiff import config as config_module
from lowdiff.data import load
from lowdiff.engine import CHUNK_STEPS, Member, TrainConfig, Trainer, resolve_device
from lowdiff.evaluation import eval_loss
from lowdiff.executors import ExecutorConfig, LocalExecutor, RayExecutor
from lowdiff.metrics import load_reference, measure
from lowdiff.models import ModelConfig, build_model
from lowdiff.models.reference import PlainMLPDenoiser
from lowdiff.precision import autocast, bf16_missing
from lowdiff.runtime import available_cpus, configure_cpu
from lowdiff.samplers import sample
from lowdiff.schedule import NoiseSchedule, ScheduleConfig

DATASETS = ("circle", "dino", "line", "moons")
PROTOCOL_STEPS = 10_000
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Variant:
    """How the network runs: `train.precision` / `eval.precision`, and `*.compile`."""

    precision: str
    compile: bool = False

    @property
    def name(self) -> str:
        return self.precision + (" compiled" if self.compile else "")


EAGER_FP32 = Variant("fp32")  # the default, which every ratio is taken against


def hardware(device: torch.device) -> str:
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        model = names[0] if names else model
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    load_average = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"device {device} ({name}); CPU {model}, {os.cpu_count()} CPUs, {available_cpus()} "
        f"usable; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"load average {load_average}"
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(run: Callable[[], None], device: torch.device, seconds: float) -> float:
    """Seconds per call of `run`, calling it until at least `seconds` have passed."""
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


# --- 1. training throughput ---------------------------------------------------------------


def make_trainer(
    num_models: int, variant: Variant, device: torch.device, scratch: Path | None = None
) -> Trainer:
    """The baseline's trainer; a compiled variant needs `scratch`, and its steps must run
    inside `compilation.scratch(scratch)`."""
    names = [DATASETS[m % len(DATASETS)] for m in range(num_models)]
    tensors = {name: torch.from_numpy(load(name)) for name in set(names)}
    members = [Member(name, m // len(DATASETS)) for m, name in enumerate(names)]
    schedule = NoiseSchedule(ScheduleConfig(), device)
    config = TrainConfig(precision=variant.precision, compile=variant.compile)
    return Trainer(ModelConfig(), members, tensors, schedule, config, device, scratch)


def stepper(trainer: Trainer) -> Callable[[], None]:
    """One training step per call, data drawn in chunks as `Trainer.run` draws them."""
    state = {"step": 0, "chunk": None}

    def step() -> None:
        k = state["step"] % CHUNK_STEPS
        if k == 0:
            state["chunk"] = trainer.source.next_chunk(CHUNK_STEPS)
        x0, t, eps = state["chunk"]
        trainer.step(x0[k], t[k], eps[k])
        trainer.ema.update(trainer.model)
        state["step"] += 1

    return step


def step_flops(trainer: Trainer) -> int:
    """FLOPs of one training step of all M models (matrix products, forward and backward)."""
    x0, t, eps = trainer.source.next_chunk(1)
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.step(x0[0], t[0], eps[0])
    return counter.get_total_flops()


def written_network_flops(batch: int = 256) -> tuple[int, int]:
    """(forward, training step) FLOPs of one model of the protocol's network as written (one
    nn.Linear per layer on the joint embedding: PlainMLPDenoiser), a batch of `batch`.

    The speed aim's floor (454 MFLOP per model-step at the bmm rate) is three times this forward
    pass, the usual count of a training step; the plain network's step itself performs less (its
    first layer's input needs no gradient), and lowdiff's factorised first layer less again."""
    model = PlainMLPDenoiser()
    x, t = torch.zeros(batch, 2), torch.zeros(batch, dtype=torch.long)
    forward, step = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with forward, torch.no_grad():
        model(x, t)
    with step:
        model(x, t).square().mean().backward()
    return forward.get_total_flops(), step.get_total_flops()


def aim_floor_flops() -> int:
    """The speed aim's floor per model-step: three times the written network's forward pass."""
    return 3 * written_network_flops()[0]


@dataclass
class Rate:
    """One (M, precision) of the training table: a value per repeat (their medians printed)."""

    models_steps: Repeats  # models x steps / s
    of_floor: Repeats  # the step's FLOP rate over the bmm rate timed alternately with it
    over_fp32: Repeats  # models_steps over eager fp32's in the same repeat (1 for it itself)


def training_rates(
    models: list[int],
    variants: list[Variant],
    args: argparse.Namespace,
    device: torch.device,
    flops: int,
) -> dict[tuple[int, Variant], Rate]:
    """Each repeat times every variant's step and its bmm in alternating slices; the fraction
    of the floor and the ratio to eager fp32 are taken within a repeat, then their medians, so
    a machine whose speed drifts (a shared host) moves both sides of every ratio together."""
    rates = {}
    for num_models in models:
        trainers = {v: make_trainer(num_models, v, device, args.scratch) for v in variants}
        steps = {v: stepper(trainer) for v, trainer in trainers.items()}
        for variant, run in steps.items():  # warm-up: compiler, allocator, first chunk
            start = time.perf_counter()
            for _ in range(3):
                run()
            if variant.compile:
                print(
                    f"M = {num_models} {variant.name}: compiled and 3 steps in "
                    f"{time.perf_counter() - start:.1f} s"
                )
        samples: dict[Variant, list[tuple[float, float]]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for v in variants:
                rate, peak = interleaved(steps[v], DTYPES[v.precision], device, args.seconds)
                rate *= num_models
                samples[v].append((rate, rate * flops / peak))
        base = [rate for rate, _ in samples[EAGER_FP32]]
        for v in variants:
            rates[num_models, v] = Rate(
                Repeats.of(rate for rate, _ in samples[v]),
                Repeats.of(fraction for _, fraction in samples[v]),
                Repeats.of(r / b for (r, _), b in zip(samples[v], base, strict=True)),
            )
    return rates


def bmm_operands(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The operands of the floor's product: (16, 256, 256) @ (16, 256, 256), the step's GEMM."""
    a = torch.randn(16, 256, 256, device=device).to(dtype)
    b = torch.randn(16, 256, 256, device=device).to(dtype)
    torch.bmm(a, b)
    return a, b


BMM_FLOPS = 2 * 16 * 256**3


def bmm_rate(dtype: torch.dtype, device: torch.device, seconds: float) -> float:
    """FLOP/s of the floor's batched product."""
    a, b = bmm_operands(dtype, device)
    return BMM_FLOPS / timed(lambda: torch.bmm(a, b), device, seconds)


SLICES = 5  # step and bmm timings alternate this many times within one repeat


def interleaved(
    step: Callable[[], None], dtype: torch.dtype, device: torch.device, seconds: float
) -> tuple[float, float]:
    """(steps/s, bmm FLOP/s), timed in alternating slices of the same repeat (`seconds` of
    steps, a quarter of that of bmm), so a host whose speed drifts within the repeat moves
    both the same way."""
    a, b = bmm_operands(dtype, device)
    step_time = bmm_time = 0.0
    for _ in range(SLICES):
        step_time += timed(step, device, seconds / SLICES)
        bmm_time += timed(lambda: torch.bmm(a, b), device, seconds / SLICES / 4)
    return SLICES / step_time, BMM_FLOPS * SLICES / bmm_time


# --- 3. sampling ----------------------------------------------------------------------------


def sampling_seconds(
    num_models: int, variant: Variant, num_samples: int, device: torch.device
) -> float:
    """Seconds per model to sample num_samples points x 100 steps (an untrained network); a
    compiled network after one untimed draw that compiles it."""
    model = build_model(ModelConfig(), num_models, 100).to(device)
    model.reset_parameters([torch.Generator().manual_seed(m) for m in range(num_models)])
    schedule = NoiseSchedule(ScheduleConfig(), device)
    network = compilation.compiled(model) if variant.compile else model
    for _ in range(2 if variant.compile else 1):
        generators = [torch.Generator(device).manual_seed(m) for m in range(num_models)]
        with autocast(variant.precision, device):
            drawn = sample(network, schedule, generators, device, num_samples=num_samples)
    return drawn.inference_time / num_models


@dataclass
class SamplingRate:
    """One (M, variant) of the sampling table: a value per repeat (their medians printed)."""

    seconds: Repeats  # per model
    of_floor: Repeats  # the draw's FLOP rate over the bmm rate timed just before and after it
    over_fp32: Repeats  # eager fp32's seconds over these, in the same repeat


def sampling_rates(
    num_models: int,
    variants: list[Variant],
    repeats: int,
    num_samples: int,
    floor_flops: int,
    device: torch.device,
) -> dict[Variant, SamplingRate]:
    """Each repeat draws with every variant in turn, each draw between two bmm timings;
    `floor_flops`: sampling_flops(num_samples)."""
    drawn: dict[Variant, list[float]] = {v: [] for v in variants}
    of_floor: dict[Variant, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):  # the variants alternate; ratios within a repeat
        for v in variants:
            dtype = DTYPES[v.precision]
            before = bmm_rate(dtype, device, 0.25)
            seconds = sampling_seconds(num_models, v, num_samples, device)
            peak = (before + bmm_rate(dtype, device, 0.25)) / 2
            drawn[v].append(seconds)
            of_floor[v].append(floor_flops / peak / seconds)
    return {
        v: SamplingRate(
            Repeats.of(seconds),
            Repeats.of(of_floor[v]),
            Repeats.of(b / s for b, s in zip(drawn[EAGER_FP32], seconds, strict=True)),
        )
        for v, seconds in drawn.items()
    }


def sampling_flops(num_samples: int, device: torch.device) -> int:
    """FLOPs of the 100 network evaluations that sample num_samples points of one model."""
    model = build_model(ModelConfig(), 1, 100).to(device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, num_samples, 2, device=device), 50)
    return 100 * counter.get_total_flops()


# --- 4. evaluation against training --------------------------------------------------------


def metric_seconds(samples: np.ndarray, dataset: str) -> dict[str, float]:
    """Seconds of each function metrics.measure calls, and of the dataset's reference."""
    start = time.perf_counter()
    reference = load_reference(dataset, 100_000)
    reference.rho(5), reference.euclidean_radii(5), reference.regions()
    seconds = {"reference (once per dataset)": time.perf_counter() - start}
    profiler = cProfile.Profile()
    profiler.runcall(measure, samples, reference, 5)
    stats = pstats.Stats(profiler)
    stats.calc_callees()
    for function, callees in stats.all_callees.items():
        if function[2] == "measure" and function[0].endswith("metrics.py"):
            for callee, timing in callees.items():
                if timing[3] >= 1e-3:  # cumulative time, seconds
                    seconds[f"metric: {callee[2]}"] = timing[3]
    return seconds


def evaluation_costs(
    rate_16: float, variants: list[Variant], num_samples: int, device: torch.device
) -> None:
    """Per model: eval loss, sampling, each metric, against its 10,000 training steps."""
    trainer = make_trainer(4, EAGER_FP32, device)
    points = torch.stack([torch.from_numpy(load(name)) for name in DATASETS]).to(device)
    generators = [g["eval"] for g in trainer.generators]
    start = time.perf_counter()
    eval_loss(trainer.model, trainer.schedule, points, generators, 10_000)
    synchronize(device)
    costs = {"eval loss (100,000 points)": (time.perf_counter() - start) / 4}
    for v in variants:
        costs[f"sampling {num_samples:,} points, {v.name}"] = sampling_seconds(
            4, v, num_samples, device
        )
    samples = np.random.default_rng(0).normal(size=(num_samples, 2)).astype(np.float32)
    costs |= metric_seconds(samples, "dino")
    training = PROTOCOL_STEPS / rate_16
    print("\nevaluation per model (dino; M = 4 sampled together) against training it")
    print(f"{'training, 10,000 steps at the M = 16 fp32 rate':52} {training:8.2f} s")
    for name, seconds in costs.items():
        print(f"{name:52} {seconds:8.2f} s  {100 * seconds / training:6.1f} % of training")


# --- 5. local against Ray -------------------------------------------------------------------


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
        "eval": {"num_samples": 1000, "ground_truth": False},
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


# --- the report -------------------------------------------------------------------------------


def print_training(
    rates: dict[tuple[int, Variant], Rate],
    models: list[int],
    variants: list[Variant],
    flops: float,
    peaks: dict[str, float],
) -> None:
    aim = aim_floor_flops()
    print(f"baseline training step: {flops / 1e6:.0f} MFLOP per model-step (matrix products)")
    print(
        f"the aim's floor counts {aim / 1e6:.0f} MFLOP (3x the forward pass of the network as "
        f"written; its plain step performs {written_network_flops()[1] / 1e6:.0f}): the "
        f"'% aim floor' column, the same time per model-step against {aim / 1e6:.0f} MFLOP"
    )
    rates_at_start = ", ".join(f"{p} bmm {peak / 1e9:.0f} GFLOP/s" for p, peak in peaks.items())
    print(f"{rates_at_start} (at the start; each ratio below uses the bmm timed with it)")
    print("(models*steps/s; % of floor: against the bmm rate of its precision timed in slices")
    print(" alternating with the step's; x fp32: against eager fp32 in the same repeat; medians")
    print(" of the repeats, and the range of the repeats' % of floor)\n")
    print(
        f"{'M':>4} {'variant':>14} {'models*steps/s':>15} {'% of floor':>11} {'(repeats)':>11} "
        f"{'x fp32':>7} {'% aim floor':>12}"
    )
    for m in models:
        for v in variants:
            rate = rates[m, v]
            print(
                f"{m:4d} {v.name:>14} {rate.models_steps.median:15.0f} "
                f"{100 * rate.of_floor.median:10.0f}% {rate.of_floor.spread('.0f', 100):>11} "
                f"{rate.over_fp32.median:6.2f}x {100 * rate.of_floor.median * aim / flops:11.0f}%"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="1,4,16,64")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="0: lowdiff's choice")
    parser.add_argument("--seconds", type=float, default=2.0, help="per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=10_000, help="points sampled per model")
    parser.add_argument("--quick", action="store_true", help="M = 1,4,16, short timings")
    parser.add_argument("--overhead-steps", type=int, default=1000)
    parser.add_argument("--skip-overhead", action="store_true", help="no local vs Ray")
    parser.add_argument(
        "--compile", action="store_true", help="each precision through torch.compile as well"
    )
    args = parser.parse_args()
    if args.quick:
        args.models, args.seconds, args.repeats, args.samples = "1,4,16", 0.5, 2, 2000
        args.skip_overhead = True
    configure_cpu(args.threads)
    device = resolve_device(args.device)
    models = [int(m) for m in args.models.split(",")]
    variants = variants_for(device, args.compile)
    print(hardware(device))
    missing = bf16_missing(device.type)
    if missing:
        print(f"bf16 not measured: {missing}")
    # the compiler's files go to a temporary folder, removed at the end
    with tempfile.TemporaryDirectory(prefix="lowdiff-throughput-") as folder:
        args.scratch = Path(folder) if args.compile else None
        with compilation.scratch(args.scratch):
            measure_all(args, device, models, variants)
    if not args.skip_overhead:
        overhead(args.overhead_steps)


def variants_for(device: torch.device, with_compile: bool) -> list[Variant]:
    """Eager fp32, bf16 where the device has it natively, and with `with_compile` each of them
    compiled as well (refused with one line where the device cannot compile)."""
    precisions = ["fp32"] if bf16_missing(device.type) else ["fp32", "bf16"]
    variants = [Variant(p) for p in precisions]
    if with_compile:
        compilation.check_compile(True, device, "--compile")
        variants += [Variant(p, compile=True) for p in precisions]
    return variants


def measure_all(
    args: argparse.Namespace,
    device: torch.device,
    models: list[int],
    variants: list[Variant],
) -> None:
    precisions = list(dict.fromkeys(v.precision for v in variants))
    flops = step_flops(make_trainer(1, EAGER_FP32, device))
    peaks = {p: bmm_rate(DTYPES[p], device, args.seconds) for p in precisions}
    rates = training_rates(models, variants, args, device, flops)
    print_training(rates, models, variants, flops, peaks)
    floor_flops = sampling_flops(args.samples, device)
    print(
        f"\nsampling {args.samples:,} points x 100 steps: {floor_flops / 1e9:.1f} GFLOP per model"
    )
    for m in (1, 4):
        for v, rate in sampling_rates(
            m, variants, args.repeats, args.samples, floor_flops, device
        ).items():
            share = f"{100 * rate.of_floor.median:3.0f}% of the {v.precision} bmm floor"
            print(
                f"M = {m} {v.name:>14}: {rate.seconds.median:6.2f} s per model ({share}; "
                f"{rate.over_fp32.median:.2f}x eager fp32)"
            )
    rate_16 = (rates.get((16, EAGER_FP32)) or rates[models[-1], EAGER_FP32]).models_steps.median
    evaluation_costs(rate_16, variants, args.samples, device)


if __name__ == "__main__":
    main()
