"""Denoiser architectures, one per file, all batched over M independent models.

`ModelConfig` names an architecture and its options; `build_model` turns it into a module
holding M models. Options that an architecture does not use must stay at their defaults, so a
config never silently carries a setting that had no effect.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Literal

from lowdiff.architectures import ARCHITECTURES as ARCHITECTURE_INFO
from lowdiff.architectures import COMMON_OPTIONS
from lowdiff.models.base import Denoiser, DenoiserOutput
from lowdiff.models.dual_expert import DualExpertDenoiser
from lowdiff.models.dual_scale import DualScaleDenoiser
from lowdiff.models.mlp import MLPDenoiser

__all__ = ["ARCHITECTURES", "Denoiser", "DenoiserOutput", "ModelConfig", "build_model"]

ARCHITECTURES: dict[str, type[Denoiser]] = {
    "mlp": MLPDenoiser,
    "dual_scale": DualScaleDenoiser,
    "dual_expert": DualExpertDenoiser,
}

ARCHITECTURE_OPTIONS = {name: info.options for name, info in ARCHITECTURE_INFO.items()}


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    arch: Literal["mlp", "dual_scale", "dual_expert"] = "mlp"
    embedding_dim: int = 128
    hidden_dim: int = 256
    hidden_layers: int = 3
    input_scale: float = 25.0
    time_scale: float = 1.0
    # dual_scale
    weighting: Literal["fixed", "learned", "learned_deep"] = "learned"
    upscale: Literal["learned", "fixed"] = "learned"
    zoom: float = 2.0
    # dual_expert
    gate: Literal["simple", "enhanced"] = "simple"
    larger_experts: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown model arch {self.arch!r}; valid: {', '.join(ARCHITECTURES)}")
        for field in fields(self):
            used = field.name in ("arch", *COMMON_OPTIONS, *ARCHITECTURE_OPTIONS[self.arch])
            if not used and getattr(self, field.name) != field.default:
                valid = ", ".join((*COMMON_OPTIONS, *ARCHITECTURE_OPTIONS[self.arch]))
                raise ValueError(
                    f"model option {field.name!r} does not apply to arch {self.arch!r}; "
                    f"its options are: {valid}"
                )
        for field in fields(self):  # a choice must be one of its Literal's values
            choices = typing.get_args(typing.get_type_hints(ModelConfig)[field.name])
            if choices and getattr(self, field.name) not in choices:
                valid = ", ".join(map(str, choices))
                raise ValueError(
                    f"model.{field.name}: {getattr(self, field.name)!r} is not one of {valid}"
                )
        for name in ("embedding_dim", "hidden_dim", "hidden_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.embedding_dim % 2 or self.embedding_dim < 4:
            raise ValueError(f"model.embedding_dim must be even and >= 4, got {self.embedding_dim}")


def build_model(config: ModelConfig, num_models: int, num_timesteps: int) -> Denoiser:
    """M uninitialised models of `config.arch`; call `reset_parameters(generators)` next."""
    return ARCHITECTURES[config.arch](num_models, num_timesteps, config)
