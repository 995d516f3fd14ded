"""Every choice lowdiff offers, declared once and importable without torch.

The catalogue is the one place a maintainer reads to learn what exists and the one place every
list is derived from: the settings' `Literal` types (`SamplerName`, `BetaSchedule`, `ArchName`),
`lowdiff keys`, the command line's help, the report's metric tables and the tests'
parametrisations. It declares the samplers and the noise schedules here, and gathers the
declarations that live beside their code:

- `ARCHITECTURES` from `lowdiff.architectures` (options, their meanings, mixing weights);
- `METRICS` from `lowdiff.metrics` (goal/oracle, table membership, words);
- `DATASETS` from `lowdiff.data` (each with its mixture components).

Each torch registry checks itself against this catalogue when it is imported
(`lowdiff.samplers.SAMPLERS`, `lowdiff.schedule.BETA_SCHEDULES`, `lowdiff.models.ARCHITECTURES`),
so a declaration without code, or code without a declaration, fails at import with the name.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lowdiff.architectures import ARCHITECTURES, ArchInfo

if TYPE_CHECKING:
    from lowdiff.data import DATASETS, DatasetSpec
    from lowdiff.metrics import METRICS, MetricInfo

# Gathered on first use (PEP 562): the metrics and datasets need SciPy and the data files,
# which the settings (and so every command) would otherwise load just to check a sampler name.
_GATHERED = {
    "METRICS": "lowdiff.metrics",
    "MetricInfo": "lowdiff.metrics",
    "DATASETS": "lowdiff.data",
    "DatasetSpec": "lowdiff.data",
}


def __getattr__(name: str) -> Any:
    if name in _GATHERED:
        return getattr(importlib.import_module(_GATHERED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES",
    "DATASETS",
    "METRICS",
    "SAMPLERS",
    "SCHEDULES",
    "ArchInfo",
    "BetaSchedule",
    "DatasetSpec",
    "MetricInfo",
    "SamplerInfo",
    "SamplerName",
    "ScheduleInfo",
    "check_registry",
    "choices_text",
    "table_metrics",
]


@dataclass(frozen=True, kw_only=True)
class SamplerInfo:
    """A sampler: what it solves, how many network evaluations its steps take, its options."""

    description: str  # one line for `lowdiff keys`, the help and the docs
    reference: str  # the paper (and algorithm/equation) it follows
    evaluations_per_step: int = 1  # network calls of every step but the last
    last_step_evaluations: int = 1  # the last step (timestep 0 to the data)
    options: tuple[str, ...] = ()  # the EvalConfig fields it reads beyond sampler/sampling_steps
    stochastic: bool = False  # draws fresh noise during the reverse process

    def evaluations(self, steps: int) -> int:
        """Network evaluations of a run of `steps` steps (steps >= 1)."""
        return (steps - 1) * self.evaluations_per_step + self.last_step_evaluations


SAMPLERS: dict[str, SamplerInfo] = {
    "ancestral": SamplerInfo(
        description="DDPM ancestral sampling, the protocol's sampler",
        reference="Ho et al. 2020, Algorithm 2",
        stochastic=True,
    ),
    "ddim": SamplerInfo(
        description="DDIM; eta = 0 is the probability-flow ODE, eta = 1 ancestral-like",
        reference="Song et al. 2021, eqs. 12 and 16",
        options=("eta",),
        stochastic=True,
    ),
    "dpm_solver_pp": SamplerInfo(
        description="DPM-Solver++(2M), second-order multistep probability-flow ODE solver",
        reference="Lu et al. 2022, Algorithm 2",
    ),
    "heun": SamplerInfo(
        description="Heun's second-order probability-flow ODE solver (2 evaluations per step)",
        reference="Karras et al. 2022, Algorithm 1",
        evaluations_per_step=2,
    ),
    "dpm_solver_pp_sde": SamplerInfo(
        description="DPM-Solver++(2M) SDE: second-order multistep solver of the reverse SDE",
        reference="Lu et al. 2022 (DPM-Solver++ SDE); k-diffusion sample_dpmpp_2m_sde",
        stochastic=True,
    ),
}


@dataclass(frozen=True, kw_only=True)
class ScheduleInfo:
    """A beta schedule from `schedule.beta_start` to `schedule.beta_end` over T timesteps."""

    description: str


SCHEDULES: dict[str, ScheduleInfo] = {
    "linear": ScheduleInfo(description="beta = linspace(beta_start, beta_end, T)"),
    "quadratic": ScheduleInfo(description="beta = linspace(sqrt(beta_start), sqrt(beta_end), T)^2"),
}

# The names as Literal types, for the settings dataclasses (checked values, "one of ..." in
# config errors and in `lowdiff keys`).
SamplerName = Literal[tuple(SAMPLERS)]  # type: ignore[valid-type]
BetaSchedule = Literal[tuple(SCHEDULES)]  # type: ignore[valid-type]


def table_metrics() -> tuple[str, ...]:
    """The columns of the report's run tables, in catalogue order (`MetricInfo.table`)."""
    from lowdiff.metrics import METRICS

    return tuple(name for name, info in METRICS.items() if info.table)


def choices_text(names: Iterable[str]) -> str:
    """'a, b or c': a list of choices for help texts."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_registry(kind: str, declared: Iterable[str], registry: Mapping[str, object]) -> None:
    """Raise ImportError unless `registry` implements exactly the `declared` names."""
    declared, implemented = set(declared), set(registry)
    if declared != implemented:
        raise ImportError(
            f"the {kind} registry does not match lowdiff.catalogue: declared but not "
            f"implemented {sorted(declared - implemented)}, implemented but not declared "
            f"{sorted(implemented - declared)}"
        )
