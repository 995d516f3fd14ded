"""The four settings sections of a run: model, train, schedule, eval (torch-free).

Each is a frozen, keyword-only dataclass that checks itself; its defaults are the reference
protocol (protocol §1). They live here, apart from the torch code they configure, so that a results
folder (its config, its cell keys, its report) can be read without importing torch; each is
re-exported by the module it configures (`lowdiff.engine.TrainConfig`,
`lowdiff.schedule.ScheduleConfig`, `lowdiff.evaluation.EvalConfig`, `lowdiff.models.ModelConfig`).
A new field must default to today's behaviour: cells are keyed on the difference from these
defaults (`lowdiff.cells.cell_hash`).
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal

from lowdiff.architectures import ARCHITECTURES, COMMON_OPTIONS
from lowdiff.catalogue import SAMPLERS, BetaSchedule, SamplerName, choices_text
from lowdiff.plugins import is_plugin, split_plugin
from lowdiff.precision import Precision
from lowdiff.precision import check_name as check_precision_name

__all__ = ["BetaSchedule", "EvalConfig", "ModelConfig", "ScheduleConfig", "TrainConfig"]

# the samplers that read eval.eta, from their declarations in lowdiff.catalogue
ETA_SAMPLERS = tuple(name for name, info in SAMPLERS.items() if "eta" in info.options)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """An architecture (a name of `lowdiff.architectures.ARCHITECTURES`) and its options, or
    a plugin class ("file.py:ClassName" or "module:ClassName", `lowdiff.plugins`) and the
    keyword arguments of its constructor (`options`)."""

    arch: str = "mlp"
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
    # plugin models: constructor keyword arguments; the folder a relative file path is resolved
    # against (filled in from the experiment file, not part of the cell key); the SHA-256 of
    # the class's source file (filled in when the experiment is loaded, part of the cell key)
    options: dict[str, Any] | None = None
    plugin_root: str = ""
    plugin_hash: str = ""

    def __post_init__(self) -> None:
        if is_plugin(self.arch):
            split_plugin(self.arch)  # form only; lowdiff.models.plugin checks the class
            options: tuple[str, ...] = ("options", "plugin_root", "plugin_hash")
        elif self.arch not in ARCHITECTURES:
            raise ValueError(
                f"unknown model arch {self.arch!r}; valid: {', '.join(ARCHITECTURES)}, or "
                "'path/to/file.py:ClassName' / 'package.module:ClassName' for your own class"
            )
        else:
            options = (*COMMON_OPTIONS, *ARCHITECTURES[self.arch].options)
        for field in fields(self):
            used = field.name == "arch" or field.name in options
            if not used and getattr(self, field.name) != field.default:
                raise ValueError(
                    f"model option {field.name!r} does not apply to arch {self.arch!r}; "
                    f"its options are: {', '.join(options)}"
                )
        hints = typing.get_type_hints(ModelConfig)
        for field in fields(self):  # a choice must be one of its Literal's values
            choices = typing.get_args(hints[field.name])
            literal = typing.get_origin(hints[field.name]) is Literal
            if literal and getattr(self, field.name) not in choices:
                valid = ", ".join(map(str, choices))
                raise ValueError(
                    f"model.{field.name}: {getattr(self, field.name)!r} is not one of {valid}"
                )
        for name in ("embedding_dim", "hidden_dim", "hidden_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.embedding_dim % 2 or self.embedding_dim < 4:
            raise ValueError(f"model.embedding_dim must be even and >= 4, got {self.embedding_dim}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    num_steps: int = 10_000
    batch_size: int = 256
    learning_rate: float = 3e-4
    grad_clip: float = 0.5
    ema_beta: float = 0.995
    ema_update_every: int = 10
    ema_warmup_steps: int = 100
    diversity_weight: float = 0.0  # lambda of the diversity loss (protocol §3 run 4); 0 = plain MSE
    # steps between checkpoints (taken at the next chunk boundary); not part of the cell key.
    # 1000 protocol steps of a batch of 12 take about 1.5 minutes on one CPU core.
    checkpoint_every: int = 1000
    # "bf16": forward pass and loss under bf16 autocast, fp32 master weights, AdamW and EMA
    # (lowdiff.precision); needs native bf16 hardware. Keyed only when set (not the default).
    precision: Precision = "fp32"
    # true: the network's forward and backward through torch.compile (lowdiff.compilation):
    # fused element-wise kernels, a new draw (not the eager bits). Keyed only when set.
    compile: bool = False

    def __post_init__(self) -> None:
        check_precision_name(self.precision, "train.precision")
        for name in ("num_steps", "batch_size", "ema_update_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"train.{name} must be a positive integer, got {getattr(self, name)}"
                )
        for name in ("learning_rate", "grad_clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"train.{name} must be a finite number > 0, got {value}")
        if not 0 <= self.ema_beta < 1:
            raise ValueError(f"train.ema_beta must be in [0, 1), got {self.ema_beta}")
        if self.ema_warmup_steps < 0 or not 0 <= self.diversity_weight < math.inf:
            raise ValueError(
                "train.ema_warmup_steps and train.diversity_weight must be finite and >= 0, got "
                f"{self.ema_warmup_steps} and {self.diversity_weight}"
            )


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    num_timesteps: int = 100
    beta_schedule: BetaSchedule = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        if self.num_timesteps < 1:
            raise ValueError(f"schedule.num_timesteps must be >= 1, got {self.num_timesteps}")
        if not 0 < self.beta_start <= self.beta_end < 1:  # also false for NaN
            raise ValueError(
                "schedule: need 0 < beta_start <= beta_end < 1, got "
                f"beta_start = {self.beta_start}, beta_end = {self.beta_end}"
            )


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    num_samples: int = 10_000
    chunk_size: int = 10_000  # points per forward pass in eval_loss (memory only)
    knn_k: int = 5
    field_resolution: int = 48  # grid side of the weight-over-the-plane view
    field_extent: float = 4.5  # the plane [-extent, extent]^2
    field_timesteps: int = 4  # that many timesteps, evenly spaced from T-1 to 0
    sampler: SamplerName = "ancestral"  # a name of lowdiff.catalogue.SAMPLERS
    sampling_steps: int = 0  # sampler steps; 0 = every timestep (must be <= T)
    eta: float = 0.0  # DDIM's eta in [0, 1] (ddim only)
    process_snapshots: int = 6  # states kept for the reverse-process figure: 0 or >= 2
    process_points: int = 2000  # points per snapshot
    # repeat 0 is the cell's own sample (samples.npy); the others go to repeats.npz
    sample_repeats: int = 1  # samples drawn and measured per model, each its own sampling seed
    # ground truth (lowdiff.ground_truth): excess loss over the Bayes floor, ODE likelihood
    ground_truth: bool = True  # measure them (for datasets whose true law is known)
    ground_truth_points: int = 500  # fresh true draws per timestep for the loss by timestep
    ode_points: int = 256  # fresh true draws whose ODE likelihood is integrated
    ode_tolerance: float = 1e-5  # dopri5's rtol = atol
    # "bf16": the network runs under bf16 autocast while sampling (and for the weight field);
    # the sampler's state stays fp32 (lowdiff.precision). eval_loss is always fp32.
    precision: Precision = "fp32"
    # true: the network through torch.compile while sampling (lowdiff.compilation)
    compile: bool = False

    def __post_init__(self) -> None:
        check_precision_name(self.precision, "eval.precision")
        positive = (
            "num_samples",
            "chunk_size",
            "knn_k",
            "field_resolution",
            "field_timesteps",
            "ground_truth_points",
            "ode_points",
            "sample_repeats",
        )
        for name in (*positive, "process_points"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"eval.{name} must be a positive integer, got {getattr(self, name)}"
                )
        if self.knn_k >= self.num_samples:
            raise ValueError(
                f"eval.knn_k ({self.knn_k}) must be < eval.num_samples ({self.num_samples})"
            )
        if not 0 < self.ode_tolerance < 0.1:
            raise ValueError(f"eval.ode_tolerance must be in (0, 0.1), got {self.ode_tolerance}")
        if not 0 < self.field_extent < math.inf:
            raise ValueError(
                f"eval.field_extent must be a finite number > 0, got {self.field_extent}"
            )
        self._check_sampling()

    def _check_sampling(self) -> None:
        names = typing.get_args(SamplerName)
        if self.sampler not in names:
            raise ValueError(f"unknown eval.sampler {self.sampler!r}; valid: {', '.join(names)}")
        if self.sampling_steps < 0:
            raise ValueError(
                f"eval.sampling_steps must be >= 0 (0 = every timestep), got {self.sampling_steps}"
            )
        if self.eta != 0.0 and self.sampler not in ETA_SAMPLERS:
            raise ValueError(
                f"eval.eta applies to the {choices_text(ETA_SAMPLERS)} sampler only, "
                f"not {self.sampler!r}"
            )
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eval.eta must be in [0, 1], got {self.eta}")
        if self.process_snapshots < 0 or self.process_snapshots == 1:
            raise ValueError(
                "eval.process_snapshots must be 0 (none) or >= 2 (the initial noise and the "
                f"samples), got {self.process_snapshots}"
            )


def _check_declared_options() -> None:
    """Every option an architecture declares is a ModelConfig field (the two cannot drift)."""
    names = {field.name for field in fields(ModelConfig)}
    for arch, info in ARCHITECTURES.items():
        unknown = set(info.options) - names
        if unknown:
            raise TypeError(f"architecture {arch!r} declares unknown options {sorted(unknown)}")


_check_declared_options()
