"""What every denoiser shares: the sinusoidal embeddings and the output type.

A denoiser holds M independent models of one architecture. `forward(xt, t)` takes noisy points
(M, B, 2) and timesteps (M, B) (or one int for the whole batch, as in sampling) and returns the
predicted noise eps_hat (M, B, 2) and, for the adaptive architectures, the weights they mix
their branches with (M, B, K) — recorded during sampling, never used by the loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from lowdiff.models.layers import Embedded, reset_all, sinusoidal_embedding

if TYPE_CHECKING:
    from lowdiff.models import ModelConfig


class DenoiserOutput(NamedTuple):
    eps: torch.Tensor  # (M, B, 2) predicted noise
    weights: torch.Tensor | None  # (M, B, K) mixing weights, or None


class Denoiser(nn.Module):
    """Base class: embedding of x (scale `input_scale`) and a table of time embeddings."""

    def __init__(self, num_models: int, num_timesteps: int, config: ModelConfig) -> None:
        super().__init__()
        self.num_models, self.config = num_models, config
        self.embedding_dim, self.input_scale = config.embedding_dim, config.input_scale
        steps = torch.arange(num_timesteps, dtype=torch.float32)
        table = sinusoidal_embedding(steps, config.embedding_dim, config.time_scale)
        self.register_buffer("time_table", table, persistent=False)

    def embed(self, x: torch.Tensor, t: torch.Tensor | int) -> Embedded:
        """x (M, B, 2) -> the factorised joint embedding [emb(x0), emb(x1), emb(t)]."""
        coords = sinusoidal_embedding(x, self.embedding_dim, self.input_scale)  # (M, B, 2, E)
        return Embedded(coords.flatten(-2), t, self.time_table)  # coords (M, B, 2E)

    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        if len(generators) != self.num_models:
            raise ValueError(
                f"need one generator per model ({self.num_models}), got {len(generators)}"
            )
        reset_all(self, generators)

    def forward(self, xt: torch.Tensor, t: torch.Tensor | int) -> DenoiserOutput:
        raise NotImplementedError
