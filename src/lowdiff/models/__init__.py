"""Denoiser architectures, one per file, all batched over M independent models.

The architectures are those declared in `lowdiff.architectures` (torch-free); architecture
`name` is the one `Denoiser` subclass defined in `models/<name>.py`. `ModelConfig` names an
architecture and its options; `build_model` turns it into a module holding M models. Options
that an architecture does not use must stay at their defaults, so a config never silently
carries a setting that had no effect.
"""

from __future__ import annotations

import importlib

from lowdiff.architectures import ARCHITECTURE_OPTIONS, COMMON_OPTIONS
from lowdiff.architectures import ARCHITECTURES as ARCHITECTURE_INFO
from lowdiff.models.base import Denoiser, DenoiserOutput
from lowdiff.plugins import is_plugin
from lowdiff.settings import ModelConfig

__all__ = [
    "ARCHITECTURES",
    "ARCHITECTURE_OPTIONS",
    "COMMON_OPTIONS",
    "Denoiser",
    "DenoiserOutput",
    "ModelConfig",
    "build_model",
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


def build_model(config: ModelConfig, num_models: int, num_timesteps: int) -> Denoiser:
    """M uninitialised models of `config.arch`; call `reset_parameters(generators)` next.

    A plugin arch ("file.py:ClassName", `lowdiff.plugins`) is the researcher's own single-model
    class, stacked M times by `lowdiff.models.plugin.PluginDenoiser`.
    """
    if is_plugin(config.arch):
        from lowdiff.models.plugin import PluginDenoiser

        return PluginDenoiser(num_models, num_timesteps, config)
    return ARCHITECTURES[config.arch](num_models, num_timesteps, config)
