"""Adaptive dual-scale denoiser (protocol §2), batched over M models.

Two branches with the baseline network's structure and their own weights: a *global* branch on
emb(x) and a *local* branch on emb(upscale(x)), sharing the time embedding. Their eps
predictions are mixed by weights that are fixed (0.5/0.5) or produced from emb(t) by a small
network (`learned`: sigmoid, `learned_deep`: LeakyReLU net with a softmax over two weights).

The weights depend on t alone, so the weight network runs on the T-row time table and the
rows are gathered per sample: the same numbers as running it per sample, T instead of B rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from lowdiff.models.base import Denoiser, DenoiserOutput
from lowdiff.models.layers import (
    BatchedLinear,
    Embedded,
    Trunk,
    elementwise,
    gather_by_timestep,
)

if TYPE_CHECKING:
    from lowdiff.models import ModelConfig


class SigmoidWeights(nn.Module):
    """w(t) = Sigmoid(Linear(H,1)(ReLU(Linear(E,H)(emb(t))))); weights (w, 1 - w). §2 run 2."""

    def __init__(self, num_models: int, embedding_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden = BatchedLinear(num_models, embedding_dim, hidden_dim)
        self.output = BatchedLinear(num_models, hidden_dim, 1)

    def forward(self, time_table: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.matmul(time_table, self.hidden.weight) + self.hidden.bias)  # (M, T, H)
        w = elementwise(torch.sigmoid, self.output(h))  # (M, T, 1)
        return torch.cat([w, 1.0 - w], dim=-1)  # (M, T, 2)


class SoftmaxWeights(nn.Module):
    """Linear(E,H) -> LeakyReLU(0.2) -> Linear(H,H/2) -> LeakyReLU(0.2) -> Linear(H/2,2) -> Softmax.

    protocol §2 run 5.
    """

    def __init__(self, num_models: int, embedding_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                BatchedLinear(num_models, embedding_dim, hidden_dim),
                BatchedLinear(num_models, hidden_dim, hidden_dim // 2),
                BatchedLinear(num_models, hidden_dim // 2, 2),
            ]
        )

    def forward(self, time_table: torch.Tensor) -> torch.Tensor:
        h = time_table  # (T, E), broadcast over the M models by matmul
        for index, layer in enumerate(self.layers):
            h = torch.matmul(h, layer.weight) + layer.bias  # (M, T, out)
            if index < len(self.layers) - 1:
                h = nn.functional.leaky_relu(h, 0.2)
        return torch.softmax(h, dim=-1)  # (M, T, 2)


WEIGHT_NETWORKS = {"learned": SigmoidWeights, "learned_deep": SoftmaxWeights}


class DualScaleDenoiser(Denoiser):
    def __init__(self, num_models: int, num_timesteps: int, config: ModelConfig) -> None:
        super().__init__(num_models, num_timesteps, config)
        widths = (config.embedding_dim, config.hidden_dim, config.hidden_layers)
        self.global_branch = Trunk(num_models, *widths)
        self.local_branch = Trunk(num_models, *widths)
        # learnable R^2 -> R^2 map, default nn.Linear init (protocol §2); or a fixed zoom x * s
        learned = config.upscale == "learned"
        self.upscale = BatchedLinear(num_models, 2, 2) if learned else None
        self.zoom = config.zoom
        network = WEIGHT_NETWORKS.get(config.weighting)
        self.weight_network = (
            network(num_models, config.embedding_dim, config.hidden_dim) if network else None
        )

    def forward(self, xt: torch.Tensor, t: torch.Tensor | int) -> DenoiserOutput:
        embedded = self.embed(xt, t)
        local_x = self.upscale(xt) if self.upscale is not None else xt * self.zoom  # (M, B, 2)
        local_embedded = Embedded(self.embed(local_x, t).coords, t, self.time_table)
        eps_global = self.global_branch(embedded)  # (M, B, 2)
        eps_local = self.local_branch(local_embedded)  # (M, B, 2)
        if self.weight_network is None:
            return DenoiserOutput(0.5 * eps_global + 0.5 * eps_local, None)
        weights = gather_by_timestep(self.weight_network(self.time_table), t)  # (M, B|1, 2)
        eps = weights[..., :1] * eps_global + weights[..., 1:] * eps_local
        return DenoiserOutput(eps, weights.expand(*eps.shape[:2], 2))
