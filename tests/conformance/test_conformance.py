"""Conformance: lowdiff's engine, models, schedule and evaluation against a literal reference.

The reference (reference.py beside this file) is the protocol written out plainly from its tables
(docs/protocol.md); it imports nothing of lowdiff's models, schedule, engine or evaluation. The
engine and the reference start from the same weights (the engine's initial per-model weights copied
in), get the same data order, timesteps and noise (each model's generators, drawn in the documented
order) and must agree: per-step losses, weights and EMA weights over 250 steps (~28 epochs, 3 chunks
of random numbers) for every architecture / run variant, with and without the diversity loss, in a
batch of M = 2 models (two datasets, two seeds); sampling from the EMA weights (linear and quadratic
schedules); eval loss from the online weights.


Tolerances: after 250 free-running steps, weights and EMA within 1e-3 relative (a ReLU input
within rounding of 0 can send one sample's gradient share one way on one side only, and Adam
carries that on: up to ~3e-4 seen); step by step from the engine's own state, within 1e-2 of
each step's update and 1e-5 for the EMA; losses within 1e-3 relative; samples (100 steps from
the same weights and noise) within 2e-5 (float noise: ~3e-6).

Mutation check: each one-line change below was applied to src/lowdiff (then reverted) and the
suite, fast tests first with -x, failed at the test named ("test_" and "_matches_reference"
left out). Rows in settings.py, schedule.py and samplers.py were checked again after those
modules were reorganised.

| file: mutation | first failing test |
|---|---|
| models/dual_expert.py: simple gate of enhanced depth | forward_at_initialisation[B1_simple] |
| models/dual_expert.py: enhanced gate loses a layer | initialisation_is_pytorch_default_linear |
| models/dual_expert.py: simple gate width H/2 -> H | forward_at_initialisation[B1_simple] |
| models/dual_expert.py: g applied to expert 2 | forward_at_initialisation[B1_simple] |
| models/dual_scale.py: LeakyReLU slope 0.2 -> 0.1 | forward_at_initialisation[A5_deep] |
| models/dual_scale.py: deep weight net width H/2 -> H | forward_at_initialisation[A5_deep] |
| models/dual_scale.py: deep weight net softmax -> sigmoid | forward_at_initialisation[A5_deep] |
| models/dual_scale.py: (w, 1 - w) swapped | forward_at_initialisation[A2_learned] |
| models/dual_scale.py: sigmoid weight net without ReLU | forward_at_initialisation[A2_learned] |
| models/dual_scale.py: fixed weights 0.5/0.5 -> 0.6/0.4 | forward_at_initialisation[A1_fixed] |
| models/dual_scale.py: local branch on x, not upscale(x) | forward_at_initialisation[A1_fixed] |
| models/dual_scale.py: fixed zoom ignored (x * 1) | forward_at_initialisation[A2_zoom] |
| models/layers.py: larger experts' extra layer w/o ReLU | forward_at_initialisation[B3_larger] |
| models/layers.py: larger experts' extra layer skipped | forward_at_initialisation[B3_larger] |
| engine.py: diversity sign, MSE + lambda * dist | each_step_from_the_same_state[B3_larger-0.1] |
| engine.py: diversity mean with the i = j pairs | each_step_from_the_same_state[B3_larger-0.1] |
| models/layers.py: frequencies /(half - 1) -> /half | forward_at_initialisation[baseline] |
| models/layers.py: [cos, sin] instead of [sin, cos] | forward_at_initialisation[baseline] |
| settings.py: input_scale 25 -> 20 | protocol_defaults_are_spec_section_1 |
| settings.py: time_scale 1 -> 2 | protocol_defaults_are_spec_section_1 |
| models/layers.py: residual h + ReLU(Linear(h)) | forward_at_initialisation[baseline] |
| models/layers.py: residual block without the skip | forward_at_initialisation[baseline] |
| models/layers.py: final ReLU dropped | forward_at_initialisation[baseline] |
| settings.py: hidden_layers 3 -> 2 | protocol_defaults_are_spec_section_1 |
| settings.py: beta_end 0.02 -> 0.025 | protocol_defaults_are_spec_section_1 |
| schedule.py: linear betas spaced geometrically | schedule_coefficients[linear] |
| schedule.py: quadratic betas not squared | schedule_coefficients[quadratic] |
| schedule.py: posterior coef x0 with alpha_bar_t | schedule_coefficients[linear] |
| schedule.py: posterior coef xt with (1 - beta) | schedule_coefficients[linear] |
| schedule.py: posterior variance = beta | schedule_coefficients[linear] |
| schedule.py: variance clip 1e-20 -> 0 | schedule_coefficients[linear] |
| samplers.py: ancestral noise added at t = 0 too | sampling[baseline-linear] |
| schedule.py: x0 coef sqrt(1 - alpha_bar) | schedule_coefficients[linear] |
| schedule.py: forward noise coef (1 - alpha_bar) | schedule_coefficients[linear] |
| engine.py: EMA power 2/3 -> 3/4 | each_step_from_the_same_state[baseline-0.0] |
| engine.py: EMA epoch off by one | each_step_from_the_same_state[baseline-0.0] |
| engine.py: EMA lerp weight decay, not 1 - decay | each_step_from_the_same_state[baseline-0.0] |
| engine.py: clip scale not capped at 1 | each_step_from_the_same_state[baseline-0.0] |
| settings.py: grad_clip default 0.5 -> 1.0 | protocol_defaults_are_spec_section_1 |
| engine.py: cosine lr one step late | each_step_from_the_same_state[baseline-0.0] |
| engine.py: constant lr | each_step_from_the_same_state[baseline-0.0] |
| engine.py: Adam instead of AdamW | each_step_from_the_same_state[baseline-0.0] |
| engine.py: last partial batch kept | data_order_and_noise_are_the_documented_ones |
| engine.py: one permutation for every epoch | data_order_and_noise_are_the_documented_ones |
| engine.py: EMA skips the post-warm-up copy | each_step_from_the_same_state[baseline-0.0] |
| samplers.py: trace of sample 0, not the mean | sampling[B1_simple-linear] |
| engine.py: recorded loss = objective, not MSE | training[baseline-0.1] |
| evaluation.py: eval_loss / n instead of / 2n | eval_loss_with_the_online_weights[baseline] |
| evaluation.py: eval_loss draws eps before t | eval_loss_with_the_online_weights[baseline] |
| models/layers.py: init bound from fan_out | initialisation_is_pytorch_default_linear |

Not caught, by construction: engine.py EMA copy phase `step <= warmup` -> `step < warmup` is an
equivalent mutant (the first update after the copy phase copies too, so step 100 copies either
way).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from lowdiff import data
from lowdiff.engine import CHUNK_STEPS, BatchSource, Member, TrainConfig, Trainer, stream_generators
from lowdiff.evaluation import EvalConfig, eval_loss
from lowdiff.models import ModelConfig, build_model
from lowdiff.samplers import sample
from lowdiff.schedule import NoiseSchedule, ScheduleConfig

from . import reference as ref

CPU = torch.device("cpu")
E, H, L = 16, 32, 3  # tiny widths; L is the protocol's 3
STEPS, BATCH = 250, 64  # 600 points: 9 batches an epoch, 3 chunks of random numbers
NUM_POINTS, NUM_SAMPLES = 600, 300
MEMBERS = (Member("moons", 0), Member("dino", 3))  # M = 2: different datasets and seeds


@dataclass(frozen=True)
class Variant:
    config: ModelConfig
    build: Callable[[], nn.Module]


def small(**options: object) -> ModelConfig:
    return ModelConfig(embedding_dim=E, hidden_dim=H, **options)


VARIANTS = {
    "baseline": Variant(small(), lambda: ref.MLPDenoiser(E, H, L)),
    "A1_fixed": Variant(
        small(arch="dual_scale", weighting="fixed"), lambda: ref.DualScaleFixed(E, H, L)
    ),
    "A2_learned": Variant(small(arch="dual_scale"), lambda: ref.DualScaleLearned(E, H, L)),
    "A5_deep": Variant(
        small(arch="dual_scale", weighting="learned_deep"), lambda: ref.DualScaleDeep(E, H, L)
    ),
    "A2_zoom": Variant(
        small(arch="dual_scale", upscale="fixed", zoom=3.0),
        lambda: ref.DualScaleLearned(E, H, L, zoom=3.0),
    ),
    "B1_simple": Variant(small(arch="dual_expert"), lambda: ref.DualExpert(E, H, L)),
    "B2_enhanced": Variant(
        small(arch="dual_expert", gate="enhanced"), lambda: ref.DualExpertEnhanced(E, H, L)
    ),
    "B3_larger": Variant(
        small(arch="dual_expert", gate="enhanced", larger_experts=True),
        lambda: ref.DualExpertEnhanced(E, H, L, larger_experts=True),
    ),
}


# --- which engine layer is which reference layer -----------------------------------------------


def _trunk(engine: str, reference: str, extra: bool) -> dict[str, str]:
    names = {f"{engine}.input": f"{reference}.0"}
    names |= {f"{engine}.blocks.{i}.linear": f"{reference}.{i + 1}.ff" for i in range(L)}
    if extra:
        names |= {
            f"{engine}.extra": f"{reference}.{L + 2}",
            f"{engine}.output": f"{reference}.{L + 4}",
        }
    else:
        names[f"{engine}.output"] = f"{reference}.{L + 2}"
    return names


def layer_names(config: ModelConfig) -> dict[str, str]:
    """Engine layer prefix -> reference nn.Linear prefix, for every linear layer of `config`."""
    if config.arch == "mlp":
        return _trunk("network", "network", False)
    if config.arch == "dual_scale":
        names = _trunk("global_branch", "global_network", False)
        names |= _trunk("local_branch", "local_network", False)
        if config.upscale == "learned":
            names["upscale"] = "upscale"
        if config.weighting == "learned":
            names |= {
                "weight_network.hidden": "weight_network.0",
                "weight_network.output": "weight_network.2",
            }
        if config.weighting == "learned_deep":
            names |= {f"weight_network.layers.{i}": f"weight_network.{2 * i}" for i in range(3)}
        return names
    names = {"gate.input": "gating_network.0"}
    if config.gate == "enhanced":
        names |= {"gate.hidden.0": "gating_network.2", "gate.output": "gating_network.4"}
    else:
        names["gate.output"] = "gating_network.2"
    for k in range(2):
        names |= _trunk(f"experts.{k}", f"expert{k + 1}", config.larger_experts)
    return names


def engine_as_reference(
    model: nn.Module | dict[str, torch.Tensor], m: int, config: ModelConfig
) -> dict[str, torch.Tensor]:
    """Model m's parameters in the reference's names and nn.Linear layout ((out, in), (out,))."""
    engine = dict(model if isinstance(model, dict) else model.named_parameters())
    out = {}
    for source, target in layer_names(config).items():
        out[f"{target}.weight"] = engine.pop(f"{source}.weight").detach()[m].T.clone()
        out[f"{target}.bias"] = engine.pop(f"{source}.bias").detach()[m].reshape(-1).clone()
    assert not engine, f"engine parameters not mapped: {sorted(engine)}"
    return out


def load_reference(model: nn.Module, engine: nn.Module, m: int, config: ModelConfig) -> nn.Module:
    """Copy model m of the engine into the reference module (every parameter, exactly)."""
    state = engine_as_reference(engine, m, config)
    assert set(state) == {name for name, _ in model.named_parameters()}
    model.load_state_dict(state, strict=True)
    return model


# --- shared runs ---------------------------------------------------------------------------------


@functools.cache
def datasets() -> dict[str, torch.Tensor]:
    return {m.dataset: torch.from_numpy(data.load(m.dataset, NUM_POINTS)) for m in MEMBERS}


@functools.cache
def trained(variant: str, diversity: float):
    """The engine's batched run and, per member, the reference's run from the same start."""
    config = VARIANTS[variant].config
    train = TrainConfig(num_steps=STEPS, batch_size=BATCH, diversity_weight=diversity)
    trainer = Trainer(config, MEMBERS, datasets(), NoiseSchedule(ScheduleConfig()), train, CPU)
    references = []
    for m, member in enumerate(MEMBERS):
        model = load_reference(VARIANTS[variant].build(), trainer.model, m, config)
        g = stream_generators(member, CPU)
        stream = ref.batches(
            datasets()[member.dataset], g["data"], g["noise"], BATCH, 100, STEPS, CHUNK_STEPS
        )
        losses, ema = ref.train(model, ref.Schedule(), stream, STEPS, diversity_weight=diversity)
        references.append((np.array(losses), model, ema.ema_model))
    return trainer.run(), references


def assert_close_weights(engine: dict[str, torch.Tensor], reference: nn.Module, what: str) -> None:
    """Every tensor within 5e-3 relative (Frobenius) of the reference (a wiring error is O(1)).

    Float32 rounding alone keeps most runs within 1e-7; now and then a ReLU pre-activation sits
    within rounding of 0 for one sample, the two sides take different branches and one gradient
    entry differs by that sample's share, which Adam carries on: up to ~1.6e-3 after 250 steps
    (A2_zoom's local branch). `test_each_step_matches_reference` pins every update tightly.
    """
    for name, value in reference.named_parameters():
        error = (engine[name] - value).norm() / value.norm().clamp(min=1e-12)
        assert error <= 5e-3, f"{what} {name}: relative error {error:.2e}"


@pytest.mark.parametrize("diversity", [0.0, 0.1])
@pytest.mark.parametrize("variant", VARIANTS)
def test_training_matches_reference(variant, diversity):
    """Per-step losses, final weights and EMA weights of a batch of M = 2 models (two datasets,
    two seeds) equal the plain loop's over 250 steps: ~28 epochs, 3 chunks of random numbers, the
    EMA's copy phase and 14 EMA updates after it. diversity = 0.1 is protocol §3 run 4's loss."""
    result, references = trained(variant, diversity)
    config = VARIANTS[variant].config
    assert result.losses.shape == (len(MEMBERS), STEPS)
    for m, (losses, model, ema_model) in enumerate(references):
        np.testing.assert_allclose(result.losses[m], losses, rtol=1e-3, atol=0)
        assert_close_weights(engine_as_reference(result.model, m, config), model, "weights")
        assert_close_weights(engine_as_reference(result.ema_model, m, config), ema_model, "EMA")


@pytest.mark.parametrize("kind", ["linear", "quadratic"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_sampling_with_the_ema_weights_matches_reference(variant, kind):
    """The template's ancestral loop on the trained EMA weights, same N(0, I) draws: points, the
    weight trace (T, K) from t = T-1 down, and the per-sample weights at t = 0."""
    result, _ = trained(variant, 0.0)
    config = VARIANTS[variant].config
    schedule = NoiseSchedule(ScheduleConfig(beta_schedule=kind))
    generators = [stream_generators(member, CPU)["sample"] for member in MEMBERS]
    drawn = sample(result.ema_model, schedule, generators, CPU, num_samples=NUM_SAMPLES)
    for m, member in enumerate(MEMBERS):
        model = load_reference(VARIANTS[variant].build(), result.ema_model, m, config)
        generator = stream_generators(member, CPU)["sample"]
        points, trace, final = ref.sample(model, ref.Schedule(kind), NUM_SAMPLES, generator)
        np.testing.assert_allclose(drawn.points[m], points.numpy(), rtol=1e-5, atol=2e-5)
        if trace is None:
            assert drawn.weight_trace is None and drawn.final_weights is None
            continue
        np.testing.assert_allclose(drawn.weight_trace[m], trace.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(drawn.final_weights[m], final.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_loss_with_the_online_weights_matches_reference(variant):
    """eval_loss: the trained (non-EMA) weights over one in-order pass of the training points,
    fresh t then eps per batch of 256 from the model's eval stream (docs/protocol.md dev. 2)."""
    result, _ = trained(variant, 0.0)
    config = VARIANTS[variant].config
    points = torch.stack([datasets()[member.dataset] for member in MEMBERS])
    generators = [stream_generators(member, CPU)["eval"] for member in MEMBERS]
    losses = eval_loss(result.model, NoiseSchedule(ScheduleConfig()), points, generators, 256)
    for m, member in enumerate(MEMBERS):
        model = load_reference(VARIANTS[variant].build(), result.model, m, config)
        generator = stream_generators(member, CPU)["eval"]
        expected = ref.eval_loss(model, ref.Schedule(), points[m], generator, 256)
        assert losses[m] == pytest.approx(expected, rel=1e-5)
        ema = load_reference(VARIANTS[variant].build(), result.ema_model, m, config)
        generator = stream_generators(member, CPU)["eval"]
        assert ref.eval_loss(ema, ref.Schedule(), points[m], generator, 256) != pytest.approx(
            expected, rel=1e-5
        ), "the online and EMA weights should differ after 250 steps"


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_at_initialisation_matches_reference(variant):
    """Each architecture is the protocol's network: same weights, same eps_hat and mixing
    weights, for per-sample timesteps and for one timestep shared by the batch (as in sampling)."""
    config = VARIANTS[variant].config
    model = build_model(config, len(MEMBERS), 100)
    model.reset_parameters([stream_generators(member, CPU)["init"] for member in MEMBERS])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(len(MEMBERS), 128, 2, generator=generator) * 2
    t = torch.randint(0, 100, (len(MEMBERS), 128), generator=generator)
    per_sample, shared = model(x, t), model(x, 37)
    for m in range(len(MEMBERS)):
        reference = load_reference(VARIANTS[variant].build(), model, m, config)
        for output, timesteps in ((per_sample, t[m]), (shared, torch.full((128,), 37))):
            eps, weights = reference(x[m], timesteps)
            torch.testing.assert_close(output.eps[m], eps, rtol=1e-5, atol=1e-6)
            if weights is None:
                assert output.weights is None
            else:
                torch.testing.assert_close(
                    output.weights[m].expand_as(weights), weights, rtol=1e-5, atol=1e-6
                )


@pytest.mark.parametrize("kind", ["linear", "quadratic"])
def test_schedule_coefficients_match_reference(kind):
    """Betas, alpha_bar, x0 inversion, posterior mean coefficients and the variance clipped at
    1e-20 (the clip shows at t = 0, where the unclipped variance is exactly 0)."""
    engine, reference = NoiseSchedule(ScheduleConfig(beta_schedule=kind)), ref.Schedule(kind)
    for name, expected in reference.table.items():
        torch.testing.assert_close(getattr(engine, name), expected, rtol=1e-6, atol=0, msg=name)
    assert reference.posterior_variance[0] == pytest.approx(1e-20)


def test_data_order_and_noise_are_the_documented_ones():
    """The engine's batch source draws exactly what the reference stream draws, per model:
    epochs of floor(n / B) batches from a fresh randperm, t then eps a chunk at a time."""
    points = torch.stack([datasets()[member.dataset] for member in MEMBERS])
    generators = [stream_generators(member, CPU) for member in MEMBERS]
    source = BatchSource(points, torch.arange(len(MEMBERS)), generators, BATCH, 100)
    chunks = [
        source.next_chunk(min(CHUNK_STEPS, STEPS - first)) for first in range(0, STEPS, CHUNK_STEPS)
    ]
    x0, t, eps = (torch.cat(parts) for parts in zip(*chunks, strict=True))
    for m, member in enumerate(MEMBERS):
        g = stream_generators(member, CPU)
        stream = ref.batches(points[m], g["data"], g["noise"], BATCH, 100, STEPS, CHUNK_STEPS)
        for step, (x0_ref, t_ref, eps_ref) in enumerate(stream):
            assert torch.equal(x0[step, m], x0_ref), step
            assert torch.equal(t[step, m], t_ref) and torch.equal(eps[step, m], eps_ref), step


def test_initialisation_is_pytorch_default_linear():
    """Every layer is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weights and biases (protocol §1: PyTorch
    default init; docs/protocol.md dev. 5), and models of one batch differ."""
    config = VARIANTS["B3_larger"].config
    model = build_model(config, len(MEMBERS), 100)
    model.reset_parameters([stream_generators(member, CPU)["init"] for member in MEMBERS])
    reference = VARIANTS["B3_larger"].build()
    scaled = []
    for m in range(len(MEMBERS)):
        state = engine_as_reference(model, m, config)
        for name, layer in reference.named_modules():
            if isinstance(layer, nn.Linear):
                bound = ref.linear_bound(layer)
                scaled += [state[f"{name}.weight"].flatten() / bound, state[f"{name}.bias"] / bound]
    values = torch.cat(scaled).numpy()
    assert np.abs(values).max() <= 1.0
    assert stats.kstest(values, stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    first = next(model.parameters())
    assert not torch.equal(first[0], first[1])


def test_protocol_defaults_are_spec_section_1():
    """The defaults every config falls back to (and cell keys are taken relative to)."""
    assert ModelConfig() == ModelConfig(
        arch="mlp",
        embedding_dim=128,
        hidden_dim=256,
        hidden_layers=3,
        input_scale=25.0,
        time_scale=1.0,
    )
    expected_train = {
        "num_steps": 10_000,
        "batch_size": 256,
        "learning_rate": 3e-4,
        "grad_clip": 0.5,
        "ema_beta": 0.995,
        "ema_update_every": 10,
        "ema_warmup_steps": 100,
        "diversity_weight": 0.0,
    }
    train = TrainConfig()
    for field in fields(TrainConfig):
        if field.name in expected_train:
            assert getattr(train, field.name) == expected_train[field.name], field.name
    schedule = ScheduleConfig()
    assert (schedule.num_timesteps, schedule.beta_schedule) == (100, "linear")
    assert (schedule.beta_start, schedule.beta_end) == (1e-4, 0.02)
    assert EvalConfig().num_samples == 10_000 and EvalConfig().knn_k == 5


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).norm() / expected.norm().clamp(min=1e-12))


def replay_step_by_step(variant, diversity, m, snapshots) -> None:
    """Reference steps for model m, each from the engine's weights before it (see below)."""
    config = VARIANTS[variant].config
    model = VARIANTS[variant].build()
    model.load_state_dict(engine_as_reference(snapshots[0][0], m, config))
    g = stream_generators(MEMBERS[m], CPU)
    points = datasets()[MEMBERS[m].dataset]
    stream = ref.batches(points, g["data"], g["noise"], BATCH, 100, STEPS, CHUNK_STEPS)
    step = 0

    def check_and_resync(ema: ref.EMA) -> None:
        nonlocal step
        step += 1
        before = engine_as_reference(snapshots[step - 1][0], m, config)
        after = engine_as_reference(snapshots[step][0], m, config)
        after_ema = engine_as_reference(snapshots[step][1], m, config)
        for name, p in model.named_parameters():
            update_size = (after[name] - before[name]).norm().clamp(min=1e-12)
            error = float((p.detach() - after[name]).norm() / update_size)
            assert error < 1e-2, f"step {step - 1} {name}: {error:.2e} of the update"
        for name, p in ema.ema_model.named_parameters():
            error = relative_error(p.detach(), after_ema[name])
            assert error < 1e-5, f"EMA step {step - 1} {name}: {error:.2e}"
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(after[name])

    ref.train(
        model, ref.Schedule(), stream, STEPS, diversity_weight=diversity, on_step=check_and_resync
    )
    assert step == STEPS


@pytest.mark.parametrize(("variant", "diversity"), [("baseline", 0.0), ("B3_larger", 0.1)])
def test_each_step_matches_reference_from_the_same_state(variant, diversity):
    """Step by step over 250 steps: from the engine's weights before step s, the reference's
    AdamW / clipping / cosine-lr step lands on the engine's weights after step s, and its EMA
    (ema-pytorch) on the engine's EMA. Re-synchronising the weights every step keeps float
    noise from compounding, so the tolerances are tight: 1e-2 of a step's update (float noise:
    ~1e-3 at worst), 1e-5 relative for the EMA (float noise: ~3e-7)."""
    config = VARIANTS[variant].config
    train = TrainConfig(num_steps=STEPS, batch_size=BATCH, diversity_weight=diversity)
    trainer = Trainer(config, MEMBERS, datasets(), NoiseSchedule(ScheduleConfig()), train, CPU)

    def stacked(model: nn.Module) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in model.named_parameters()}

    snapshots = [(stacked(trainer.model), None)]
    update = trainer.ema.update

    def record(model: nn.Module) -> None:  # the engine calls ema.update once after every step
        update(model)
        snapshots.append((stacked(model), stacked(trainer.ema.model)))

    trainer.ema.update = record
    trainer.run()
    assert len(snapshots) == STEPS + 1
    for m in range(len(MEMBERS)):
        replay_step_by_step(variant, diversity, m, snapshots)
