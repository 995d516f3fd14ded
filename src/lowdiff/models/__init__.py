"""Denoiser architectures, one per file, all batched over M independent models.

The architectures are those declared in `lowdiff.architectures` (torch-free); architecture
`name` is the one `Denoiser` subclass defined in `models/<name>.py`. `ModelConfig` names an
architecture and its options; `build_model` turns it into a module holding M models. Options
that an architecture does not use must stay at their defaults, so a config never silently
carries a setting that had no effect.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from lowdiff import catalogue
from lowdiff.architectures import ARCHITECTURE_OPTIONS, COMMON_OPTIONS
from lowdiff.architectures import ARCHITECTURES as ARCHITECTURE_INFO
from lowdiff.models.base import Denoiser, DenoiserOutput
from lowdiff.plugins import is_plugin
from lowdiff.results import ResultsError
from lowdiff.settings import ModelConfig

__all__ = [
    "ARCHITECTURES",
    "ARCHITECTURE_OPTIONS",
    "COMMON_OPTIONS",
    "Denoiser",
    "DenoiserOutput",
    "ModelConfig",
    "build_model",
    "load_weights",
]


def _denoiser_class(name: str) -> type[Denoiser]:
    """The one Denoiser subclass that models/<name>.py defines."""
    module = importlib.import_module(f"lowdiff.models.{name}")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Denoiser)
        and value.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise ImportError(
            f"lowdiff/models/{name}.py must define exactly one Denoiser subclass for the "
            f"architecture {name!r} declared in lowdiff.architectures; found {len(found)}"
        )
    return found[0]


ARCHITECTURES: dict[str, type[Denoiser]] = {
    name: _denoiser_class(name) for name in ARCHITECTURE_INFO
}
catalogue.check_registry("architecture", catalogue.ARCHITECTURES, ARCHITECTURES)


def build_model(config: ModelConfig, num_models: int, num_timesteps: int) -> Denoiser:
    """M uninitialised models of `config.arch`; call `reset_parameters(generators)` next.

    A plugin arch ("file.py:ClassName", `lowdiff.plugins`) is the researcher's own single-model
    class, stacked M times by `lowdiff.models.plugin.PluginDenoiser`.
    """
    if is_plugin(config.arch):
        from lowdiff.models.plugin import PluginDenoiser

        return PluginDenoiser(num_models, num_timesteps, config)
    return ARCHITECTURES[config.arch](num_models, num_timesteps, config)


@torch.no_grad()
def load_weights(
    model: Denoiser, saved: Sequence[Mapping[str, np.ndarray]], sources: Sequence[str | Path]
) -> None:
    """Set model m's parameters to saved[m] (arrays named like the parameters, without the model
    axis: a cell's model_ema.npz), checked: the same names and shapes, else a ResultsError
    naming sources[m]."""
    expected = dict(model.named_parameters())
    for m, (arrays, source) in enumerate(zip(saved, sources, strict=True)):
        if set(arrays) != set(expected):
            raise ResultsError(
                f"{source}: its arrays do not match a {model.config.arch} model of this config "
                f"(missing {sorted(set(expected) - set(arrays))}, "
                f"unexpected {sorted(set(arrays) - set(expected))})"
            )
        for name, parameter in expected.items():
            value = torch.from_numpy(np.asarray(arrays[name]))
            if value.shape != parameter.shape[1:]:
                raise ResultsError(
                    f"{source}: {name} has shape {tuple(value.shape)}, "
                    f"the config's model needs {tuple(parameter.shape[1:])}"
                )
            parameter[m].copy_(value)
