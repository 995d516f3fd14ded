"""The baseline denoiser of SPEC §1 (tiny-diffusion's MLP), batched over M models.

emb(x0; s=25) ++ emb(x1; s=25) ++ emb(t; s=1) -> Linear(384, 256) -> 3 x ResidualBlock ->
ReLU -> Linear(256, 2), predicting eps.
"""

from __future__ import annotations

import torch

from lowdiff.models.base import Denoiser, DenoiserOutput
from lowdiff.models.layers import Trunk


class MLPDenoiser(Denoiser):
    def __init__(
        self,
        num_models: int,
        num_timesteps: int,
        *,
        embedding_dim: int = 128,
        hidden_dim: int = 256,
        hidden_layers: int = 3,
        input_scale: float = 25.0,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(num_models, num_timesteps, embedding_dim, input_scale, time_scale)
        self.network = Trunk(num_models, embedding_dim, hidden_dim, hidden_layers)

    def forward(self, xt: torch.Tensor, t: torch.Tensor | int) -> DenoiserOutput:
        return DenoiserOutput(self.network(self.embed(xt, t)), None)
