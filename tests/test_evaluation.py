"""Evaluation: eval loss against a literal recomputation; weight fields over the plane."""

import numpy as np
import torch

from lowdiff.evaluation import eval_loss, field_timesteps, weight_field
from lowdiff.models import ModelConfig, build_model
from lowdiff.schedule import NoiseSchedule, ScheduleConfig

CPU = torch.device("cpu")


def generators(seeds, stream=0):
    return [torch.Generator().manual_seed(1000 * stream + s) for s in seeds]


def small_model(config, seeds):
    model = build_model(config, len(seeds), 100)
    model.reset_parameters(generators(seeds, stream=1))
    return model


def test_weight_field_follows_the_time_weights_over_the_plane():
    model = small_model(ModelConfig(arch="dual_scale", hidden_dim=16, embedding_dim=8), [3])
    per_timestep = model.weight_network(model.time_table).detach().numpy()  # (1, T, 2), row t
    field = weight_field(model, field_timesteps(100, 3), 4, 3.0, CPU)
    assert field.shape == (1, 3, 4, 4, 2)
    assert field_timesteps(100, 3) == [99, 50, 0]
    for i, t in enumerate([99, 50, 0]):  # dual-scale weights depend on t alone
        np.testing.assert_allclose(
            field[0, i], np.broadcast_to(per_timestep[0, t], (4, 4, 2)), atol=1e-6
        )
    plain = small_model(ModelConfig(hidden_dim=16, embedding_dim=8), [0])
    assert weight_field(plain, [0], 4, 3.0, CPU) is None


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
