"""Sampling and evaluation: closed-form checks and invariants."""

import numpy as np
import torch
from torch import nn

from lowdiff.evaluation import eval_loss, field_timesteps, sample, weight_field
from lowdiff.models import DenoiserOutput, ModelConfig, build_model
from lowdiff.schedule import NoiseSchedule, ScheduleConfig

CPU = torch.device("cpu")


class OptimalGaussianDenoiser(nn.Module):
    """For x0 ~ N(0, I), x_t ~ N(0, I) and E[eps | x_t] = sqrt(1 - alpha_bar_t) x_t."""

    def __init__(self, schedule: NoiseSchedule, num_models: int) -> None:
        super().__init__()
        self.schedule, self.num_models = schedule, num_models

    def forward(self, xt, t):
        return DenoiserOutput(self.schedule.sqrt_one_minus_alpha_bar[t] * xt, None)


def generators(seeds, stream=0):
    return [torch.Generator().manual_seed(1000 * stream + s) for s in seeds]


def test_sampler_with_the_optimal_denoiser_returns_the_data_distribution():
    schedule = NoiseSchedule(ScheduleConfig())
    drawn = sample(OptimalGaussianDenoiser(schedule, 2), schedule, 20_000, generators([0, 1]), CPU)
    for points in drawn.points:
        assert np.abs(points.mean(axis=0)).max() < 0.03  # sd of the mean: 1/sqrt(20000) = 0.007
        np.testing.assert_allclose(np.cov(points.T), np.eye(2), atol=0.05)


def small_model(config, seeds):
    model = build_model(config, len(seeds), 100)
    model.reset_parameters(generators(seeds, stream=1))
    return model


def test_samples_do_not_depend_on_the_chunk_size():
    schedule = NoiseSchedule(ScheduleConfig())
    model = small_model(ModelConfig(arch="dual_expert", hidden_dim=16, embedding_dim=8), [0, 1])
    a = sample(model, schedule, 300, generators([0, 1]), CPU, rows=64)
    b = sample(model, schedule, 300, generators([0, 1]), CPU, rows=10_000)
    np.testing.assert_allclose(a.points, b.points, atol=1e-5)
    np.testing.assert_allclose(a.final_weights, b.final_weights, atol=1e-6)
    assert a.weight_trace.shape == (2, 100, 1) and a.final_weights.shape == (2, 300, 1)


def test_weight_trace_runs_from_the_first_sampling_step():
    schedule = NoiseSchedule(ScheduleConfig())
    model = small_model(ModelConfig(arch="dual_scale", hidden_dim=16, embedding_dim=8), [3])
    drawn = sample(model, schedule, 50, generators([3]), CPU)
    per_timestep = model.weight_network(model.time_table).detach().numpy()  # (1, T, 2), row t
    np.testing.assert_allclose(drawn.weight_trace[0], per_timestep[0, ::-1], atol=1e-6)
    field = weight_field(model, field_timesteps(100, 3), 4, 3.0, CPU)
    assert field.shape == (1, 3, 4, 4, 2)
    assert field_timesteps(100, 3) == [99, 50, 0]


def test_eval_loss_is_the_mean_squared_error_over_all_points():
    schedule = NoiseSchedule(ScheduleConfig())
    model = small_model(ModelConfig(hidden_dim=16, embedding_dim=8), [0])
    data = torch.randn(1, 250, 2)
    chunked = eval_loss(model, schedule, data, generators([5]), chunk_size=100)
    generator = generators([5])[0]
    total = 0.0
    with torch.no_grad():
        for start in range(0, 250, 100):
            x0 = data[:, start : start + 100]
            t = torch.randint(0, 100, (1, x0.shape[1]), generator=generator)
            eps = torch.randn((1, x0.shape[1], 2), generator=generator)
            total += (model(schedule.add_noise(x0, eps, t), t).eps - eps).square().sum().item()
    assert abs(chunked[0] - total / 500) < 1e-6
