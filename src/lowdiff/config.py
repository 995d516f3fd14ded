"""Experiment files: TOML -> frozen dataclasses, strictly checked, with `--set` overrides.

An experiment file has an `[experiment]` table (name, question, datasets, seeds, ...), optional
shared `[model]`, `[train]`, `[schedule]` and `[eval]` tables, and named `[runs.NAME]` tables,
each a set of overrides of those four. Every key is checked against the dataclass it configures:
an unknown key or a value of the wrong type is an error that names the key, the file and (where
it can be found) the line, and lists what is valid, before any training starts.

    [experiment]
    name = "dual-scale"
    datasets = ["circle", "dino", "line", "moons"]
    seeds = [0, 1, 2]
    [runs.baseline]
    model = { arch = "mlp" }
    [runs.fixed]
    model = { arch = "dual_scale", weighting = "fixed" }
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lowdiff.data import DATASETS
from lowdiff.engine import TrainConfig
from lowdiff.evaluation import EvalConfig
from lowdiff.models import ModelConfig
from lowdiff.results import describe_os_error
from lowdiff.schedule import ScheduleConfig

SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "schedule": ScheduleConfig,
    "eval": EvalConfig,
}


class ConfigError(ValueError):
    """A problem in an experiment file or an override, with where it is and what is valid."""


# Names that become directories (experiment and run names): no separators, no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SAFE_NAME_RULE = "letters, digits, '_', '-' and '.', starting with a letter or digit"


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    name: str
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass(frozen=True, kw_only=True)
class ExperimentSettings:
    name: str
    question: str = ""
    datasets: tuple[str, ...] = ("circle", "dino", "line", "moons")
    seeds: tuple[int, ...] = (0, 1, 2)
    num_points: int = 100_000
    baseline: str = ""  # the run every other run is compared against; default: the first run
    max_models_per_batch: int = 32
    device: str = "auto"
    oracle_draws: int = 5  # fresh draws of the true distribution for each metric's floor


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """The only composite config: the experiment's settings and its resolved runs."""

    experiment: ExperimentSettings
    runs: tuple[RunConfig, ...]

    def run(self, name: str) -> RunConfig:
        return next(run for run in self.runs if run.name == name)


# --- type checking of plain TOML values against dataclass fields ---------------------------


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if typing.get_origin(annotation) is tuple:
        return f"a list of {_type_name(typing.get_args(annotation)[0])}"
    return getattr(annotation, "__name__", str(annotation))


_SCALARS: dict[type, Any] = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against a field annotation; return it in the field's type."""
    origin = typing.get_origin(annotation)
    if origin is Literal and value in typing.get_args(annotation) and isinstance(value, str):
        return value
    if origin is tuple and isinstance(value, list | tuple):
        item = typing.get_args(annotation)[0]
        return tuple(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(annotation):
            try:
                return coerce(value, option, where)
            except ConfigError:
                continue
    if annotation in _SCALARS and _SCALARS[annotation](value):
        return float(value) if annotation is float else value
    raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r}")


def check_keys(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Reject unknown keys and wrong types for dataclass `cls`; return the coerced values."""
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    checked = {}
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")
        checked[key] = coerce(value, hints[key], f"{where}.{key}")
    return checked


def check_schedule(config: ScheduleConfig) -> None:
    """The noise schedule's values (ScheduleConfig itself does not check them)."""
    if config.num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {config.num_timesteps}")
    if not 0 < config.beta_start <= config.beta_end < 1:
        raise ValueError(
            "need 0 < beta_start <= beta_end < 1, got "
            f"beta_start = {config.beta_start}, beta_end = {config.beta_end}"
        )


def check_eval(config: EvalConfig) -> None:
    if not config.field_extent > 0:
        raise ValueError(f"field_extent must be > 0, got {config.field_extent}")


VALIDATORS: dict[type, Any] = {ScheduleConfig: check_schedule, EvalConfig: check_eval}


def build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Construct dataclass `cls` from a dict, rejecting unknown keys, wrong types and
    non-finite numbers, then run the class's own checks and its VALIDATORS entry."""
    kwargs = check_keys(cls, values, where)
    for key, value in kwargs.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}.{key}: must be a finite number, got {value}")
    try:
        built = cls(**kwargs)
        VALIDATORS.get(cls, lambda _: None)(built)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error
    return built


# --- the experiment file ------------------------------------------------------------------


def _line_of(text: str, key: str) -> int | None:
    """Best-effort line number of a key or table header in the TOML source."""
    leaf = re.escape(key.split(".")[-1])
    for number, line in enumerate(text.splitlines(), start=1):
        if re.search(rf"(^|[\s{{,.\[]){leaf}\s*(=|\])", line):
            return number
    return None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {value!r}")
    return value


def check_device_name(name: str) -> None:
    """'auto', or a name torch parses as a device ('cpu', 'cuda', 'cuda:1', 'mps')."""
    import torch

    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(
            f"experiment.device: {name!r} is not a device; valid: auto, cpu, cuda, cuda:N, mps"
        ) from error


def _check_settings(settings: ExperimentSettings) -> None:
    if not SAFE_NAME.fullmatch(settings.name):
        raise ConfigError(
            f"experiment.name: {settings.name!r} is not a valid name (it names the results "
            f"directory); use only {SAFE_NAME_RULE}"
        )
    duplicates = sorted({d for d in settings.datasets if settings.datasets.count(d) > 1})
    if duplicates:
        raise ConfigError(
            f"experiment.datasets: {', '.join(duplicates)} listed more than once; "
            "list each dataset once"
        )
    check_device_name(settings.device)


def resolve(raw: dict[str, Any], where: str = "<config>") -> ExperimentConfig:
    """Turn a parsed experiment dict into an ExperimentConfig (checks everything)."""
    valid_top = ["experiment", "runs", *SECTIONS]
    for key in raw:
        if key not in valid_top:
            raise ConfigError(
                f"{where}: unknown table [{key}]; valid tables: {', '.join(valid_top)}"
            )
    settings = build(
        ExperimentSettings,
        _check_table(raw.get("experiment", {}), f"{where}: [experiment]"),
        "experiment",
    )
    _check_settings(settings)
    for dataset in settings.datasets:
        if dataset not in DATASETS:
            raise ConfigError(
                f"experiment.datasets: unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}"
            )
    if not settings.datasets or not settings.seeds:
        raise ConfigError("experiment.datasets and experiment.seeds must not be empty")
    if len(set(settings.seeds)) != len(settings.seeds) or any(s < 0 for s in settings.seeds):
        raise ConfigError(
            f"experiment.seeds must be distinct non-negative integers, got {list(settings.seeds)}"
        )
    if settings.num_points < 2 or settings.max_models_per_batch < 1 or settings.oracle_draws < 1:
        raise ConfigError(
            "experiment.num_points must be >= 2, max_models_per_batch and oracle_draws >= 1"
        )
    shared = {name: _check_table(raw.get(name, {}), f"[{name}]") for name in SECTIONS}
    for section, cls in SECTIONS.items():  # shared tables are checked on their own first
        check_keys(cls, shared[section], section)
    runs_raw = _check_table(raw.get("runs", {}), "[runs]")
    if not runs_raw:
        raise ConfigError(f"{where}: no runs; add at least one [runs.NAME] table")
    runs = []
    for name, run_raw in runs_raw.items():
        if not SAFE_NAME.fullmatch(name):
            raise ConfigError(f"runs.{name!r}: a run name may use only {SAFE_NAME_RULE}")
        run_raw = _check_table(run_raw, f"[runs.{name}]")
        valid_run = ["description", *SECTIONS]
        for key in run_raw:
            if key not in valid_run:
                raise ConfigError(
                    f"runs.{name}: unknown key {key!r}; valid keys: {', '.join(valid_run)}"
                )
        parts = {
            section: build(
                cls,
                _merge(
                    shared[section],
                    _check_table(run_raw.get(section, {}), f"runs.{name}.{section}"),
                ),
                f"runs.{name}.{section}",
            )
            for section, cls in SECTIONS.items()
        }
        description = coerce(run_raw.get("description", ""), str, f"runs.{name}.description")
        if parts["train"].batch_size > settings.num_points:
            raise ConfigError(
                f"runs.{name}.train.batch_size: {parts['train'].batch_size} is larger than the "
                f"{settings.num_points} training points (experiment.num_points); use at most that"
            )
        runs.append(RunConfig(name=name, description=description, **parts))
    baseline = settings.baseline or runs[0].name
    if baseline not in [run.name for run in runs]:
        raise ConfigError(
            f"experiment.baseline: unknown run {baseline!r}; "
            f"runs: {', '.join(r.name for r in runs)}"
        )
    settings = dataclasses.replace(settings, baseline=baseline)
    return ExperimentConfig(experiment=settings, runs=tuple(runs))


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """'train.learning_rate=3e-4' -> (['train', 'learning_rate'], 3e-4). Values are TOML."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected KEY=VALUE, e.g. train.num_steps=2000")
    key, text = assignment.split("=", 1)
    try:
        value = tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word is a string: model.arch=mlp
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set` overrides; `train.x=...` sets the shared table (every run sees it)."""
    for assignment in overrides:
        path, value = parse_override(assignment)
        runs = raw.get("runs")
        if path[0] == "runs" and len(path) > 1 and isinstance(runs, dict) and path[1] not in runs:
            raise ConfigError(
                f"--set {assignment}: no run named {path[1]!r} in the experiment; an override "
                f"may only change an existing run ({', '.join(runs) or 'none defined'})"
            )
        patch: dict[str, Any] = value
        for part in reversed(path):
            patch = {part: patch}
        raw = _merge(raw, patch)
    return raw


def read_experiment_text(path: Path) -> str:
    """The experiment file's text, or a one-line ConfigError saying what is wrong with it."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give the path of an experiment .toml file")
    if not path.exists():
        raise ConfigError(f"experiment file {str(path)!r} not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (undecodable byte at offset {error.start}); "
            "experiment files are TOML saved as UTF-8"
        ) from error
    except OSError as error:
        raise ConfigError(describe_os_error(error, path)) from error


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    text = read_experiment_text(Path(path))
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    raw = apply_overrides(raw, overrides or [])  # its errors name the override, not a line
    try:
        return resolve(raw, str(path))
    except ConfigError as error:
        message = str(error)
        key = message.split(":")[0].split("[")[0]
        quoted = re.search(r"unknown (?:key |table \[)'?([A-Za-z0-9_.-]+)", message)
        line = _line_of(text, quoted.group(1) if quoted else key)
        where = f"{path}, line {line}" if line else str(path)
        raise ConfigError(f"{where}: {message}") from error


def to_dict(config: Any) -> Any:
    """A dataclass tree as plain JSON-able values (tuples become lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple | list):
        return [to_dict(v) for v in config]
    return config


# --- what the machine must offer: device and memory, checked before any file is written ------

GIB = 1024**3


def check_threads(threads: int) -> None:
    """`--threads`: 0 (PyTorch's default) or a positive count."""
    if threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = PyTorch's default), got {threads}")


def check_device_available(name: str) -> None:
    """The configured device exists on this machine ('auto' always does)."""
    import torch

    check_device_name(name)
    if name == "auto":
        return
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no GPU"
            raise ConfigError(
                f"experiment.device = {name!r}, but {why} is visible here; use 'auto' or 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"experiment.device = {name!r}: only {torch.cuda.device_count()} GPU(s) here"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"experiment.device = {name!r}: MPS is not available; use 'auto'")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"experiment.device = {name!r}: valid: auto, cpu, cuda, cuda:N, mps")


def available_memory() -> int | None:
    """Bytes of RAM available now (MemAvailable of /proc/meminfo, else sysconf), or None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def parameters_per_model(model: ModelConfig, num_timesteps: int) -> int:
    """The number of trainable parameters of one model, counted without allocating them."""
    import torch

    from lowdiff.models import build_model

    with torch.device("meta"):
        module = build_model(model, 1, num_timesteps)
    return sum(p.numel() for p in module.parameters())


def estimate_memory(config: ExperimentConfig, run: RunConfig) -> dict[str, int]:
    """Approximate peak bytes of one engine batch of `run`, by part (an upper-side estimate)."""
    settings = config.experiment
    models = min(settings.max_models_per_batch, len(settings.datasets) * len(settings.seeds))
    params = parameters_per_model(run.model, run.schedule.num_timesteps)
    width = max(
        run.model.hidden_dim * (2 if run.model.larger_experts else 1), 3 * run.model.embedding_dim
    )
    layers = run.model.hidden_layers + 4
    evaluated = run.eval.chunk_size  # eval_loss points per pass; sampling passes are smaller
    return {
        # parameters, gradients, two AdamW moments, EMA shadow, checkpoint copy (float32)
        "model, optimiser and EMA state": models * params * 4 * 6,
        # float64 points + float32 copies + kNN radii of every dataset
        "training data": len(settings.datasets) * settings.num_points * 2 * 8 * 3,
        "random numbers of one chunk": 100 * models * run.train.batch_size * 48,
        "losses": run.train.num_steps * models * 4 * 2,
        "schedule and time embeddings": run.schedule.num_timesteps
        * (16 * 8 + 2 * 4 * run.model.embedding_dim),
        "activations": 4 * models * width * max(run.train.batch_size * layers * 3, evaluated * 4),
        "samples and their metrics": models * run.eval.num_samples * 2 * 4 * 3
        + run.eval.num_samples * 8 * (2 + run.eval.knn_k) * 4,
    }


def check_memory(config: ExperimentConfig, available: int | None = None) -> None:
    """Refuse an experiment whose largest batch would not fit in memory, saying how much."""
    available = available_memory() if available is None else available
    if available is None:
        return
    for run in config.runs:
        parts = estimate_memory(config, run)
        total = sum(parts.values())
        if total <= available:
            continue
        largest = sorted(parts.items(), key=lambda item: -item[1])[:3]
        detail = ", ".join(f"{name} {size / GIB:,.1f} GiB" for name, size in largest)
        raise ConfigError(
            f"runs.{run.name}: a batch would need about {total / GIB:,.1f} GiB of memory "
            f"({detail}) but {available / GIB:,.1f} GiB is available; reduce the sizes "
            "(model.hidden_dim, experiment.num_points, eval.num_samples, train.num_steps) or "
            "experiment.max_models_per_batch"
        )


def check_resources(config: ExperimentConfig) -> None:
    """What the machine must offer the experiment (device, memory): call before any write."""
    check_device_available(config.experiment.device)
    check_memory(config)
