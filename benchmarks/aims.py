"""Every speed aim of lowdiff's done-when list, measured in one run and printed against its target.

One command, run alone on the machine, that measures each aim the way its own benchmark does
(the functions are those of train_speed.py, throughput.py and concurrency.py) and ends with one
table: the aim, what was measured, and whether it is met. Ratios are taken within a repeat and
their medians printed, so a host whose speed drifts moves both sides of a ratio together.

| aim | measured by |
|---|---|
| `lowdiff train`, one model, ≤ 0.75x the plain loop's ms per step | train_speed.pipeline_gaps |
| the real pipeline within 10 % of the bare engine step | train_speed.pipeline_gaps, M = 1, 4, 16 |
| fp32 at M ≥ 16 ≥ 80 % of the measured `bmm` rate | throughput.training_rates, M = 16, 64 |
| bf16 ≥ 3x fp32 in training at M ≥ 16 (native bf16 only) | throughput.training_rates |
| sampling 10,000 x 100 within 80 % of its floor | throughput.sampling_rates, M = 1, 4 |
| bf16 ≥ 4x fp32 in sampling (native bf16 only) | throughput.sampling_rates |
| two concurrent runs each ≥ 45 % of a lone one | concurrency.measure, lowdiff's setting |

With --compile the compiled variants (`train.compile`, `eval.compile`) are measured too, and an
aim counts as met by the best variant, which is named. The fp32-vs-bf16 equivalence verdict is
not a timing: it is in `results/precision` (README, "Mixed precision and compilation").

    python benchmarks/aims.py [--compile] [--repeats 3] [--skip-concurrency]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import concurrency
import throughput
import torch
import train_speed

from lowdiff import compilation
from lowdiff.data import load
from lowdiff.runtime import configure_cpu

Variant = throughput.Variant


@dataclass
class Aim:
    name: str
    measured: str
    met: bool | None  # None: not measurable here


def best(values: dict[Variant, float]) -> tuple[Variant, float]:
    variant = max(values, key=values.__getitem__)
    return variant, values[variant]


def speed_aims(args: argparse.Namespace, variants: list[Variant], bf16: bool) -> list[Aim]:
    cpu = torch.device("cpu")
    aims = []
    print("pipeline against the bare step and the plain loop ...", flush=True)
    points = torch.from_numpy(load("dino"))
    gaps = train_speed.pipeline_gaps([1, 4, 16], args.pipeline_steps, args.repeats, points)
    one = gaps[1]
    aims.append(
        Aim(
            "one model: lowdiff train <= 0.75x the plain loop",
            f"{one.over_plain:.2f}x ({one.real_ms:.2f} against {one.plain_ms:.2f} ms per step)",
            one.over_plain <= 0.75,
        )
    )
    worst = max(gap.gap for gap in gaps.values())
    aims.append(
        Aim(
            "the real pipeline within 10 % of the bare step",
            " / ".join(f"{100 * g.gap:+.1f} %" for g in gaps.values()) + " at M = 1 / 4 / 16",
            worst <= 0.10,
        )
    )

    print("training throughput against the bmm floor ...", flush=True)
    flops = throughput.step_flops(throughput.make_trainer(1, throughput.EAGER_FP32, cpu))
    rates = throughput.training_rates([16, 64], variants, args, cpu, flops)
    fp32 = [v for v in variants if v.precision == "fp32"]
    for m in (16, 64):
        variant, share = best({v: rates[m, v].of_floor for v in fp32})
        aims.append(
            Aim(
                f"fp32 at M = {m} >= 80 % of the bmm rate",
                f"{100 * share:.0f} % ({variant.name})",
                share >= 0.80,
            )
        )
    half = [v for v in variants if v.precision == "bf16"]
    for m in (16, 64):
        if not bf16:
            aims.append(Aim(f"bf16 >= 3x fp32, training, M = {m}", "no native bf16 here", None))
            continue
        variant, ratio = best({v: rates[m, v].over_fp32 for v in half})
        aims.append(
            Aim(f"bf16 >= 3x fp32, training, M = {m}", f"{ratio:.2f}x ({variant.name})", ratio >= 3)
        )

    print("sampling against its floor ...", flush=True)
    floor_flops = throughput.sampling_flops(args.samples, cpu)
    for m in (1, 4):
        drawn = throughput.sampling_rates(m, variants, args.repeats, args.samples, floor_flops, cpu)
        variant, share = best({v: drawn[v].of_floor for v in fp32})
        eager = drawn[throughput.EAGER_FP32].of_floor
        aims.append(
            Aim(
                f"sampling {args.samples:,} x 100, M = {m}, within 80 % of its floor",
                f"{100 * share:.0f} % ({variant.name}; eager {100 * eager:.0f} %)",
                share >= 0.80,
            )
        )
        if not bf16:
            aims.append(Aim(f"bf16 >= 4x fp32, sampling, M = {m}", "no native bf16 here", None))
            continue
        variant, ratio = best({v: drawn[v].over_fp32 for v in half})
        aims.append(
            Aim(f"bf16 >= 4x fp32, sampling, M = {m}", f"{ratio:.2f}x ({variant.name})", ratio >= 4)
        )
    return aims


def concurrency_aim(args: argparse.Namespace) -> Aim:
    print("one training alone, then two at once ...", flush=True)
    settings = argparse.Namespace(steps=args.concurrency_steps, models=4, points=100_000)
    ((_, alone),) = concurrency.measure("lowdiff", 1, settings)
    together = concurrency.measure("lowdiff", 2, settings)
    each = min(rate for _, rate in together) / alone
    return Aim("two concurrent runs each >= 45 % of a lone one", f"{each:.2f}", each >= 0.45)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per training timing")
    parser.add_argument("--samples", type=int, default=10_000, help="points sampled per model")
    parser.add_argument("--pipeline-steps", type=int, default=300)
    parser.add_argument("--concurrency-steps", type=int, default=1000)
    parser.add_argument("--compile", action="store_true", help="the compiled variants as well")
    parser.add_argument("--skip-concurrency", action="store_true")
    args = parser.parse_args()
    if (
        args.repeats < 1
        or args.seconds <= 0
        or args.samples < 1
        or args.pipeline_steps < 20
        or args.concurrency_steps < 2 * concurrency.BLOCK
    ):
        parser.error(
            "--repeats >= 1, --seconds > 0, --samples >= 1, --pipeline-steps >= 20, "
            f"--concurrency-steps >= {2 * concurrency.BLOCK}"
        )
    configure_cpu(0)
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
    print(f"\n{'aim':{width}}  {'verdict':9}  measured")
    for aim in aims:
        verdict = {True: "met", False: "not met", None: "-"}[aim.met]
        print(f"{aim.name:{width}}  {verdict:9}  {aim.measured}")


if __name__ == "__main__":
    main()
