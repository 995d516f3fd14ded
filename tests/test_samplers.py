"""Samplers: the protocol's ancestral sampler bit for bit, and DDIM / DPM-Solver++ against closed
forms for Gaussian data, where the Bayes-optimal denoiser and the exact probability-flow ODE are
known."""

import math
import typing
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from lowdiff import catalogue
from lowdiff.config import load_experiment
from lowdiff.evaluation import EvalConfig
from lowdiff.models import DenoiserOutput, ModelConfig, build_model
from lowdiff.samplers import (
    DDIM,
    SAMPLERS,
    SamplerName,
    make_sampler,
    sample,
    sampling_timesteps,
    snapshot_steps,
)
from lowdiff.schedule import NoiseSchedule, ScheduleConfig, make_betas

CPU = torch.device("cpu")
MU, SCALE = torch.tensor([1.0, -2.0]), 0.5  # the Gaussian data N(MU, SCALE^2 I)
EXPERIMENTS = Path(__file__).parent.parent / "experiments"


def generators(seeds, stream=0):
    return [torch.Generator().manual_seed(1000 * stream + s) for s in seeds]


class GaussianOracle(nn.Module):
    """The Bayes-optimal eps for x0 ~ N(MU, SCALE^2 I): E[eps | x_t] =
    (x_t - sqrt(ab) MU) sqrt(1 - ab) / (ab SCALE^2 + 1 - ab), written from the closed form."""

    def __init__(self, config: ScheduleConfig, num_models: int = 1) -> None:
        super().__init__()
        self.alpha_bar = torch.cumprod(1 - make_betas(config), dim=0).tolist()
        self.num_models = num_models

    def forward(self, xt, t):
        ab = self.alpha_bar[t]
        eps = (xt.double() - math.sqrt(ab) * MU) * math.sqrt(1 - ab) / (ab * SCALE**2 + 1 - ab)
        return DenoiserOutput(eps.float(), None)


def exact_flow(config: ScheduleConfig, z: torch.Tensor) -> torch.Tensor:
    """Where the probability-flow ODE takes x_{T-1} = z at sigma = 0: along it
    x_t = sqrt(ab) MU + sqrt(ab SCALE^2 + 1 - ab) u with u constant, and x_data = MU + SCALE u."""
    ab = torch.cumprod(1 - make_betas(config), dim=0)[-1].item()
    return MU + SCALE * (z.double() - math.sqrt(ab) * MU) / math.sqrt(ab * SCALE**2 + 1 - ab)


def flow_error(config, sampler, steps, n=2000):
    schedule = NoiseSchedule(config)
    drawn = sample(
        GaussianOracle(config), schedule, generators([0]), CPU, num_samples=n, sampler=sampler,
        sampling_steps=steps,
    )  # fmt: skip
    z = torch.randn((n, 2), generator=generators([0])[0])  # the same initial noise
    return np.abs(drawn.points[0] - exact_flow(config, z).numpy()).max()


def small_model(arch, seeds, num_timesteps=100):
    model = build_model(
        ModelConfig(arch=arch, hidden_dim=16, embedding_dim=8), len(seeds), num_timesteps
    )
    model.reset_parameters(generators(seeds, stream=1))
    return model


# --- the protocol's sampler, bit for bit -------------------------------------------------------


@torch.no_grad()
def reference_sample(model, config, num_samples, generators, device, rows=4096):
    """A literal copy of the ancestral sampler as lowdiff first shipped it (its first sampler,
    with NoiseSchedule's coefficients and step inlined): the protocol's draws, order and maths."""
    betas = make_betas(config)
    alpha_bar = torch.cumprod(1.0 - betas, dim=0)
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    c = {
        "sqrt_inv_alpha_bar": (1.0 / alpha_bar).sqrt(),
        "sqrt_inv_alpha_bar_minus_one": (1.0 / alpha_bar - 1.0).sqrt(),
        "posterior_coef_x0": betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar),
        "posterior_coef_xt": (1.0 - alpha_bar_prev) * (1.0 - betas).sqrt() / (1.0 - alpha_bar),
        "posterior_variance": (betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)).clamp(min=1e-20),
    }
    c = {name: value.to(device=device, dtype=torch.float32) for name, value in c.items()}

    def at(coefficient, t):
        return coefficient[t].unsqueeze(-1)

    def step(eps_hat, t, xt, noise):
        index = torch.tensor(t, device=xt.device)
        x0_hat = (
            at(c["sqrt_inv_alpha_bar"], index) * xt
            - at(c["sqrt_inv_alpha_bar_minus_one"], index) * eps_hat
        )
        mean = at(c["posterior_coef_x0"], index) * x0_hat + at(c["posterior_coef_xt"], index) * xt
        if t == 0:
            return mean
        return mean + c["posterior_variance"][t].sqrt() * noise

    def denoise_in_chunks(xt, t, rows):
        outputs = [model(xt[:, start : start + rows], t) for start in range(0, xt.shape[1], rows)]
        eps = torch.cat([output.eps for output in outputs], dim=1)
        if outputs[0].weights is None:
            return eps, None
        return eps, torch.cat([output.weights for output in outputs], dim=1)

    per_model = max(64, rows // model.num_models)

    def normal():
        return torch.stack(
            [torch.randn((num_samples, 2), generator=g, device=device) for g in generators]
        )

    xt = normal()
    trace, weights = [], None
    for t in range(config.num_timesteps - 1, -1, -1):
        eps_hat, weights = denoise_in_chunks(xt, t, per_model)
        if weights is not None:
            trace.append(weights.mean(dim=1))
        xt = step(eps_hat, t, xt, normal() if t > 0 else None)
    trace = torch.stack(trace, dim=1).numpy() if trace else None
    return xt.numpy(), trace, weights.numpy() if weights is not None else None


@pytest.mark.parametrize("arch", ["mlp", "dual_scale", "dual_expert"])
def test_ancestral_is_bit_identical_to_the_protocol_sampler(arch):
    config = ScheduleConfig()
    model = small_model(arch, [0, 1])
    points, trace, final = reference_sample(model, config, 300, generators([0, 1]), CPU, rows=256)
    drawn = sample(
        model,
        NoiseSchedule(config),
        generators([0, 1]),
        CPU,
        num_samples=300,
        rows=256,
        snapshots=6,
    )
    np.testing.assert_array_equal(drawn.points, points)
    if arch == "mlp":
        assert drawn.weight_trace is None and drawn.final_weights is None
    else:
        np.testing.assert_array_equal(drawn.weight_trace, trace)
        np.testing.assert_array_equal(drawn.final_weights, final)
    np.testing.assert_array_equal(drawn.trace_timesteps, np.arange(99, -1, -1))


def test_the_default_sampler_in_row_chunks_is_the_protocol_sampler():
    config, model = ScheduleConfig(num_timesteps=20), small_model("dual_scale", [0, 1], 20)
    drawn = sample(model, NoiseSchedule(config), generators([0, 1]), CPU, num_samples=64, rows=64)
    points, trace, final = reference_sample(model, config, 64, generators([0, 1]), CPU, rows=64)
    np.testing.assert_array_equal(drawn.points, points)
    np.testing.assert_array_equal(drawn.weight_trace, trace)
    np.testing.assert_array_equal(drawn.final_weights, final)


def test_ancestral_draws_nothing_more_than_the_protocol():
    config, model = ScheduleConfig(num_timesteps=20), small_model("mlp", [0], 20)
    ours, theirs = generators([4]), generators([4])
    sample(model, NoiseSchedule(config), ours, CPU, num_samples=50, snapshots=3)
    reference_sample(model, config, 50, theirs, CPU)
    assert torch.equal(ours[0].get_state(), theirs[0].get_state())


# --- DDIM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [0, 20])
def test_ddim_variance_at_eta_one_is_the_posterior_variance(steps):
    # sigma^2 of Song et al. 2021 eq. 16 (from alpha_bar) = beta_tilde of Ho et al. 2020 eq. 7
    config = ScheduleConfig()
    ddim = DDIM(NoiseSchedule(config), steps, eta=1.0)
    timesteps = sampling_timesteps(100, steps)[::-1]
    alpha_bar = torch.cumprod(1 - make_betas(config), dim=0)[timesteps]
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    betas = 1 - alpha_bar / alpha_bar_prev if steps else make_betas(config)
    beta_tilde = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)
    assert ddim.variance[0] == 0  # the step into the data is noise-free
    np.testing.assert_allclose(ddim.variance[1:].numpy(), beta_tilde[1:].numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        ddim.sigma[1:].square().numpy(), ddim.schedule.posterior_variance[1:].numpy(), rtol=1e-6
    )


@pytest.mark.parametrize("steps", [0, 20])
def test_ddim_with_eta_one_follows_ancestral_path_by_path(steps):
    # the same draws in the same order, and the same maths up to float rounding
    model, schedule = small_model("dual_expert", [0, 1]), NoiseSchedule(ScheduleConfig())
    kwargs = {"num_samples": 200, "sampling_steps": steps}
    ancestral = sample(model, schedule, generators([0, 1]), CPU, **kwargs)
    ddim = sample(model, schedule, generators([0, 1]), CPU, sampler="ddim", eta=1.0, **kwargs)
    np.testing.assert_allclose(ddim.points, ancestral.points, atol=2e-4)
    np.testing.assert_allclose(ddim.weight_trace, ancestral.weight_trace, atol=1e-5)


def test_ddim_with_eta_zero_is_deterministic_after_the_initial_noise():
    model, schedule = small_model("mlp", [0]), NoiseSchedule(ScheduleConfig())
    used = generators([7])
    a = sample(model, schedule, used, CPU, num_samples=100, sampler="ddim", sampling_steps=10)
    fresh = generators([7])
    torch.randn((100, 2), generator=fresh[0])
    assert torch.equal(used[0].get_state(), fresh[0].get_state())  # no draw after the noise
    b = sample(
        model, schedule, generators([7]), CPU, num_samples=100, sampler="ddim", sampling_steps=10
    )
    np.testing.assert_array_equal(a.points, b.points)


def test_ddim_with_eta_zero_solves_the_probability_flow_ode_of_a_gaussian():
    config = ScheduleConfig()
    errors = {steps: flow_error(config, "ddim", steps) for steps in (25, 50, 100)}
    assert errors[100] < 0.03  # of a spread of 4 * SCALE: path by path, to 1.5%
    for coarse, fine in ((25, 50), (50, 100)):  # first order: the error halves with the step
        assert 0.4 < errors[fine] / errors[coarse] < 0.6


# --- DPM-Solver++(2M) ------------------------------------------------------------------------


@pytest.mark.parametrize("num_timesteps", [100, 1000])
def test_dpm_solver_pp_converges_to_the_exact_flow(num_timesteps):
    config = ScheduleConfig(num_timesteps=num_timesteps)
    dpm = {steps: flow_error(config, "dpm_solver_pp", steps) for steps in (10, 20, 50)}
    ddim = {steps: flow_error(config, "ddim", steps) for steps in (10, 20, 50)}
    assert dpm[50] < dpm[20] < dpm[10]
    assert dpm[10] < ddim[10]
    assert dpm[20] < ddim[20] / 2 and dpm[50] < ddim[50] / 4  # second order beats first
    if num_timesteps == 1000:
        assert dpm[20] < dpm[10] / 3  # second order: about 1/4 per halving of the step


# --- Heun (two evaluations per step) ---------------------------------------------------------


def karras_heun_reference(config, z, steps):
    """Karras et al. 2022 Algorithm 1 written out literally on the sigmas of the sampling
    timesteps (sigma~ = sqrt((1 - ab) / ab), x~ = x / sqrt(ab)), D = x~ - sigma~ eps_hat."""
    oracle = GaussianOracle(config)
    timesteps = sampling_timesteps(config.num_timesteps, steps)
    ab = [oracle.alpha_bar[t] for t in timesteps]
    sigmas = [math.sqrt((1 - a) / a) for a in ab] + [0.0]

    def denoiser(x_ve, i):  # D(x~; sigma_i): the x0 prediction at timestep i
        eps = oracle(x_ve * math.sqrt(ab[i]), timesteps[i]).eps.double()
        return x_ve - sigmas[i] * eps

    x = z.double() / math.sqrt(ab[0])
    for i in range(len(timesteps)):
        d = (x - denoiser(x, i)) / sigmas[i]
        x_next = x + (sigmas[i + 1] - sigmas[i]) * d
        if sigmas[i + 1] != 0:
            d_next = (x_next - denoiser(x_next, i + 1)) / sigmas[i + 1]
            x_next = x + (sigmas[i + 1] - sigmas[i]) * (0.5 * d + 0.5 * d_next)
        x = x_next
    return x


@pytest.mark.parametrize("steps", [1, 5, 20])
def test_heun_is_karras_algorithm_1_on_the_discrete_grid(steps):
    config = ScheduleConfig()
    drawn = sample(
        GaussianOracle(config), NoiseSchedule(config), generators([0]), CPU, num_samples=500,
        sampler="heun", sampling_steps=steps,
    )  # fmt: skip
    z = torch.randn((500, 2), generator=generators([0])[0])
    expected = karras_heun_reference(config, z[None], steps)[0].numpy()
    np.testing.assert_allclose(drawn.points[0], expected, atol=2e-4)


def test_heun_converges_at_second_order_to_the_exact_flow():
    config = ScheduleConfig(num_timesteps=1000)
    heun = {steps: flow_error(config, "heun", steps) for steps in (10, 20, 40)}
    ddim = {steps: flow_error(config, "ddim", steps) for steps in (10, 20, 40)}
    assert heun[40] < heun[20] < heun[10]
    assert heun[20] < ddim[20] / 4 and heun[40] < ddim[40] / 8  # second order beats first
    assert heun[40] < heun[20] / 3  # about 1/4 per halving of the step


class CountingOracle(GaussianOracle):
    calls = 0

    def forward(self, xt, t):
        self.calls += 1
        return super().forward(xt, t)


@pytest.mark.parametrize("name", list(catalogue.SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 9])
def test_network_evaluations_are_those_the_catalogue_declares(name, steps):
    config = ScheduleConfig()
    model = CountingOracle(config)
    sample(model, NoiseSchedule(config), generators([0]), CPU, num_samples=50, sampler=name,
           sampling_steps=steps)  # fmt: skip
    assert model.calls == catalogue.SAMPLERS[name].evaluations(steps)


# --- DPM-Solver++(2M) SDE ---------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2])
def test_the_sde_solvers_first_order_steps_are_ancestral_steps(steps):
    # with at most two steps no step is second order: the DDPM posterior step, draw for draw
    config, model = ScheduleConfig(), small_model("mlp", [0, 1])
    kwargs = {"num_samples": 200, "sampling_steps": steps}
    schedule = NoiseSchedule(config)
    sde = sample(model, schedule, generators([0, 1]), CPU, sampler="dpm_solver_pp_sde", **kwargs)
    ancestral = sample(model, schedule, generators([0, 1]), CPU, sampler="ancestral", **kwargs)
    np.testing.assert_allclose(sde.points, ancestral.points, atol=1e-5)


def test_the_sde_solver_agrees_with_ancestral_sampling_at_many_steps():
    config = ScheduleConfig(num_timesteps=1000)
    drawn = {
        name: sample(
            GaussianOracle(config), NoiseSchedule(config), generators([seed]), CPU,
            num_samples=20_000, sampler=name, sampling_steps=steps,
        ).points[0]
        for name, steps, seed in (("dpm_solver_pp_sde", 250, 1), ("ancestral", 0, 2))
    }  # fmt: skip
    for axis in (0, 1):  # two independent samples of one law: KS p-value not small
        result = scipy.stats.ks_2samp(
            drawn["dpm_solver_pp_sde"][:, axis], drawn["ancestral"][:, axis]
        )
        assert result.pvalue > 0.01
    np.testing.assert_allclose(
        drawn["dpm_solver_pp_sde"].std(axis=0), drawn["ancestral"].std(axis=0), rtol=0.03
    )


# --- every sampler: the data distribution ----------------------------------------------------

# T = 1000 (standard DDPM) ends at alpha_bar = 4e-5, so N(0, I) is the right start: the samplers'
# error is then their own. Step counts where each is accurate to about 1% of the std.
ACCURATE = [
    ("ancestral", 0.0, 0),
    ("ancestral", 0.0, 500),
    ("ddim", 0.0, 200),
    ("ddim", 0.0, 0),
    ("ddim", 1.0, 0),
    ("dpm_solver_pp", 0.0, 50),
    ("dpm_solver_pp", 0.0, 100),
    ("heun", 0.0, 50),
    ("dpm_solver_pp_sde", 0.0, 200),
]


@pytest.mark.parametrize(("name", "eta", "steps"), ACCURATE)
def test_every_sampler_returns_the_gaussian_data_distribution(name, eta, steps):
    config = ScheduleConfig(num_timesteps=1000)
    drawn = sample(
        GaussianOracle(config, 2), NoiseSchedule(config), generators([0, 1]), CPU,
        num_samples=10_000, sampler=name, sampling_steps=steps, eta=eta,
    )  # fmt: skip
    for points in drawn.points:  # sd of the mean 0.005, of the std 0.0035
        np.testing.assert_allclose(points.mean(axis=0), MU.numpy(), atol=0.02)
        np.testing.assert_allclose(points.std(axis=0), [SCALE, SCALE], atol=0.02)
        assert abs(np.corrcoef(points.T)[0, 1]) < 0.04


@pytest.mark.parametrize("name", list(catalogue.SAMPLERS))
def test_with_few_steps_the_mean_holds_and_the_spread_converges(name):
    config = ScheduleConfig(num_timesteps=1000)
    spread = {}
    for steps in (10, 20, 50):
        drawn = sample(
            GaussianOracle(config), NoiseSchedule(config), generators([0]), CPU,
            num_samples=10_000, sampler=name, sampling_steps=steps,
        )  # fmt: skip
        np.testing.assert_allclose(drawn.points[0].mean(axis=0), MU.numpy(), atol=0.03)
        spread[steps] = abs(drawn.points[0].std(axis=0).mean() - SCALE)
    assert spread[50] < spread[20] < spread[10]


# --- recording, snapshots, chunks ------------------------------------------------------------


@pytest.mark.parametrize("name", list(catalogue.SAMPLERS))
@pytest.mark.parametrize("steps", [1, 7, 0])
def test_weights_are_recorded_at_every_step_of_any_count(name, steps):
    model, schedule = small_model("dual_scale", [3, 4]), NoiseSchedule(ScheduleConfig())
    drawn = sample(
        model, schedule, generators([3, 4]), CPU, num_samples=40, sampler=name, sampling_steps=steps
    )
    np.testing.assert_array_equal(drawn.trace_timesteps, sampling_timesteps(100, steps))
    assert drawn.weight_trace.shape == (2, steps or 100, 2)
    assert drawn.final_weights.shape == (2, 40, 2)
    per_timestep = model.weight_network(model.time_table).detach().numpy()  # (M, T, 2), row t
    np.testing.assert_allclose(
        drawn.weight_trace, per_timestep[:, drawn.trace_timesteps], atol=1e-6
    )
    last = drawn.trace_timesteps[-1]
    np.testing.assert_allclose(
        drawn.final_weights, np.broadcast_to(per_timestep[:, last, None], (2, 40, 2)), atol=1e-6
    )


def test_timesteps_are_evenly_spaced_from_the_last_to_zero():
    assert sampling_timesteps(100, 10) == [99, 88, 77, 66, 55, 44, 33, 22, 11, 0]
    assert sampling_timesteps(100, 0) == list(range(99, -1, -1))
    assert sampling_timesteps(100, 1) == [99]
    for steps in range(1, 101):
        timesteps = sampling_timesteps(100, steps)
        assert (
            len(set(timesteps)) == steps
            and timesteps[0] == 99
            and timesteps[-1] == (0 if steps > 1 else 99)
        )


@pytest.mark.parametrize("name", list(catalogue.SAMPLERS))
def test_snapshots_run_from_the_initial_noise_to_the_samples(name):
    model, schedule = small_model("mlp", [0, 1]), NoiseSchedule(ScheduleConfig())
    drawn = sample(
        model, schedule, generators([0, 1]), CPU, num_samples=30, sampler=name, sampling_steps=10,
        snapshots=4, snapshot_points=20,
    )  # fmt: skip
    np.testing.assert_array_equal(drawn.snapshot_timesteps, [99, 66, 22, -1])  # steps 0, 3, 7, 10
    assert drawn.snapshots.shape == (2, 4, 20, 2)
    initial = torch.stack([torch.randn((30, 2), generator=g) for g in generators([0, 1])])
    np.testing.assert_array_equal(drawn.snapshots[:, 0], initial[:, :20].numpy())
    np.testing.assert_array_equal(drawn.snapshots[:, -1], drawn.points[:, :20])
    many = sample(
        model, schedule, generators([0, 1]), CPU, num_samples=5, sampling_steps=3, snapshots=10
    )
    np.testing.assert_array_equal(many.snapshot_timesteps, [99, 50, 0, -1])  # at most S + 1
    assert many.snapshots.shape == (2, 4, 5, 2)
    none = sample(model, schedule, generators([0, 1]), CPU, num_samples=5, sampling_steps=3)
    assert none.snapshots is None and none.snapshot_timesteps is None
    assert snapshot_steps(100, 6) == [0, 20, 40, 60, 80, 100]


@pytest.mark.parametrize("name", list(catalogue.SAMPLERS))
def test_samples_do_not_depend_on_the_chunk_size(name):
    model, schedule = small_model("dual_expert", [0, 1]), NoiseSchedule(ScheduleConfig())
    kwargs = {"num_samples": 300, "sampler": name, "sampling_steps": 20}
    a = sample(model, schedule, generators([0, 1]), CPU, rows=64, **kwargs)
    b = sample(model, schedule, generators([0, 1]), CPU, rows=10_000, **kwargs)
    np.testing.assert_allclose(a.points, b.points, atol=1e-5)
    np.testing.assert_allclose(a.final_weights, b.final_weights, atol=1e-6)
    assert a.weight_trace.shape == (2, 20, 1) and a.final_weights.shape == (2, 300, 1)


def test_a_bf16_pass_takes_twice_the_rows_of_an_fp32_one():
    """Under a bf16 autocast the activations take half the bytes, so a pass takes twice the
    points (the cache-sized chunks of `sample`); the points denoised are the same."""
    model, schedule = small_model("mlp", [0, 1]), NoiseSchedule(ScheduleConfig())
    passes: list[int] = []
    model.register_forward_pre_hook(lambda module, args: passes.append(args[0].shape[1]))
    kwargs = {"num_samples": 1000, "sampling_steps": 2, "rows": 256}
    sample(model, schedule, generators([0, 1]), CPU, **kwargs)
    fp32, passes[:] = list(passes), []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sample(model, schedule, generators([0, 1]), CPU, **kwargs)
    assert fp32 == 2 * ([128] * 7 + [104])  # 256 rows over M = 2 models, 1000 points, 2 steps
    assert passes == 2 * ([256] * 3 + [232])


# --- names, steps and settings ---------------------------------------------------------------


def test_the_registry_and_the_config_literal_agree():
    assert set(SAMPLERS) == set(typing.get_args(SamplerName)) == set(catalogue.SAMPLERS)
    assert typing.get_type_hints(EvalConfig)["sampler"] == SamplerName
    from lowdiff.settings import ETA_SAMPLERS

    assert ETA_SAMPLERS == ("ddim",)
    config = EvalConfig()
    assert (config.sampler, config.sampling_steps, config.eta) == ("ancestral", 0, 0.0)
    assert (config.process_snapshots, config.process_points) == (6, 2000)


def test_bad_names_steps_and_settings_raise_clear_errors():
    schedule, model = NoiseSchedule(ScheduleConfig()), small_model("mlp", [0])
    with pytest.raises(
        ValueError, match="unknown sampler 'dpm'; valid: ancestral, ddim, dpm_solver_pp, heun"
    ):
        make_sampler("dpm", schedule)
    with pytest.raises(ValueError, match=r"between 1 and T = 100 \(or 0 for all T\), got 101"):
        sample(model, schedule, generators([0]), CPU, num_samples=5, sampling_steps=101)
    with pytest.raises(ValueError, match="got -1"):
        make_sampler("ddim", schedule, -1)
    with pytest.raises(ValueError, match="eta applies to the ddim sampler only"):
        make_sampler("dpm_solver_pp", schedule, eta=0.5)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        make_sampler("ddim", schedule, eta=1.5)
    with pytest.raises(ValueError, match=r"one generator per model \(1\), got 2"):
        sample(model, schedule, generators([0, 1]), CPU, num_samples=5)
    with pytest.raises(ValueError, match="snapshots must be 0"):
        sample(model, schedule, generators([0]), CPU, num_samples=5, snapshots=1)
    with pytest.raises(ValueError, match="valid: ancestral, ddim, dpm_solver_pp"):
        EvalConfig(sampler="euler")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eval.sampling_steps must be >= 0"):
        EvalConfig(sampling_steps=-2)
    with pytest.raises(ValueError, match="eval.eta applies to the ddim sampler only"):
        EvalConfig(eta=0.5)
    with pytest.raises(ValueError, match="eval.process_snapshots"):
        EvalConfig(process_snapshots=1)
    with pytest.raises(ValueError, match="eval.process_points"):
        EvalConfig(process_points=0)


def test_the_dpm_example_experiment_resolves():
    config = load_experiment(EXPERIMENTS / "sampler_dpm.toml")
    for run in config.runs:
        assert (run.eval.sampler, run.eval.sampling_steps) == ("dpm_solver_pp", 20)
        assert run.eval.sampling_steps <= run.schedule.num_timesteps
