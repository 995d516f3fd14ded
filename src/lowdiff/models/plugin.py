"""A researcher's plain single-model `nn.Module`, trained M copies at a time.

`model.arch = "file.py:ClassName"` (or `"package.module:ClassName"`) names a class whose
`forward(x, t)` maps points x (B, 2) and integer timesteps t (B,) to predicted noise (B, 2);
`model.options` are its constructor's keyword arguments. `PluginDenoiser` holds the M copies'
parameters and buffers stacked on a leading model axis, (M, ...), and runs them with
PyTorch's model-ensembling recipe, `torch.func.functional_call` under `torch.func.vmap`
(https://pytorch.org/tutorials/intermediate/ensembling.html). It is a `Denoiser` like the
built-in architectures, so the engine's AdamW, per-model clipping, EMA, checkpoints, resume and
every sampler apply unchanged.

Each copy is constructed with PyTorch's global generator set to its own "init" stream, so a
model's initial weights depend on its (dataset, seed) alone; on the CPU the stream's state is
handed to the constructor as is, so a plugin whose layers are `nn.Linear`s created in the
built-in network's order draws exactly the built-in architecture's initial numbers.

A class that cannot work is refused before training (`check_plugin`): not found, not an
`nn.Module`, no `forward`, a forward that returns no tensor or the wrong shape, buffers that the
forward changes, or a forward that `vmap` cannot batch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from lowdiff.models.base import Denoiser, DenoiserOutput
from lowdiff.plugins import PluginError, plugin_source, sha256_of, split_plugin
from lowdiff.settings import ModelConfig

__all__ = ["PluginDenoiser", "PluginError", "check_plugin", "load_class"]

PROBE_BATCH = 5  # points in the forward that checks a plugin before training


def _module_of(arch: str, root: str, expected_hash: str) -> Any:
    """The module defining the plugin class, imported once per content hash."""
    path = plugin_source(arch, root or ".")
    digest = sha256_of(path)
    if expected_hash and digest != expected_hash:
        raise PluginError(
            f"model.arch {arch!r}: {path} changed since the experiment was loaded "
            f"(sha256 {digest[:12]}, expected {expected_hash[:12]}); load it again"
        )
    source, _ = split_plugin(arch)
    if not source.endswith(".py"):
        return importlib.import_module(source)
    name = f"lowdiff_plugin_{digest[:16]}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None  # a .py file always has both
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[name]
            raise PluginError(
                f"model.arch {arch!r}: importing {path} failed: {type(error).__name__}: {error}"
            ) from error
    return sys.modules[name]


def load_class(config: ModelConfig) -> type[nn.Module]:
    """The plugin's nn.Module class, checked to be one and to define its own forward."""
    arch = config.arch
    _, class_name = split_plugin(arch)
    module = _module_of(arch, config.plugin_root, config.plugin_hash)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise PluginError(f"model.arch {arch!r}: no class {class_name!r} in {module.__file__}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise PluginError(f"model.arch {arch!r}: {class_name} is not a torch.nn.Module subclass")
    if cls.forward is nn.Module.forward:
        raise PluginError(f"model.arch {arch!r}: {class_name} defines no forward(x, t)")
    return cls


def _construct(cls: type[nn.Module], config: ModelConfig) -> nn.Module:
    options = dict(config.options or {})
    try:
        return cls(**options)
    except TypeError as error:
        raise PluginError(
            f"model.arch {config.arch!r}: {cls.__name__}(**model.options) failed: {error}"
        ) from error


def _stacked_name(name: str) -> str:
    return name.replace(".", "__")  # parameter names may not contain dots


class PluginDenoiser(Denoiser):
    """M copies of a plain single-model nn.Module, stacked and run under vmap."""

    def __init__(self, num_models: int, num_timesteps: int, config: ModelConfig) -> None:
        nn.Module.__init__(self)  # no embedding table: the plugin embeds t itself
        self.num_models, self.config, self.num_timesteps = num_models, config, num_timesteps
        cls = load_class(config)
        with torch.random.fork_rng(devices=[]):  # the template's init must not move the
            torch.manual_seed(0)  # global generator; its values are overwritten anyway
            template = _construct(cls, config)
        # Kept outside the module tree (no parameters of its own are trained): functional_call
        # replaces its parameters and buffers with the stacked ones of each model.
        self.__dict__["template"] = template
        self.parameter_names = [name for name, _ in template.named_parameters()]
        self.buffer_names = [name for name, _ in template.named_buffers()]
        for name, value in template.named_parameters():
            stacked = torch.empty(num_models, *value.shape, dtype=value.dtype)
            self.register_parameter(_stacked_name(name), nn.Parameter(stacked))
        for name, value in template.named_buffers():
            stacked = value.detach().unsqueeze(0).expand(num_models, *value.shape).clone()
            self.register_buffer(_stacked_name(name), stacked)

    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        """Construct copy m under generator m (its state handed to the global CPU generator,
        which then hands it back advanced, as a built-in layer's draws would advance it)."""
        if len(generators) != self.num_models:
            raise ValueError(
                f"need one generator per model ({self.num_models}), got {len(generators)}"
            )
        cls = load_class(self.config)
        for m, generator in enumerate(generators):
            with torch.random.fork_rng(devices=[]):
                if generator.device.type == "cpu":
                    torch.set_rng_state(generator.get_state())
                else:
                    seed = torch.randint(2**62, (1,), generator=generator, device=generator.device)
                    torch.manual_seed(int(seed))
                copy = _construct(cls, self.config)
                if generator.device.type == "cpu":
                    generator.set_state(torch.get_rng_state())
            with torch.no_grad():
                for name, value in (*copy.named_parameters(), *copy.named_buffers()):
                    getattr(self, _stacked_name(name))[m].copy_(value)

    def forward(self, xt: torch.Tensor, t: torch.Tensor | int) -> DenoiserOutput:
        """xt (M, B, 2), t (M, B) or one int -> eps_hat (M, B, 2), each model on its own."""
        if isinstance(t, int):
            t = torch.full(xt.shape[:2], t, dtype=torch.long, device=xt.device)
        parameters = {name: getattr(self, _stacked_name(name)) for name in self.parameter_names}
        buffers = {name: getattr(self, _stacked_name(name)) for name in self.buffer_names}
        template = self.__dict__["template"]

        def one_model(params: dict, bufs: dict, x: torch.Tensor, steps: torch.Tensor) -> Any:
            return functional_call(template, (params, bufs), (x, steps))

        return DenoiserOutput(vmap(one_model)(parameters, buffers, xt, t), None)


def _probe_output(output: Any, arch: str, what: str) -> None:
    if not isinstance(output, torch.Tensor):
        raise PluginError(
            f"model.arch {arch!r}: {what} returned {type(output).__name__}, expected a tensor "
            "of predicted noise"
        )
    if tuple(output.shape) != (PROBE_BATCH, 2) or not output.is_floating_point():
        raise PluginError(
            f"model.arch {arch!r}: {what} returned a {output.dtype} tensor of shape "
            f"{tuple(output.shape)} for x of shape ({PROBE_BATCH}, 2); expected float "
            f"({PROBE_BATCH}, 2)"
        )


def check_plugin(config: ModelConfig, num_timesteps: int) -> None:
    """Refuse, with one line, a plugin class that cannot be trained (before any training)."""
    arch = config.arch
    cls = load_class(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        single = _construct(cls, config)
        x = torch.randn(PROBE_BATCH, 2)
    t = torch.arange(PROBE_BATCH) % num_timesteps
    before = {name: value.detach().clone() for name, value in single.named_buffers()}
    try:
        with torch.no_grad():
            output = single(x, t)
    except Exception as error:
        raise PluginError(
            f"model.arch {arch!r}: forward(x (B, 2), t (B,)) failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    _probe_output(output, arch, "forward(x, t)")
    for name, value in single.named_buffers():
        if not torch.equal(value, before[name]):
            raise PluginError(
                f"model.arch {arch!r}: forward changed buffer {name!r}; a denoiser's forward "
                "must not change its state (keep running statistics out of it)"
            )
    _check_batched(config, num_timesteps, x, t)


def _check_batched(
    config: ModelConfig, num_timesteps: int, x: torch.Tensor, t: torch.Tensor
) -> None:
    """The forward must run under vmap (no .item(), no data-dependent Python control flow)."""
    batched = PluginDenoiser(2, num_timesteps, config)
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    batched.reset_parameters(generators)
    try:
        with torch.no_grad():
            output = batched(x.expand(2, -1, -1), t.expand(2, -1)).eps
    except Exception as error:
        raise PluginError(
            f"model.arch {config.arch!r}: its forward cannot be batched over models with "
            f"torch.func.vmap ({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from error
    _probe_output(output[0], config.arch, "the batched forward")
