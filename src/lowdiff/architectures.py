"""What each denoiser architecture is, declared once and importable without torch.

This is the one list of architectures: `lowdiff.models` builds the module of an architecture
`name` from `models/<name>.py`, and `ModelConfig.arch` accepts exactly these names (`ArchName`).
Adding an architecture is this entry plus that file. The runner, the report and the command
line read the declarations: an architecture's options, and the names
and meaning of the mixing weights it records during sampling (if any). A report section or
figure about mixing weights is chosen from `mixing`, never from the width of an array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ARCHITECTURES",
    "ARCHITECTURE_OPTIONS",
    "COMMON_OPTIONS",
    "ArchInfo",
    "ArchName",
    "Mixing",
    "arch_info",
]

COMMON_OPTIONS = ("embedding_dim", "hidden_dim", "hidden_layers", "input_scale", "time_scale")


@dataclass(frozen=True, kw_only=True)
class Mixing:
    """The weights an architecture mixes its parts with, recorded per sample while sampling."""

    kind: Literal["branches", "gate"]  # branch weights summing to 1, or one gate value in [0, 1]
    names: tuple[str, ...]  # one per recorded column, e.g. ("w_global", "w_local")
    meaning: str  # one sentence for reports


@dataclass(frozen=True, kw_only=True)
class ArchInfo:
    description: str
    options: tuple[str, ...]  # the ModelConfig fields it reads beyond COMMON_OPTIONS
    mixing: Mixing | None = None


ARCHITECTURES: dict[str, ArchInfo] = {
    "mlp": ArchInfo(
        description="the baseline MLP denoiser (sinusoidal embeddings, 3 residual blocks)",
        options=(),
    ),
    "dual_scale": ArchInfo(
        description="adaptive dual-scale denoiser: a global and a local branch, mixed by weights",
        options=("weighting", "upscale", "zoom"),
        mixing=Mixing(
            kind="branches",
            names=("w_global", "w_local"),
            meaning="the weights of the global branch (on x) and the local branch (on upscale(x))",
        ),
    ),
    "dual_expert": ArchInfo(
        description="dual-expert denoiser: two experts mixed by a learned gate",
        options=("gate", "larger_experts"),
        mixing=Mixing(
            kind="gate",
            names=("gate",),
            meaning="the gate g: expert 1 gets g, expert 2 gets 1 - g",
        ),
    ),
}

# Each architecture's own options (beyond COMMON_OPTIONS), by name.
ARCHITECTURE_OPTIONS = {name: info.options for name, info in ARCHITECTURES.items()}

# The names as a Literal, for ModelConfig.arch (checked values, "one of ..." in config errors).
ArchName = Literal[tuple(ARCHITECTURES)]  # type: ignore[valid-type]


PLUGIN_INFO = ArchInfo(
    description="your own single-model nn.Module, trained M at a time (lowdiff.models.plugin)",
    options=("options",),
)


def arch_info(arch: str) -> ArchInfo:
    """The declaration of a built-in architecture, or the one of every plugin class
    ("file.py:ClassName", "module:ClassName"): its options are its constructor's arguments."""
    if ":" in arch:
        return PLUGIN_INFO
    return ARCHITECTURES[arch]
