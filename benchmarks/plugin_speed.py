"""Training speed of a plugin denoiser (a plain nn.Module under torch.func.vmap) against the
hand-batched built-in architecture of the same network.

examples/plugin/mlp.py is the protocol's baseline MLP written as a plain single-model module;
`mlp` is the same network in lowdiff's batched layers (one baddbmm per layer, the time
embedding as a table look-up). Prints ms per model-step of the full training step (random
numbers, forward, backward, per-model clipping, AdamW, EMA) for both at each M, and the plugin's
speed as a fraction of the built-in's (goal: >= 70 % at M >= 4).

    python benchmarks/plugin_speed.py [--steps 60] [--models 4,16] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from train_speed import engine_ms

from lowdiff.data import load
from lowdiff.engine import resolve_device
from lowdiff.models import ModelConfig
from lowdiff.runtime import configure_cpu

EXAMPLE = Path(__file__).parents[1] / "examples" / "plugin"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--models", default="4,16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    configure_cpu(args.threads)
    device = resolve_device(args.device)
    points = torch.from_numpy(load("dino")).to(device)
    plugin = ModelConfig(arch="mlp.py:MLP", plugin_root=str(EXAMPLE))
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for num_models in (int(m) for m in args.models.split(",")):
        built_in = engine_ms(ModelConfig(), num_models, points, args.steps, device)
        own = engine_ms(plugin, num_models, points, args.steps, device)
        print(
            f"M={num_models:<3} built-in mlp {built_in:6.2f} ms/model-step, plugin MLP "
            f"{own:6.2f} ms/model-step: plugin at {built_in / own:4.0%} of the built-in's speed"
        )


if __name__ == "__main__":
    main()
