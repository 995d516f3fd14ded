"""Every speed aim of lowdiff's done-when list, measured in one run and printed against its target.

One command, run alone on the machine, that measures each aim the way its own benchmark does
(the functions are those of train_speed.py, throughput.py and concurrency.py) and ends with one
table: the aim, whether it is met, and what was measured. Ratios are taken within a repeat, so a
host whose speed drifts moves both sides of a ratio together. An aim is met when the median of
its repeats meets it; beside the verdict stands in how many repeats it held, and beside the
median the range of the repeats: on a shared host one repeat can land on either side of an aim
that the median meets or misses by a few per cent.

| aim | measured by |
|---|---|
| `lowdiff train`, one model, ≤ 0.75x the plain loop's ms per step | train_speed.pipeline_gaps |
| the same, the step alone, timed in pairs of turns against the plain loop | paired_steps.paired |
| the real pipeline within 10 % of the bare engine step | train_speed.pipeline_gaps, M = 1, 4, 16 |
| fp32 at M ≥ 16 ≥ 80 % of the measured `bmm` rate | throughput.training_rates, M = 16, 64 (twice) |
| bf16 ≥ 3x fp32 in training at M ≥ 16 (on an AMX CPU) | throughput.training_rates |
| sampling 10,000 x 100 within 80 % of its floor | throughput.sampling_rates, M = 1, 4 |
| bf16 ≥ 4x fp32 in sampling (on an AMX CPU) | throughput.sampling_rates |
| two concurrent runs each ≥ 45 % of a lone one | concurrency.measure, lowdiff's setting |

The fp32 aim is printed twice, for the same timings. Its floor as the aim set it is 454 MFLOP per
model-step at the `bmm` rate: three times the forward pass of the protocol's network as written
(throughput.aim_floor_flops). lowdiff's step performs 383 MFLOP (its first layer factorised: the
time embedding's product once per timestep; the written network's own step performs 403, its
first layer's input needing no gradient), so its share of the rate it could reach on the work it
does is the stricter of the two.

With --compile the compiled variants (`train.compile`, `eval.compile`) are measured too, and an
aim is judged on the variant with the best median, which is named. The fp32-vs-bf16 equivalence
verdict is not a timing: it is in `results/precision` (README, "Mixed precision and
compilation").

The one-model aim is measured twice. `lowdiff train` itself, in new processes, is what the aim
names, but its repeats scatter by ±14 % on a shared host. The engine's step (the pipeline adds a
few per cent to it, the next rows) is also timed against the plain loop in turns of ten steps,
two worker processes taking turns (benchmarks/paired_steps.py), and that row's verdict comes from
a 95 % bootstrap interval of the median of the per-pair ratios: met when the whole interval
meets the aim, not met when none of it does, undecided when it straddles the aim (more pairs, or
a quieter host, would decide it). The interval is this run's: on a shared host, runs an hour
apart have differed by more than their intervals (0.835-0.89x, docs/speed.md), so a ratio near
its aim needs runs at several times.

The two bf16 aims are set for a CPU with AMX-BF16. Where the CPU's bf16 is native but without
AMX (AVX512_BF16 alone, whose bf16 products run some 2-3x its fp32 ones rather than 4-7x), their
ratios are measured and printed but not judged (verdict "-"); without native bf16 they are not
measured.

    python benchmarks/aims.py [--compile] [--repeats 3] [--skip-concurrency]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import concurrency
import paired_steps
import throughput
import torch
import train_speed
from repeats import Repeats

from lowdiff import compilation
from lowdiff.precision import cpu_flags
from lowdiff.runtime import configure_cpu

Variant = throughput.Variant
# a bootstrap interval of the median from fewer pairs is too narrow to judge an aim by
MIN_PAIRS = 30


@dataclass
class Aim:
    """One aim: its value in every repeat (None where it cannot be measured here), the test of
    one value against the target (None where the aim is not set for this machine: printed, not
    judged), and what to print beside the values."""

    name: str
    repeats: Repeats | None
    holds: Callable[[float], bool] | None = None
    fmt: str = ".2f"  # how a value prints (scale 100 for a share in %)
    scale: float = 1.0
    unit: str = "x"
    context: str = ""
    # a 95 % interval of the median (paired turns): the verdict is the interval's
    interval: tuple[float, float] | None = None

    @property
    def met(self) -> bool | None:
        """The verdict: whether the median of the repeats meets the aim (with an interval:
        whether all of it does; None where none or only part of it does)."""
        if self.repeats is None or self.holds is None:
            return None
        if self.interval is not None:
            held = {self.holds(end) for end in self.interval}
            return held.pop() if len(held) == 1 else None
        return self.holds(self.repeats.median)

    @property
    def verdict(self) -> str:
        if self.repeats is None or self.holds is None:
            return "-"
        if self.interval is not None:
            return {True: "met", False: "not met", None: "undecided"}[self.met]
        held = f"{self.repeats.holding(self.holds)}/{len(self.repeats.values)}"
        return f"{'met' if self.met else 'not met'} ({held})"

    @property
    def measured(self) -> str:
        if self.repeats is None:
            return self.context
        median = f"{self.repeats.median * self.scale:{self.fmt}}{self.unit}"
        if self.interval is not None:
            low, high = (end * self.scale for end in self.interval)
            pairs = len(self.repeats.values)
            spread = f"95 % interval of the median {low:{self.fmt}}-{high:{self.fmt}}{self.unit}"
            return f"{median} ({spread}, {pairs} pairs); {self.context}"
        spread = self.repeats.spread(self.fmt, self.scale)
        context = f"; {self.context}" if self.context else ""
        return f"{median} (repeats {spread}{self.unit}){context}"


def floor_share(name: str, share: Repeats, context: str) -> Aim:
    """An aim of at least 80 % of a floor, printed in per cent."""
    return Aim(name, share, lambda value: value >= 0.80, ".0f", 100, " %", context)


def best(values: dict[Variant, Repeats]) -> tuple[Variant, Repeats]:
    """The variant with the highest median."""
    variant = max(values, key=lambda v: values[v].median)
    return variant, values[variant]


def bf16_aim(name: str, ratio: Repeats, target: float, variant: Variant, amx: bool) -> Aim:
    """A bf16-over-fp32 aim: judged on an AMX CPU, for which it is set; printed elsewhere."""
    if amx:
        return Aim(name, ratio, lambda value: value >= target, context=variant.name)
    return Aim(name, ratio, None, context=f"{variant.name}; not judged: the aim is for AMX-BF16")


def speed_aims(args: argparse.Namespace, variants: list[Variant], bf16: bool) -> list[Aim]:
    cpu = torch.device("cpu")
    amx = "amx_bf16" in (cpu_flags() or set())
    aims = []
    print("lowdiff train against the bare step and the plain loop ...", flush=True)
    gaps = train_speed.pipeline_gaps([1, 4, 16], args.pipeline_steps, args.repeats)
    one = gaps[1]
    aims.append(
        Aim(
            "one model: lowdiff train <= 0.75x the plain loop",
            one.over_plain,
            lambda ratio: ratio <= 0.75,
            context=f"{one.real_ms.median:.2f} against {one.plain_ms.median:.2f} ms per step",
        )
    )
    print("the one-model step against the plain loop, in pairs of turns ...", flush=True)
    aims.append(one_model_paired(args.pairs))
    for m, gap in gaps.items():
        aims.append(
            Aim(
                f"the real pipeline within 10 % of the bare step, M = {m}",
                gap.gap,
                lambda excess: excess <= 0.10,
                fmt="+.1f",
                scale=100,
                unit=" %",
            )
        )

    print("training throughput against the bmm floor ...", flush=True)
    flops = throughput.step_flops(throughput.make_trainer(1, throughput.EAGER_FP32, cpu))
    rates = throughput.training_rates([16, 64], variants, args, cpu, flops)
    fp32 = [v for v in variants if v.precision == "fp32"]
    aim_flops = throughput.aim_floor_flops()
    for m in (16, 64):  # the same times against the FLOPs performed and the aim's own count
        variant, share = best({v: rates[m, v].of_floor for v in fp32})
        name = f"fp32 at M = {m} >= 80 % of the bmm rate, the FLOPs it performs"
        aims.append(floor_share(name, share, f"{variant.name}; {flops / 1e6:.0f} MFLOP"))
        name = f"fp32 at M = {m} >= 80 % of the aim's floor, {aim_flops / 1e6:.0f} MFLOP"
        aims.append(floor_share(name, share.scaled(aim_flops / flops), variant.name))
    half = [v for v in variants if v.precision == "bf16"]
    for m in (16, 64):
        name = f"bf16 >= 3x fp32, training, M = {m}"
        if not bf16:
            aims.append(Aim(name, None, context="no native bf16 here"))
            continue
        variant, ratio = best({v: rates[m, v].over_fp32 for v in half})
        aims.append(bf16_aim(name, ratio, 3, variant, amx))

    print("sampling against its floor ...", flush=True)
    floor_flops = throughput.sampling_flops(args.samples, cpu)
    for m in (1, 4):
        drawn = throughput.sampling_rates(m, variants, args.repeats, args.samples, floor_flops, cpu)
        variant, share = best({v: drawn[v].of_floor for v in fp32})
        eager = drawn[throughput.EAGER_FP32].of_floor.median
        aims.append(
            floor_share(
                f"sampling {args.samples:,} x 100, M = {m}, within 80 % of its floor",
                share,
                f"{variant.name}; eager {100 * eager:.0f} %",
            )
        )
        name = f"bf16 >= 4x fp32, sampling, M = {m}"
        if not bf16:
            aims.append(Aim(name, None, context="no native bf16 here"))
            continue
        variant, ratio = best({v: drawn[v].over_fp32 for v in half})
        aims.append(bf16_aim(name, ratio, 4, variant, amx))
    return aims


def one_model_paired(pairs: int) -> Aim:
    """The engine's one-model step (eager fp32, the default) against the plain loop, two
    worker processes taking turns of ten steps (paired_steps)."""
    tree = Path(__file__).resolve().parent.parent
    commands = [
        (paired_steps.worker_command(tree, variant, 1, 0, 10), {})
        for variant in (paired_steps.PLAIN, "fp32")
    ]
    with paired_steps.running(commands) as workers:
        result = paired_steps.paired(*workers, pairs, turn_steps=10)
    return Aim(
        "one model: the step <= 0.75x the plain loop, paired",
        Repeats.of(result.ratios),
        lambda ratio: ratio <= 0.75,
        interval=result.median_interval(),
        context=(
            f"{1e3 * result.b_median:.2f} against {1e3 * result.a_median:.2f} ms per step; "
            f"threads: lowdiff {workers[1].threads}, the plain loop {workers[0].threads}"
        ),
    )


def concurrency_aim(args: argparse.Namespace) -> Aim:
    """Each of two runs at once against a lone one (both runs' ratios are the 'repeats')."""
    print("one training alone, then two at once ...", flush=True)
    settings = argparse.Namespace(steps=args.concurrency_steps, models=4, points=100_000)
    ((_, alone),) = concurrency.measure("lowdiff", 1, settings)
    together = concurrency.measure("lowdiff", 2, settings)
    each = Repeats.of(rate / alone for _, rate in together)
    return Aim(
        "two concurrent runs each >= 45 % of a lone one",
        Repeats.of([min(each.values)]),
        lambda share: share >= 0.45,
        context=f"the two runs {each.spread()}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per training timing")
    parser.add_argument("--samples", type=int, default=10_000, help="points sampled per model")
    parser.add_argument("--pipeline-steps", type=int, default=300)
    parser.add_argument("--concurrency-steps", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=200, help="of the paired one-model row")
    parser.add_argument("--compile", action="store_true", help="the compiled variants as well")
    parser.add_argument("--skip-concurrency", action="store_true")
    args = parser.parse_args()
    if (
        args.repeats < 1
        or args.seconds <= 0
        or args.samples < 1
        or args.pipeline_steps < 20
        or args.concurrency_steps < 2 * concurrency.BLOCK
        or args.pairs < MIN_PAIRS
    ):
        parser.error(
            "--repeats >= 1, --seconds > 0, --samples >= 1, --pipeline-steps >= 20, "
            f"--concurrency-steps >= {2 * concurrency.BLOCK}, --pairs >= {MIN_PAIRS}"
        )
    configure_cpu(0, register=False)  # the lowdiff processes it starts must not count it as busy
    cpu = torch.device("cpu")
    print(throughput.hardware(cpu))
    variants = throughput.variants_for(cpu, args.compile)
    bf16 = any(v.precision == "bf16" for v in variants)
    with tempfile.TemporaryDirectory(prefix="lowdiff-aims-") as folder:
        args.scratch = Path(folder) if args.compile else None
        with compilation.scratch(args.scratch):
            aims = speed_aims(args, variants, bf16)
    if not args.skip_concurrency:
        aims.append(concurrency_aim(args))
    width = max(len(aim.name) for aim in aims)
    verdicts = [aim.verdict for aim in aims]
    column = max(len(verdict) for verdict in verdicts)
    print(
        "\nverdict: whether the median of the repeats meets the aim (in how many repeats it did);"
        " paired: whether the 95 % interval of the median does"
    )
    print(f"{'aim':{width}}  {'verdict':{column}}  measured")
    for aim, verdict in zip(aims, verdicts, strict=True):
        print(f"{aim.name:{width}}  {verdict:{column}}  {aim.measured}")


if __name__ == "__main__":
    main()
