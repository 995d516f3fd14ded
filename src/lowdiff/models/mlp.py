"""The baseline denoiser of protocol §1 (tiny-diffusion's MLP), batched over M models.

emb(x0; s=25) ++ emb(x1; s=25) ++ emb(t; s=1) -> Linear(384, 256) -> 3 x ResidualBlock ->
ReLU -> Linear(256, 2), predicting eps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lowdiff.models.base import Denoiser, DenoiserOutput
from lowdiff.models.layers import Trunk

if TYPE_CHECKING:
    from lowdiff.models import ModelConfig


class MLPDenoiser(Denoiser):
    def __init__(self, num_models: int, num_timesteps: int, config: ModelConfig) -> None:
        super().__init__(num_models, num_timesteps, config)
        self.network = Trunk(
            num_models, config.embedding_dim, config.hidden_dim, config.hidden_layers
        )

    def forward(self, xt: torch.Tensor, t: torch.Tensor | int) -> DenoiserOutput:
        return DenoiserOutput(self.network(self.embed(xt, t)), None)
