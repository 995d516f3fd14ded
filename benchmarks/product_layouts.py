"""The training step's matrix products in each operand layout, fp32 and bf16: rates and ratios.

A batched linear layer (`lowdiff.models.layers.BatchedLinear`, activations (M, B, in), weight
(M, in, out)) makes three products a step: the forward x @ W, the input gradient dy @ Wᵀ (the
weight a transposed view) and the weight gradient xᵀ @ dy (the activations a transposed view, the
sum over the batch). How fast a BLAS or oneDNN kernel runs each layout depends on the CPU: on the
reference Xeon with AMX the transposed first operand cost about 27 % of the bf16 rate, on an AMD
EPYC with AVX512_BF16 at most 16 % (docs/speed.md). This prints, for the protocol's sizes (M
models, batch 256, 256 → 256, and the 256 → 2 output layer), each product's GFLOP/s and its
ratio to the forward layout timed beside it, medians of the repeats (each repeat times every
layout once, in turn): what a change of layout, e.g. activations saved transposed for the weight
gradient, could gain before it is built. The last two rows compute the same products transposed:
for the two-column output layer they ran 2.4x (forward) and 6x (weight gradient) the rate of
the usual layout in fp32, and 1.2x and 2.2x in bf16, on the AMD EPYC with AVX512_BF16
(docs/speed.md).

    python benchmarks/product_layouts.py [--models 16] [--repeats 5] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from repeats import Repeats
from throughput import hardware, timed

from lowdiff.precision import bf16_missing
from lowdiff.runtime import configure_cpu

BATCH, HIDDEN, OUTPUTS = 256, 256, 2  # protocol §1: batch 256, H = 256, a 2-D output


def layouts(
    num_models: int, width: int, dtype: torch.dtype
) -> dict[str, tuple[Callable[[], torch.Tensor], int]]:
    """Each layout's product and its FLOPs, for a layer of HIDDEN inputs and `width` outputs."""
    generator = torch.Generator().manual_seed(0)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(num_models, *shape, generator=generator).to(dtype)

    x, weight, dy = draw(BATCH, HIDDEN), draw(HIDDEN, width), draw(BATCH, width)
    x_t = x.transpose(1, 2).contiguous()  # the activations as they would be saved transposed
    flops = 2 * num_models * BATCH * HIDDEN * width
    return {
        "forward x @ W": (lambda: torch.bmm(x, weight), flops),
        "input gradient dy @ W^T (view)": (lambda: torch.bmm(dy, weight.transpose(1, 2)), flops),
        "weight gradient x^T @ dy (view)": (lambda: torch.bmm(x.transpose(1, 2), dy), flops),
        "weight gradient x^T @ dy (x^T saved)": (lambda: torch.bmm(x_t, dy), flops),
        # the same products computed transposed: C = (B^T A^T)^T, no copy (views only)
        "forward as (W^T x^T)^T": (
            lambda: torch.bmm(weight.transpose(1, 2), x.transpose(1, 2)).transpose(1, 2),
            flops,
        ),
        "weight gradient as (dy^T x)^T": (
            lambda: torch.bmm(dy.transpose(1, 2), x).transpose(1, 2),
            flops,
        ),
    }


def measure(num_models: int, width: int, dtype: torch.dtype, args: argparse.Namespace) -> None:
    products = layouts(num_models, width, dtype)
    rates: dict[str, list[float]] = {name: [] for name in products}
    ratios: dict[str, list[float]] = {name: [] for name in products}
    for _ in range(args.repeats):
        seconds = {
            name: timed(run, torch.device("cpu"), args.seconds)
            for name, (run, _) in products.items()
        }
        forward = seconds["forward x @ W"]
        for name, (_, flops) in products.items():
            rates[name].append(flops / seconds[name] / 1e9)
            ratios[name].append(forward / seconds[name])
    precision = "fp32" if dtype == torch.float32 else "bf16"
    print(f"\n{precision}, M = {num_models}, {HIDDEN} -> {width}")
    print(f"{'product':40} {'GFLOP/s':>8}   {'(repeats)':>16}  {'x forward':>9}")
    for name in products:
        rate = Repeats.of(rates[name])
        ratio = Repeats.of(ratios[name]).median
        print(f"{name:40} {rate.median:8.0f}   {rate.spread('.0f'):>16}  {ratio:8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="per product and repeat")
    args = parser.parse_args()
    if args.models < 1 or args.repeats < 1 or args.seconds <= 0:
        parser.error("--models >= 1, --repeats >= 1, --seconds > 0")
    configure_cpu(0, register=False)
    print(hardware(torch.device("cpu")))
    dtypes = [torch.float32] if bf16_missing("cpu") else [torch.float32, torch.bfloat16]
    for dtype in dtypes:
        for width in (HIDDEN, OUTPUTS):
            measure(args.models, width, dtype, args)


if __name__ == "__main__":
    main()
