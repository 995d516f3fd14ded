"""The protocol's baseline denoiser (protocol §1) written as a plain single-model nn.Module.

Nothing here imports lowdiff: this is what a researcher writes to bring their own denoiser.
forward(x (B, 2), t (B,) int) -> predicted noise (B, 2). Layers are created in the order of the
built-in `mlp` architecture (input layer, residual blocks, output layer), so under the same seed
lowdiff draws the same initial weights for both.
"""

import math

import torch
from torch import nn


def sinusoidal(values: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """[sin(s v f), cos(s v f)], f_i = exp(-ln(10000) i / (half - 1)): (B,) -> (B, dim)."""
    half = dim // 2
    steps = torch.arange(half, device=values.device)
    frequencies = torch.exp(-math.log(10000.0) / (half - 1) * steps)
    angles = (values.float() * scale).unsqueeze(-1) * frequencies
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(torch.relu(h))


class MLP(nn.Module):
    def __init__(self, embedding_dim: int = 128, hidden_dim: int = 256, hidden_layers: int = 3):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.input = nn.Linear(3 * embedding_dim, hidden_dim)
        self.blocks = nn.Sequential(*(Block(hidden_dim) for _ in range(hidden_layers)))
        self.output = nn.Linear(hidden_dim, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.embedding_dim
        embedded = torch.cat(
            [sinusoidal(x[:, 0], e, 25.0), sinusoidal(x[:, 1], e, 25.0), sinusoidal(t, e, 1.0)],
            dim=-1,
        )  # (B, 3E)
        return self.output(torch.relu(self.blocks(self.input(embedded))))
