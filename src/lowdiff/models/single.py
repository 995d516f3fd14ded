"""One trained model as a plain `nn.Module`, and its export to / import from safetensors.

lowdiff's networks hold M models stacked on a leading axis (`layers.py`). `SingleDenoiser` is
the same network holding one model with that axis removed: its state dict is plain tensors
(`network.input.weight` is (in, out), not (1, in, out)), and `forward(x, t)` takes (B, 2)
points and (B,) timesteps and returns eps_hat (B, 2). It runs the batched code on its own
parameters through `torch.func.functional_call` with the axis put back, so the arithmetic is
the trained model's, bit for bit.

`lowdiff export-model CELL --out model.safetensors` writes a cell's EMA weights this way, with
the model's settings in the file's metadata; `SingleDenoiser.from_file(path)` loads it back.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowdiff.models import build_model
from lowdiff.settings import ModelConfig

FORMAT = "lowdiff.SingleDenoiser/1"  # metadata["format"] of an exported file


class SingleDenoiser(nn.Module):
    """A plain single-model denoiser: eps_hat = model(x (B, 2), t (B,))."""

    def __init__(self, config: ModelConfig | None = None, num_timesteps: int = 100) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.num_timesteps = num_timesteps
        batched = build_model(self.config, 1, num_timesteps)
        for module in batched.modules():  # drop the model axis of every parameter
            for name, parameter in list(module._parameters.items()):
                if parameter is not None:
                    module._parameters[name] = nn.Parameter(parameter.detach()[0].clone())
        # the batched network's layers become ours, under the same names (so the state dict's
        # names are the batched model's); it is kept outside the module tree to run `forward`
        for name, child in batched.named_children():
            self.add_module(name, child)
        for name, buffer in batched.named_buffers(recurse=False):
            self.register_buffer(name, buffer)
        self._batched = (batched,)

    @classmethod
    def from_batched(cls, network: nn.Module, config: ModelConfig, num_timesteps: int) -> Any:
        """Model 0 of a batched lowdiff network (e.g. `lowdiff.load(...).network`)."""
        single = cls(config, num_timesteps)
        own = dict(single.named_parameters())
        with torch.no_grad():
            for name, parameter in network.named_parameters():
                own[name].copy_(parameter[0])
        return single.to(next(network.parameters()).device)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, 2), t (B,) integer timesteps -> eps_hat (B, 2)."""
        (network,) = self._batched
        stacked = {name: p.unsqueeze(0) for name, p in self.named_parameters()}  # (1, ...)
        stacked |= dict(self.named_buffers())  # ours: they follow `.to(device)`
        out = torch.func.functional_call(network, stacked, (x.unsqueeze(0), t.unsqueeze(0)))
        return out.eps[0]  # (B, 2)

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "model": json.dumps(dataclasses.asdict(self.config), sort_keys=True),
            "num_timesteps": str(self.num_timesteps),
        }

    @classmethod
    def from_file(cls, path: str | Path, device: str = "cpu") -> SingleDenoiser:
        """Rebuild an exported model from its safetensors file (weights and settings)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(
                f"{path}: not a lowdiff model export (metadata format {metadata.get('format')!r},"
                f" expected {FORMAT!r}); write one with `lowdiff export-model CELL --out FILE`"
            )
        config = ModelConfig(**json.loads(metadata["model"]))
        model = cls(config, int(metadata["num_timesteps"]))
        model.load_state_dict(load_file(str(path), device=device))
        return model.to(device).eval()


def save(model: SingleDenoiser, path: str | Path) -> Path:
    """Write `model`'s state dict and settings as safetensors (tensors only, no code)."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(path), metadata=model.metadata())
    return Path(path)
