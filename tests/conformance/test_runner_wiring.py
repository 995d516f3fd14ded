"""End to end: a tiny experiment file through the real runner, every cell.json metric against
the literal reference run (reference.py) from the same seeds.

The other conformance tests feed the engine, the sampler and the eval loss by hand; this one
checks what the runner (`lowdiff.experiments.execute`) hands them: which weights each stage gets
(eval loss: the online weights; samples: the EMA weights), which model's streams (dataset,
seed) feed initialisation, data order, training noise, eval noise and sampling noise, which
training points a cell is measured against, and the settings passed on (eval chunk size,
sampler, k). Each cell is rebuilt here from its (run, dataset, seed) alone: initial weights
from that model's "init" stream (for a plugin: its own class constructed with that stream as
PyTorch's generator; for a built-in architecture: one fresh single model of it, the layout the
other conformance tests map to the reference layers), then `reference.train`,
`reference.eval_loss` and `reference.sample` as the protocol writes them, and the metrics of
those samples with `lowdiff.metrics.measure` (tested on its own in tests/test_metrics.py).

Tolerances: losses within 1e-3 relative (as test_conformance.py), eval loss 1e-4 relative,
sample-based metrics 1e-3 relative + 1e-3 absolute (samples agree to ~1e-5; a one-sample
change of a count-based metric of 300 samples would be 3.3e-3). Times are not compared.

Mutations checked by hand (each applied to src/lowdiff/experiments.py, then reverted; every one
fails this test):
  * sampling with `result.model` instead of `result.ema_model`;
  * eval loss with `result.ema_model` instead of `result.model`;
  * `Member(c.dataset, c.seed + 1)` in run_pack (a wrong seed for every stream);
  * eval loss with the "sample" streams instead of the "eval" streams;
  * cells measured against the first dataset's points (`truths[0]`) for every model.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lowdiff import data
from lowdiff.config import ExperimentConfig, load_experiment
from lowdiff.engine import CHUNK_STEPS, Member, stream_generators
from lowdiff.experiments import execute
from lowdiff.metrics import load_reference as load_truth
from lowdiff.metrics import measure
from lowdiff.models import build_model
from lowdiff.models.plugin import load_class

from . import reference as ref
from .test_conformance import VARIANTS, load_reference

CPU = torch.device("cpu")
PLUGIN = Path(__file__).parents[2] / "examples" / "plugin" / "mlp.py"
E, H = 16, 32
EMA_WARMUP = 20  # the EMA averages over the last 100 steps, so it differs from the weights
STEPS, BATCH, NUM_POINTS, NUM_SAMPLES, EVAL_CHUNK = 120, 32, 600, 300, 256
WIDTHS = f"embedding_dim = {E}, hidden_dim = {H}"
EXPERIMENT = f"""
[experiment]
name = "wiring"
datasets = ["moons", "dino"]
seeds = [0, 3]
num_points = {NUM_POINTS}
oracle_draws = 1
device = "cpu"
[train]
num_steps = {STEPS}
batch_size = {BATCH}
ema_warmup_steps = {EMA_WARMUP}
[eval]
num_samples = {NUM_SAMPLES}
chunk_size = {EVAL_CHUNK}
process_snapshots = 0
field_resolution = 4
ground_truth = false  # not in the reference protocol: tests/test_ground_truth.py pins it
[runs.baseline]
model = {{ arch = "mlp", {WIDTHS} }}
[runs.dual_scale]
model = {{ arch = "dual_scale", {WIDTHS} }}
[runs.dual_expert]
model = {{ arch = "dual_expert", gate = "enhanced", larger_experts = true, {WIDTHS} }}
train = {{ diversity_weight = 0.1 }}
[runs.plugin]
model = {{ arch = "mlp.py:MLP", options = {{ {WIDTHS} }} }}
"""
BUILT_IN = {"baseline": "baseline", "dual_scale": "A2_learned", "dual_expert": "B3_larger"}


class PluginAsReference(nn.Module):
    """The plugin module with the reference's output convention (eps, weights)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.module(x, t), None


@functools.cache
def executed(folder: Path) -> tuple[ExperimentConfig, Path]:
    """The experiment file (and its plugin file) written to `folder` and run by the runner."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PLUGIN, folder / "mlp.py")
    (folder / "wiring.toml").write_text(EXPERIMENT)
    config = load_experiment(folder / "wiring.toml")
    execute(config, folder / "out", progress=False)
    return config, folder / "out"


def initial_model(config, run_name: str, member: Member) -> tuple[nn.Module, object]:
    """The reference module of a cell, with that model's initial weights."""
    model_config = config.run(run_name).model
    init = stream_generators(member, CPU)["init"]
    if run_name == "plugin":
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(init.get_state())  # the documented init: its own stream
            module = load_class(model_config)(**model_config.options)
        return PluginAsReference(module), model_config
    engine = build_model(model_config, 1, 100)
    engine.reset_parameters([init])
    variant = VARIANTS[BUILT_IN[run_name]]
    return load_reference(variant.build(), engine, 0, model_config), model_config


def reference_cell(config, run_name: str, dataset: str, seed: int) -> dict[str, float]:
    """Every metric of one cell, from the plain loop of reference.py."""
    run, member = config.run(run_name), Member(dataset, seed)
    model, _ = initial_model(config, run_name, member)
    points = torch.from_numpy(data.load(dataset, NUM_POINTS))
    g = stream_generators(member, CPU)
    stream = ref.batches(points, g["data"], g["noise"], BATCH, 100, STEPS, CHUNK_STEPS)
    losses, ema = ref.train(
        model,
        ref.Schedule(),
        stream,
        STEPS,
        diversity_weight=run.train.diversity_weight,
        ema_warmup_steps=EMA_WARMUP,
    )
    eval_loss = ref.eval_loss(model, ref.Schedule(), points, g["eval"], EVAL_CHUNK)
    samples, _, _ = ref.sample(ema.ema_model, ref.Schedule(), NUM_SAMPLES, g["sample"])
    truth = load_truth(dataset, NUM_POINTS)
    return {
        "eval_loss": eval_loss,
        "final_train_loss": float(np.mean(losses[-100:])),
        **measure(samples.numpy(), truth, run.eval.knn_k),
        "losses": losses,
    }


@pytest.mark.parametrize("run_name", [*BUILT_IN, "plugin"])
def test_every_metric_of_every_cell_equals_the_reference_run(run_name, tmp_path_factory):
    config, out = executed(tmp_path_factory.getbasetemp() / "wiring")
    for dataset in config.experiment.datasets:
        for seed in config.experiment.seeds:
            cell = out / run_name / dataset / f"seed_{seed}"
            record = json.loads((cell / "cell.json").read_text())
            expected = reference_cell(config, run_name, dataset, seed)
            np.testing.assert_allclose(
                np.load(cell / "losses.npy"), expected.pop("losses"), rtol=1e-3
            )
            metrics = record["metrics"]
            timed = {"training_time", "inference_time"}
            assert set(metrics) - timed == set(expected), f"{cell}: metrics differ"
            assert metrics["eval_loss"] == pytest.approx(expected["eval_loss"], rel=1e-4)
            for name, value in expected.items():
                assert metrics[name] == pytest.approx(value, rel=1e-3, abs=1e-3), (
                    f"{run_name} {dataset}/seed {seed}: {name} {metrics[name]} != {value}"
                )
