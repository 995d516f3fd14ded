"""Dual-expert denoiser (protocol §3), batched over M models.

A gate g in (0, 1) computed from the joint embedding e of (noisy x, t) mixes two experts with
the baseline network's structure: eps = g * expert_1(e) + (1 - g) * expert_2(e). The `simple`
gate is Linear(3E, H/2) -> ReLU -> Linear(H/2, 1) -> Sigmoid; the `enhanced` gate is
Linear(3E, H) -> ReLU -> Linear(H, H/2) -> ReLU -> Linear(H/2, 1) -> Sigmoid. With
`larger_experts` each expert gets one more hidden layer before its output layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from lowdiff.models.base import Denoiser, DenoiserOutput
from lowdiff.models.layers import BatchedLinear, Embedded, EmbeddingLinear, Trunk, elementwise

if TYPE_CHECKING:
    from lowdiff.models import ModelConfig

Gate = Literal["simple", "enhanced"]

GATE_WIDTHS: dict[str, tuple[str, ...]] = {"simple": ("H/2",), "enhanced": ("H", "H/2")}


class GateNetwork(nn.Module):
    def __init__(self, num_models: int, embedding_dim: int, hidden_dim: int, gate: Gate) -> None:
        super().__init__()
        if gate not in GATE_WIDTHS:
            raise ValueError(f"unknown gate {gate!r}; valid: {', '.join(GATE_WIDTHS)}")
        widths = [hidden_dim if name == "H" else hidden_dim // 2 for name in GATE_WIDTHS[gate]]
        self.input = EmbeddingLinear(num_models, 3 * embedding_dim, widths[0])
        self.hidden = nn.ModuleList(
            BatchedLinear(num_models, a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.output = BatchedLinear(num_models, widths[-1], 1)

    def forward(self, embedded: Embedded) -> torch.Tensor:
        h = torch.relu(self.input(embedded))  # (M, B, width)
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return elementwise(torch.sigmoid, self.output(h))  # (M, B, 1)


class DualExpertDenoiser(Denoiser):
    def __init__(self, num_models: int, num_timesteps: int, config: ModelConfig) -> None:
        super().__init__(num_models, num_timesteps, config)
        self.gate = GateNetwork(num_models, config.embedding_dim, config.hidden_dim, config.gate)
        widths = (config.embedding_dim, config.hidden_dim, config.hidden_layers)
        self.experts = nn.ModuleList(
            Trunk(num_models, *widths, extra_layer=config.larger_experts) for _ in range(2)
        )

    def forward(self, xt: torch.Tensor, t: torch.Tensor | int) -> DenoiserOutput:
        embedded = self.embed(xt, t)
        gate = self.gate(embedded)  # (M, B, 1)
        eps = gate * self.experts[0](embedded) + (1.0 - gate) * self.experts[1](embedded)
        return DenoiserOutput(eps, gate)
