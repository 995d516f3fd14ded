"""Evaluate M trained models at once: the evaluation settings, eval loss, weight fields.

protocol §1 "Evaluation": `eval_loss` is the MSE of the trained (non-EMA) weights over one pass of
the training points with fresh eps and t. Samples come from the EMA weights through
`lowdiff.samplers` (ancestral DDPM over t = T-1..0 by default, the protocol), chosen by
`EvalConfig.sampler` and `sampling_steps`. For architectures that mix branches or experts,
`weight_field` maps their weights over a grid of the plane at a few timesteps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lowdiff.models import Denoiser
from lowdiff.schedule import NoiseSchedule
from lowdiff.settings import EvalConfig as EvalConfig  # defined torch-free; re-exported


@torch.no_grad()
def eval_loss(
    model: Denoiser,
    schedule: NoiseSchedule,
    data: torch.Tensor,  # (M, n, 2) each model's training points
    generators: Sequence[torch.Generator],
    chunk_size: int,
) -> np.ndarray:
    """Mean MSE per model over one pass of its n training points, fresh t and eps: (M,)."""
    num_models, num_points = data.shape[:2]
    total = torch.zeros(num_models, device=data.device, dtype=torch.float64)
    for start in range(0, num_points, chunk_size):
        x0 = data[:, start : start + chunk_size]  # (M, C, 2)
        size = x0.shape[1]
        t = torch.stack(
            [
                torch.randint(0, schedule.num_timesteps, (size,), generator=g, device=data.device)
                for g in generators
            ]
        )
        eps = torch.stack(
            [torch.randn((size, 2), generator=g, device=data.device) for g in generators]
        )
        eps_hat = model(schedule.add_noise(x0, eps, t), t).eps
        total += (eps_hat - eps).square().sum(dim=(1, 2), dtype=torch.float64)
    return (total / (2 * num_points)).cpu().numpy()


def field_timesteps(num_timesteps: int, count: int) -> list[int]:
    """`count` timesteps evenly spaced from T-1 down to 0."""
    return sorted({int(round(v)) for v in np.linspace(num_timesteps - 1, 0, count)}, reverse=True)


@torch.no_grad()
def weight_field(
    model: Denoiser, timesteps: Sequence[int], resolution: int, extent: float, device: torch.device
) -> np.ndarray | None:
    """The model's mixing weights over a grid of the plane: (M, len(timesteps), G, G, K) or None.

    Grid row i is y, column j is x, both from -extent to extent.
    """
    axis = torch.linspace(-extent, extent, resolution, device=device)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([x, y], dim=-1).reshape(1, -1, 2).expand(model.num_models, -1, -1)
    fields = []
    for t in timesteps:
        weights = model(grid.contiguous(), int(t)).weights
        if weights is None:
            return None
        fields.append(weights.reshape(model.num_models, resolution, resolution, -1))
    return torch.stack(fields, dim=1).cpu().numpy()
