"""Evaluate M trained models at once: eval loss, ancestral sampling, recorded mixing weights.

SPEC §1 "Evaluation": `eval_loss` is the MSE of the trained (non-EMA) weights over one pass of
the training points with fresh eps and t; samples come from the EMA weights by ancestral DDPM
sampling from N(0, I) over t = T-1..0. For architectures that mix branches or experts, the
mean weight over samples at every step is recorded (a (T, K) trace per model, row 0 = the first
sampling step t = T-1), as are the per-sample weights at the last step (t = 0).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass
class Samples:
    points: np.ndarray  # (M, N, 2)
    weight_trace: np.ndarray | None  # (M, T, K): mean weight over samples, row 0 = t = T-1
    final_weights: np.ndarray | None  # (M, N, K): per-sample weights at the last step (t = 0)
    inference_time: float  # wall clock of the sampling loop for all M models, seconds


@torch.no_grad()
def denoise_in_chunks(
    model: Denoiser, xt: torch.Tensor, t: int, rows: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """eps_hat (M, N, 2) and weights (M, N, K) or None, `rows` points per model at a time.

    Chunks keep the activations inside the CPU caches (a (M, 10000, 256) activation does not
    fit); the result does not depend on the chunk size, as each point is denoised on its own.
    """
    outputs = [model(xt[:, start : start + rows], t) for start in range(0, xt.shape[1], rows)]
    eps = torch.cat([output.eps for output in outputs], dim=1)
    if outputs[0].weights is None:
        return eps, None
    return eps, torch.cat([output.weights for output in outputs], dim=1)


@torch.no_grad()
def sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    num_samples: int,
    generators: Sequence[torch.Generator],
    device: torch.device,
    rows: int = 4096,
) -> Samples:
    """Ancestral DDPM sampling (SPEC §1) of `num_samples` points from each of the M models.

    Each forward pass takes about `rows` points in all (rows / M per model), which keeps the
    activations cache-sized on a CPU whatever M is.
    """
    per_model = max(64, rows // model.num_models)

    def normal() -> torch.Tensor:  # one independent draw per model, (M, N, 2)
        return torch.stack(
            [torch.randn((num_samples, 2), generator=g, device=device) for g in generators]
        )

    xt = normal()
    trace, weights = [], None
    start = time.perf_counter()
    for t in range(schedule.num_timesteps - 1, -1, -1):
        eps_hat, weights = denoise_in_chunks(model, xt, t, per_model)
        if weights is not None:
            trace.append(weights.mean(dim=1))  # (M, K)
        xt = schedule.step(eps_hat, t, xt, normal() if t > 0 else None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    inference_time = time.perf_counter() - start
    return Samples(
        points=xt.cpu().numpy(),  # may hold NaN/inf for a diverged model: the caller checks
        weight_trace=torch.stack(trace, dim=1).cpu().numpy() if trace else None,
        final_weights=weights.cpu().numpy() if weights is not None else None,
        inference_time=inference_time,
    )


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
