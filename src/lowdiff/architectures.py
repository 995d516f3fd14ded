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
    "OPTION_MEANINGS",
    "ArchName",
    "Mixing",
    "arch_info",
    "constant_mixing",
]

COMMON_OPTIONS = ("embedding_dim", "hidden_dim", "hidden_layers", "input_scale", "time_scale")


@dataclass(frozen=True, kw_only=True)
class Mixing:
    """The weights an architecture mixes its parts with, recorded per sample while sampling."""

    kind: Literal["branches", "gate"]  # branch weights summing to 1, or one gate value in [0, 1]
    names: tuple[str, ...]  # one per recorded column, e.g. ("w_global", "w_local")
    meaning: str  # one sentence for reports
    # option values under which the weights are constant, not learned (e.g. 0.5 / 0.5): such a
    # run is the natural reference of the learned-weight runs, and the report compares them
    constant_when: tuple[tuple[str, object], ...] = ()


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
            constant_when=(("weighting", "fixed"),),
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

# What every option means (`lowdiff keys`, docs); its default is the ModelConfig field's.
OPTION_MEANINGS = {
    "embedding_dim": "size of each sinusoidal embedding (x0, x1 and t)",
    "hidden_dim": "width of the hidden layers",
    "hidden_layers": "number of residual blocks",
    "input_scale": "scale of the coordinates inside their sinusoidal embedding",
    "time_scale": "scale of the timestep inside its sinusoidal embedding",
    "weighting": "how the two branches are weighted: fixed 0.5, learned, learned_deep",
    "upscale": "how the local branch magnifies its input: learned or a fixed zoom",
    "zoom": "magnification of the local branch's input",
    "gate": "the gate network mixing the two experts",
    "larger_experts": "each expert gets one more hidden layer (ReLU, Linear(H, H)) before its "
    "output layer",
}


def constant_mixing(arch: str, model: object) -> bool:
    """Whether a model of `arch` with the options of `model` (a ModelConfig) mixes with
    constant weights (its declaration's `constant_when`), rather than learned ones."""
    mixing = arch_info(arch).mixing
    if mixing is None:
        return False
    return any(getattr(model, option, None) == value for option, value in mixing.constant_when)


def _check_meanings() -> None:
    declared = {*COMMON_OPTIONS, *(o for info in ARCHITECTURES.values() for o in info.options)}
    if declared - set(OPTION_MEANINGS):
        raise TypeError(
            f"model options without a meaning: {sorted(declared - set(OPTION_MEANINGS))}"
        )


_check_meanings()

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
