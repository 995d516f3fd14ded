"""The baseline denoiser of protocol §1 written the plain way: one model, `nn.Linear` layers.

Not used for training. It is the yardstick the batched `MLPDenoiser` is checked against
(tests/test_models.py) and the single-model loop of benchmarks/train_speed.py.
"""

from __future__ import annotations

import torch
from torch import nn

from lowdiff.models.layers import sinusoidal_embedding


class PlainMLPDenoiser(nn.Module):
    def __init__(self, embedding_dim: int = 128, hidden_dim: int = 256, hidden_layers: int = 3):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.input = nn.Linear(3 * embedding_dim, hidden_dim)
        self.blocks = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(hidden_layers))
        self.output = nn.Linear(hidden_dim, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, 2), t (B,) -> eps_hat (B, 2)."""
        e = torch.cat(
            [
                sinusoidal_embedding(x[:, 0], self.embedding_dim, 25.0),
                sinusoidal_embedding(x[:, 1], self.embedding_dim, 25.0),
                sinusoidal_embedding(t.float(), self.embedding_dim, 1.0),
            ],
            dim=-1,
        )  # (B, 3E)
        h = self.input(e)
        for block in self.blocks:
            h = h + block(torch.relu(h))  # ResidualBlock
        return self.output(torch.relu(h))
