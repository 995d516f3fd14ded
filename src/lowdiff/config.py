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
import importlib.util
import itertools
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lowdiff import data
from lowdiff.data import DATASETS
from lowdiff.executors import EXECUTORS, ExecutorConfig
from lowdiff.metrics import METRICS
from lowdiff.plugins import (
    FILE_PREFIX,
    PluginError,
    file_dataset_name,
    is_file_dataset,
    is_plugin,
    plugin_source,
    sha256_of,
)
from lowdiff.results import describe_os_error
from lowdiff.settings import EvalConfig, ModelConfig, ScheduleConfig, TrainConfig

SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "schedule": ScheduleConfig,
    "eval": EvalConfig,
}


class ConfigError(ValueError):
    """A problem in an experiment file or an override, with where it is and what is valid.

    `key` is the dotted path of the offending setting as written in the file
    (`runs.fixed.train.learning_rate`, `train`, `experiment.seeds`), or None when the problem
    is not one key's; `load_experiment` finds the line from it.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# Names that become directories (experiment and run names): no separators, no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]*")  # '=' for swept runs: `R-key=value`
SAFE_NAME_RULE = "letters, digits, '_', '-', '.' and '=', starting with a letter or digit"
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


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
    executor: Literal["local", "ray", "slurm"] = "local"  # where packs run; options in [executor]
    # filled in from `file:` datasets: name -> {"path": absolute path, "sha256": content hash}
    data_files: dict[str, Any] | None = None
    margins: dict[str, float] = field(default_factory=dict)  # equivalence margin per metric
    until_decided: bool = False  # add rounds of seeds until every comparison is decided
    max_seeds: int = 0  # the sequential design's seed budget per run (0: fixed sample)
    round_seeds: int = 5  # seeds per round of --until-decided (looks at 5, 10, 15, ...)
    decide_claims: tuple[str, ...] = ()  # claim ids --until-decided works on (empty: all)
    # written by --until-decided: where its rounds may add seeds (the sequential design's scope)
    sequential_datasets: tuple[str, ...] = ()  # datasets the rounds work on
    sequential_runs: tuple[str, ...] = ()  # runs the rounds may extend (empty: every run)


@dataclass(frozen=True, kw_only=True)
class SweptRun:
    """A run made by a sweep: `source` (the run as written) with `values` (dotted key -> the
    TOML value) set; its name is `{source}-{leaf}={value}` for each key, in the sweep's order."""

    name: str
    source: str
    values: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """The only composite config: the experiment's settings and its resolved runs."""

    experiment: ExperimentSettings
    runs: tuple[RunConfig, ...]
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    sweep: tuple[SweptRun, ...] = ()  # the runs that a [sweep] expanded, in run order

    def run(self, name: str) -> RunConfig:
        return next(run for run in self.runs if run.name == name)


# The tables `--set` and `lowdiff keys` know. executor.kind is no key of its own: it is
# experiment.executor (written once, so the two cannot disagree).
TABLES: dict[str, type] = {"experiment": ExperimentSettings, **SECTIONS, "executor": ExecutorConfig}
NOT_KEYS = frozenset({"executor.kind"})


def table_fields(table: str) -> list[dataclasses.Field[Any]]:
    """The fields of one of TABLES that are settable keys."""
    return [f for f in dataclasses.fields(TABLES[table]) if f"{table}.{f.name}" not in NOT_KEYS]


# --- type checking of plain TOML values against dataclass fields ---------------------------


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if typing.get_origin(annotation) is dict:
        return "a table of numbers, e.g. { kl_divergence = 0.03 }"
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
    # a table of typed values (margins); a plugin's options (dict[str, Any]) pass on below
    if origin is dict and isinstance(value, dict) and typing.get_args(annotation)[1] is not Any:
        key_type, value_type = typing.get_args(annotation)
        return {
            coerce(k, key_type, where): coerce(v, value_type, f"{where}.{k}")
            for k, v in value.items()
        }
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(annotation):
            try:
                return coerce(value, option, where)
            except ConfigError:
                continue
    if value is None and annotation is type(None):  # an optional table left out
        return None
    if origin is dict and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return dict(value)  # a plugin's constructor options: passed on as written
    if annotation in _SCALARS and _SCALARS[annotation](value):
        return float(value) if annotation is float else value
    raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r}", key=where)


def check_keys(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Reject unknown keys and wrong types for dataclass `cls`; return the coerced values."""
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    checked = {}
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(
                f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}",
                key=f"{where}.{key}",
            )
        checked[key] = coerce(value, hints[key], f"{where}.{key}")
    return checked


def build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Construct dataclass `cls` from a dict, rejecting unknown keys, wrong types and
    non-finite numbers; the class checks its own values."""
    kwargs = check_keys(cls, values, where)
    for key, value in kwargs.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{where}.{key}: must be a finite number, got {value}", key=f"{where}.{key}"
            )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}", key=where) from error


# --- the experiment file ------------------------------------------------------------------


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table, got {value!r}", key=key)
    return value


def _check_names(settings: ExperimentSettings) -> None:
    """The experiment's name (a directory), its datasets (each once) and its device name."""
    if not SAFE_NAME.fullmatch(settings.name):
        raise ConfigError(
            f"experiment.name: {settings.name!r} is not a valid name (it names the results "
            f"directory); use only {SAFE_NAME_RULE}",
            key="experiment.name",
        )
    duplicates = sorted({d for d in settings.datasets if settings.datasets.count(d) > 1})
    if duplicates:
        raise ConfigError(
            f"experiment.datasets: {', '.join(duplicates)} listed more than once; "
            "list each dataset once",
            key="experiment.datasets",
        )
    if not DEVICE_NAME.fullmatch(settings.device):
        raise ConfigError(
            f"experiment.device: {settings.device!r} is not a device; "
            "valid: auto, cpu, cuda, cuda:N, mps",
            key="experiment.device",
        )


def _point_file(entry: str, base: Path) -> tuple[str, dict[str, str]]:
    """A `file:` dataset's results-folder name and {"path", "sha256"} (relative to `base`)."""
    path = Path(entry.removeprefix(FILE_PREFIX))
    path = (path if path.is_absolute() else base / path).resolve()
    name = file_dataset_name(entry)
    if not path.is_file():
        raise PluginError(f"{entry!r}: point file {str(path)!r} not found")
    return name, {"path": str(path), "sha256": sha256_of(path)}


def _with_point_files(settings: ExperimentSettings, base: Path | None) -> ExperimentSettings:
    """Each `file:` dataset replaced by its folder name and registered in `lowdiff.data`
    (relative paths against `base`, the experiment file's folder, else the working directory);
    the files an experiment.json lists (`data_files`) are registered again."""
    files, names = dict(settings.data_files or {}), []
    try:
        for entry in settings.datasets:
            if is_file_dataset(entry):
                name, files[name] = _point_file(entry, base or Path.cwd())
                if name in names or name in settings.datasets:
                    raise PluginError(f"{entry!r}: a second dataset named {name!r}; rename one")
                entry = name
            names.append(entry)
        for name in names:
            if name in files:
                data.register_file(name, files[name]["path"])
    except (PluginError, ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"experiment.datasets: {error}", key="experiment.datasets") from error
    return dataclasses.replace(settings, datasets=tuple(names), data_files=files or None)


def _settings(raw: dict[str, Any], base: Path | None = None) -> ExperimentSettings:
    """The [experiment] table, checked (its baseline is filled in once the runs are known)."""
    settings = build(
        ExperimentSettings, _check_table(raw.get("experiment", {}), "experiment"), "experiment"
    )
    settings = _with_point_files(settings, base)
    _check_names(settings)
    for dataset in settings.datasets:
        if dataset not in DATASETS:
            raise ConfigError(
                f"experiment.datasets: unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}",
                key="experiment.datasets",
            )
    if not settings.datasets or not settings.seeds:
        raise ConfigError(
            "experiment.datasets and experiment.seeds must not be empty", key="experiment"
        )
    if len(set(settings.seeds)) != len(settings.seeds) or any(s < 0 for s in settings.seeds):
        raise ConfigError(
            f"experiment.seeds must be distinct non-negative integers, got {list(settings.seeds)}",
            key="experiment.seeds",
        )
    if settings.num_points < 2 or settings.max_models_per_batch < 1 or settings.oracle_draws < 1:
        raise ConfigError(
            "experiment.num_points must be >= 2, max_models_per_batch and oracle_draws >= 1",
            key="experiment",
        )
    _check_sequential(settings)
    return settings


def _plugin_model(model: ModelConfig, base: Path | None, where: str) -> ModelConfig:
    """A plugin model with its folder and its source file's hash filled in (from the experiment
    file's folder `base`); one read back from experiment.json (no `base`) keeps its own."""
    if not is_plugin(model.arch) or (base is None and model.plugin_hash):
        return model
    root = str(base or Path.cwd())
    try:
        digest = sha256_of(plugin_source(model.arch, root))
    except PluginError as error:
        raise ConfigError(f"{where}.model.arch: {error}", key=f"{where}.model.arch") from error
    return dataclasses.replace(model, plugin_root=root, plugin_hash=digest)


def _check_sequential(settings: ExperimentSettings) -> None:
    """Margins (a known metric, finite and >= 0) and the seed budget of --until-decided."""
    for metric, margin in settings.margins.items():
        if metric not in METRICS:
            raise ConfigError(
                f"experiment.margins: unknown metric {metric!r}; valid: {', '.join(METRICS)}",
                key="experiment.margins",
            )
        if not math.isfinite(margin) or margin < 0.0:
            raise ConfigError(
                f"experiment.margins.{metric}: must be a finite number >= 0, got {margin}",
                key="experiment.margins",
            )
    if settings.round_seeds < 2:
        raise ConfigError(
            f"experiment.round_seeds must be >= 2, got {settings.round_seeds}",
            key="experiment.round_seeds",
        )
    if settings.max_seeds and settings.max_seeds < len(settings.seeds):
        raise ConfigError(
            f"experiment.max_seeds ({settings.max_seeds}) is below the {len(settings.seeds)} "
            "seeds already listed in experiment.seeds; give at least that many",
            key="experiment.max_seeds",
        )
    if settings.max_seeds < 0:
        raise ConfigError("experiment.max_seeds must be >= 0", key="experiment.max_seeds")


def _run(
    name: str, run_raw: Any, shared: dict[str, dict[str, Any]], base: Path | None = None
) -> RunConfig:
    """One [runs.NAME] table over the shared section tables."""
    where = f"runs.{name}"
    if not SAFE_NAME.fullmatch(name):
        raise ConfigError(f"runs.{name!r}: a run name may use only {SAFE_NAME_RULE}", key=where)
    run_raw = _check_table(run_raw, where)
    valid_run = ["description", *SECTIONS]
    for key in run_raw:
        if key not in valid_run:
            raise ConfigError(
                f"{where}: unknown key {key!r}; valid keys: {', '.join(valid_run)}",
                key=f"{where}.{key}",
            )
    parts = {
        section: build(
            cls,
            _merge(shared[section], _check_table(run_raw.get(section, {}), f"{where}.{section}")),
            f"{where}.{section}",
        )
        for section, cls in SECTIONS.items()
    }
    parts["model"] = _plugin_model(parts["model"], base, where)
    description = coerce(run_raw.get("description", ""), str, f"{where}.description")
    return RunConfig(name=name, description=description, **parts)


# --- sweeps: one run per value (several keys: the grid), named `{run}-{leaf}={value}` -------


def _sweep_axes(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """[sweep] as dotted key -> values, whether written `"train.x" = [...]` or as a subtable."""
    axes: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            axes.update(_sweep_axes(value, f"{prefix}{key}."))
        else:
            axes[f"{prefix}{key}"] = value
    return axes


def _check_axis(key: str, values: Any) -> tuple[str, str, list[Any]]:
    """One swept key `SECTION.FIELD` and its values, checked against the field's type."""
    section, _, leaf = key.partition(".")
    fields = {f.name for f in dataclasses.fields(SECTIONS[section])} if section in SECTIONS else ()
    if leaf not in fields:
        raise ConfigError(
            f"sweep: unknown key {key!r}; a swept key is SECTION.FIELD with SECTION one of "
            f"{', '.join(SECTIONS)} (`lowdiff keys` lists the fields)",
            key=f"sweep.{key}",
        )
    if not isinstance(values, list) or not values:
        raise ConfigError(
            f"sweep.{key}: expected a non-empty list of values, got {values!r}", key=f"sweep.{key}"
        )
    hint = typing.get_type_hints(SECTIONS[section])[leaf]
    for index, value in enumerate(values):
        coerce(value, hint, f"sweep.{key}[{index}]")
    if len({str(v) for v in values}) != len(values):
        raise ConfigError(f"sweep.{key}: values repeat: {values!r}", key=f"sweep.{key}")
    return section, leaf, values


def expand_sweep(
    runs_raw: dict[str, Any], table: Any
) -> tuple[dict[str, Any], tuple[SweptRun, ...]]:
    """Replace each swept run by one run per point of the grid of the [sweep] values.

    `table` maps dotted keys to lists; an optional `runs = [...]` names the runs to sweep
    (default: every run). The run `R` becomes `R-{leaf}={str(value)}` (keys joined by '-' in
    the order given), its own settings overridden by the point's values.
    """
    if table is None:
        return runs_raw, ()
    table = dict(_check_table(table, "sweep"))
    chosen = table.pop("runs", list(runs_raw))
    if not isinstance(chosen, list) or any(name not in runs_raw for name in chosen):
        raise ConfigError(
            f"sweep.runs: expected a list of run names among {', '.join(runs_raw)}, got {chosen!r}",
            key="sweep.runs",
        )
    axes = [_check_axis(key, values) for key, values in _sweep_axes(table).items()]
    if not axes:
        raise ConfigError("sweep: no keys to sweep; e.g. train.diversity_weight = [0, 0.1]")
    expanded: dict[str, Any] = {}
    swept: list[SweptRun] = []
    for name, run_raw in runs_raw.items():
        if name not in chosen:
            expanded[name] = run_raw
            continue
        for point in itertools.product(*(values for _, _, values in axes)):
            pairs = zip(axes, point, strict=True)
            settings = [(section, leaf, value) for (section, leaf, _), value in pairs]
            suffix = "-".join(f"{leaf}={value}" for _, leaf, value in settings)
            patch: dict[str, Any] = {}
            for section, leaf, value in settings:
                patch.setdefault(section, {})[leaf] = value
            expanded[f"{name}-{suffix}"] = _merge(_check_table(run_raw, f"runs.{name}"), patch)
            values = {f"{section}.{leaf}": value for section, leaf, value in settings}
            swept.append(SweptRun(name=f"{name}-{suffix}", source=name, values=values))
    return expanded, tuple(swept)


def apply_sweeps(raw: dict[str, Any], sweeps: list[str]) -> dict[str, Any]:
    """`--sweep KEY=V1,V2,...` into the [sweep] table (a key given again replaces the file's)."""
    table = dict(_sweep_axes(_check_table(raw.get("sweep", {}), "sweep")))
    for assignment in sweeps:
        if "=" not in assignment:
            raise ConfigError(
                f"--sweep {assignment!r}: expected KEY=V1,V2,..., "
                "e.g. train.diversity_weight=0,0.02,0.05"
            )
        key, text = (part.strip() for part in assignment.split("=", 1))
        try:
            values = tomllib.loads(f"value = [{text}]")["value"]
        except tomllib.TOMLDecodeError:
            values = [word.strip() for word in text.split(",")]  # bare words are strings
        table[key] = values
    return {**raw, "sweep": table} if table else raw


def _check_point_files(settings: ExperimentSettings, runs: list[RunConfig]) -> None:
    """A point file must hold the training set and enough points for the k-NN metrics."""
    for name in settings.data_files or {}:
        rows = len(data.POINT_FILES[name].points)
        if settings.num_points > rows:
            raise ConfigError(
                f"experiment.num_points: {settings.num_points} is more than the {rows} points "
                f"of dataset {name!r} ({settings.data_files[name]['path']}); set it to {rows} "
                "or fewer",
                key="experiment.num_points",
            )
        k = max(run.eval.knn_k for run in runs)
        if settings.num_points <= k + 1:
            raise ConfigError(
                f"experiment.num_points: {settings.num_points} training points of {name!r} are "
                f"too few for the k-NN metrics with eval.knn_k = {k}; use more than {k + 1}",
                key="experiment.num_points",
            )


def _resolve(raw: dict[str, Any], base: Path | None = None) -> ExperimentConfig:
    valid_top = ["experiment", "runs", "executor", "sweep", *SECTIONS]
    for key in raw:
        if key not in valid_top:
            raise ConfigError(
                f"unknown table [{key}]; valid tables: {', '.join(valid_top)}", key=key
            )
    settings = _settings(raw, base)
    shared = {name: _check_table(raw.get(name, {}), name) for name in SECTIONS}
    for section, cls in SECTIONS.items():  # shared tables are checked on their own first
        check_keys(cls, shared[section], section)
    runs_raw = _check_table(raw.get("runs", {}), "runs")
    if not runs_raw:
        raise ConfigError("no runs; add at least one [runs.NAME] table", key="runs")
    runs_raw, swept = expand_sweep(runs_raw, raw.get("sweep"))
    runs = [_run(name, run_raw, shared, base) for name, run_raw in runs_raw.items()]
    _check_point_files(settings, runs)
    for run in runs:
        _check_across_sections(settings, run)
        if run.train.batch_size > settings.num_points:
            raise ConfigError(
                f"runs.{run.name}.train.batch_size: {run.train.batch_size} is larger than the "
                f"{settings.num_points} training points (experiment.num_points); use at most that",
                key=f"runs.{run.name}.train.batch_size",
            )
    baseline = settings.baseline or runs[0].name
    # a swept run named as the baseline: its first point (e.g. the lambda = 0 run)
    baseline = next((r.name for r in swept if r.source == baseline), baseline)
    if baseline not in [run.name for run in runs]:
        raise ConfigError(
            f"experiment.baseline: unknown run {baseline!r}; "
            f"runs: {', '.join(r.name for r in runs)}",
            key="experiment.baseline",
        )
    settings = dataclasses.replace(settings, baseline=baseline)
    return ExperimentConfig(
        experiment=settings,
        runs=tuple(runs),
        executor=_executor(raw, settings.executor),
        sweep=swept,
    )


def _check_across_sections(settings: ExperimentSettings, run: RunConfig) -> None:
    """Values valid in their own section that contradict another's: found here, before any
    file is written, not when the first pack reaches them."""
    steps, timesteps = run.eval.sampling_steps, run.schedule.num_timesteps
    if steps > timesteps:
        raise ConfigError(
            f"runs.{run.name}.eval.sampling_steps: {steps} is more than the {timesteps} "
            "timesteps (schedule.num_timesteps); use at most that (0 = every timestep)",
            key=f"runs.{run.name}.eval.sampling_steps",
        )
    if run.eval.knn_k >= settings.num_points:
        raise ConfigError(
            f"runs.{run.name}.eval.knn_k: {run.eval.knn_k} neighbours need more than "
            f"{settings.num_points} training points (experiment.num_points); use fewer",
            key=f"runs.{run.name}.eval.knn_k",
        )


def _executor(raw: dict[str, Any], kind: str) -> ExecutorConfig:
    """The [executor] table's options for the backend chosen by experiment.executor."""
    table = dict(_check_table(raw.get("executor", {}), "executor"))
    if table.pop("kind", kind) != kind:  # lowdiff writes it to experiment.json: must agree
        raise ConfigError(
            f"executor.kind is chosen by experiment.executor (one of {', '.join(EXECUTORS)})",
            key="executor.kind",
        )
    return build(ExecutorConfig, {**table, "kind": kind}, "executor")


def resolve(raw: dict[str, Any], where: str = "<config>") -> ExperimentConfig:
    """Turn a parsed experiment dict into an ExperimentConfig (checks everything); errors are
    prefixed with `where` (a file name, or what produced `raw`)."""
    try:
        return _resolve(raw)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}", key=error.key) from error


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


# --- where a key is written ---------------------------------------------------------------


def _related(a: str, b: str) -> bool:
    """One dotted key path is the other or lies inside it."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _spellings(key: str) -> list[str]:
    """A key and, for a run's section (`runs.NAME.train...`), the shared table it merges over."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[0] == "runs" and parts[2] in SECTIONS:
        return [key, ".".join(parts[2:])]
    return [key]


def _file_error(raw: dict[str, Any], base: Path | None = None) -> str | None:
    """The message of the file's own error, before any override (None: the file is valid)."""
    try:
        _resolve(raw, base)
    except ConfigError as error:
        return str(error)
    return None


def _blamed_override(
    error: ConfigError, raw: dict[str, Any], overrides: list[str], base: Path | None = None
) -> str | None:
    """The last `--set` assignment that set the error's key (or a table around it or a key
    inside it), unless the file makes the same error without the overrides."""
    key = error.key
    if key is None or not overrides or _file_error(raw, base) == str(error):
        return None
    for assignment in reversed(overrides):
        path = ".".join(parse_override(assignment)[0])
        if any(_related(path, spelling) for spelling in _spellings(key)):
            return assignment
    return None


_HEADER = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=(.*)$")
_INLINE_KEY = re.compile(r"[{,]\s*([A-Za-z0-9_-]+)\s*=")


def _key_lines(text: str) -> dict[str, int]:
    """Dotted key path -> first line defining it (table headers, keys, inline-table keys)."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            table = header.group(1).replace(" ", "").replace('"', "")
            lines.setdefault(table, number)
        elif assignment := _ASSIGNMENT.match(line):
            name = assignment.group(1).strip().replace('"', "").replace(" ", "")
            path = f"{table}.{name}" if table else name
            lines.setdefault(path, number)
            for inner in _INLINE_KEY.findall(assignment.group(2)):
                lines.setdefault(f"{path}.{inner}", number)
    return lines


def _candidates(key: str) -> list[str]:
    """Where `key` may be written, most precise first: the key, the tables around it; for a
    run's section, the shared table it merges over comes before the run's own header."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[0] == "runs" and parts[2] in SECTIONS:
        own = [".".join(parts[:n]) for n in range(len(parts), 2, -1)]
        shared = [".".join(parts[2:n]) for n in range(len(parts), 2, -1)]
        return [*own, *shared, f"runs.{parts[1]}", "runs"]
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def line_of(text: str, key: str) -> int | None:
    """The line of the TOML source that wrote `key`, or of the nearest table around it."""
    lines = _key_lines(text)
    return next((lines[c] for c in _candidates(key) if c in lines), None)


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


def load_experiment(
    path: str | Path, overrides: list[str] | None = None, sweeps: list[str] | None = None
) -> ExperimentConfig:
    """Read, override and resolve an experiment file; a ConfigError names the file and line
    (or the `--set` assignment) where the problem was written. `sweeps` are `--sweep`s."""
    path, overrides = Path(path), overrides or []
    text = read_experiment_text(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    overridden = apply_overrides(raw, overrides)  # its errors name the override, not a line
    if sweeps:
        try:
            overridden = apply_sweeps(overridden, sweeps)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}", key=error.key) from error
    try:
        return _resolve(overridden, path.parent.resolve())
    except ConfigError as error:
        override = _blamed_override(error, raw, overrides, path.parent.resolve())
        if override is not None:
            raise ConfigError(f"--set {override}: {error}", key=error.key) from error
        line = None if error.key is None else line_of(text, error.key)
        where = f"{path}, line {line}" if line else str(path)
        raise ConfigError(f"{where}: {error}", key=error.key) from error


def to_dict(config: Any) -> Any:
    """A dataclass tree as plain JSON-able values (tuples become lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple | list):
        return [to_dict(v) for v in config]
    return config


def changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """'section.key: old -> new' for every leaf that differs between two config dicts."""
    lines = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            lines += changes(before, after, f"{prefix}{key}.")
        elif before != after:
            lines.append(f"{prefix}{key}: {before!r} -> {after!r}")
    return lines


def identical_runs(config: ExperimentConfig) -> list[list[str]]:
    """Runs grouped by identical resolved configuration (name and description aside), in order:
    identical runs have the same cells, so they are the same models."""
    groups: dict[str, list[str]] = {}
    for run in config.runs:
        settings = {k: v for k, v in to_dict(run).items() if k not in ("name", "description")}
        groups.setdefault(json.dumps(settings, sort_keys=True), []).append(run.name)
    return list(groups.values())


def swept_from_json(records: Any, run_names: list[str], where: str) -> tuple[SweptRun, ...]:
    """experiment.json's `sweep` list (already expanded runs) back into SweptRun records."""
    if not isinstance(records, list) or not all(
        isinstance(r, dict)
        and r.get("name") in run_names
        and isinstance(r.get("source"), str)
        and isinstance(r.get("values"), dict)
        for r in records
    ):
        raise ConfigError(
            f"{where}: sweep: expected a list of {{'name': RUN, 'source': RUN, 'values': {{...}}}}"
            " naming the experiment's runs"
        )
    return tuple(SweptRun(name=r["name"], source=r["source"], values=r["values"]) for r in records)


def from_json(raw: dict[str, Any], where: str = "<json>") -> ExperimentConfig:
    """The inverse of `to_dict(config)`: experiment.json (runs as a list) back into a config.

    `resolve` reads the TOML shape (runs as named tables); what lowdiff writes lists its runs
    with their names inside. Both shapes are accepted here, and every value is checked again.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    runs = raw.get("runs", {})
    if isinstance(runs, list):
        named = {}
        for index, run in enumerate(runs):
            if not isinstance(run, dict) or not isinstance(run.get("name"), str):
                raise ConfigError(f"{where}: runs[{index}]: expected an object with a 'name'")
            if run["name"] in named:
                raise ConfigError(f"{where}: runs[{index}]: duplicate run name {run['name']!r}")
            named[run["name"]] = {key: value for key, value in run.items() if key != "name"}
        runs = named
    swept = raw.get("sweep", [])  # written expanded: the runs are already the sweep's points
    settings = {k: v for k, v in raw.items() if k not in ("sweep", "provenance")}
    config = resolve({**settings, "runs": runs}, where)
    return dataclasses.replace(config, sweep=swept_from_json(swept, list(runs), where))


# --- what the machine must offer: device and memory, checked before any file is written ------

GIB = 1024**3


def check_threads(threads: int) -> None:
    """`--threads`: 0 (chosen: OMP_NUM_THREADS, or the CPUs shared among busy processes) or a
    positive count."""
    if threads < 0:
        raise ConfigError(
            f"--threads must be >= 0 (0 = chosen from OMP_NUM_THREADS or the free CPUs), "
            f"got {threads}"
        )


def check_device_available(name: str) -> None:
    """The configured device exists on this machine ('auto' always does)."""
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as error:
        raise ConfigError(
            f"experiment.device = {name!r}: not a device; valid: auto, cpu, cuda, cuda:N, mps"
        ) from error
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


def activation_floats(model: ModelConfig, num_timesteps: int, points: int) -> tuple[int, int]:
    """(all, largest): the floats of every tensor one model's forward pass over `points`
    training points creates, and of the largest one, counted by running it on meta tensors (no
    memory, no arithmetic), whatever the architecture and its options. The first is an upper
    side of what autograd keeps for the backward pass; a pass without gradients holds a few of
    the largest at a time."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    from lowdiff.models import build_model

    class CountOutputs(TorchDispatchMode):
        floats, largest = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            if any(r.alias_info is not None for r in func._schema.returns):
                return out  # a view or an in-place result: no new memory
            sizes = [x.numel() for x in tree_leaves(out) if isinstance(x, torch.Tensor)]
            self.floats += sum(sizes)
            self.largest = max([self.largest, *sizes])
            return out

    with torch.device("meta"):
        module = build_model(model, 1, num_timesteps)
        xt = torch.empty(1, points, 2)
        t = torch.zeros(1, points, dtype=torch.long)
    with CountOutputs() as counter:
        module(xt, t)
    return counter.floats, counter.largest


def estimate_memory(config: ExperimentConfig, run: RunConfig) -> dict[str, int]:
    """Approximate peak bytes of one engine batch of `run`, by part (an upper-side estimate)."""
    settings = config.experiment
    models = min(settings.max_models_per_batch, len(settings.datasets) * len(settings.seeds))
    params = parameters_per_model(run.model, run.schedule.num_timesteps)
    batch = run.train.batch_size
    # the model's own forward pass, measured: training keeps every activation and its gradient;
    # eval_loss passes chunk_size points without gradients, holding about three of the largest
    # tensors at a time (sampling passes are smaller)
    kept = activation_floats(run.model, run.schedule.num_timesteps, batch)[0]
    largest = activation_floats(run.model, run.schedule.num_timesteps, run.eval.chunk_size)[1]
    activations = max(2 * kept, 3 * largest)
    return {
        # parameters, gradients, two AdamW moments, EMA shadow, checkpoint copy (float32)
        "model, optimiser and EMA state": models * params * 4 * 6,
        # float64 points + float32 copies + kNN radii of every dataset
        "training data": len(settings.datasets) * settings.num_points * 2 * 8 * 3,
        "random numbers of one chunk": 100 * models * run.train.batch_size * 48,
        "losses": run.train.num_steps * models * 4 * 2,
        "schedule and time embeddings": run.schedule.num_timesteps
        * (16 * 8 + 2 * 4 * run.model.embedding_dim),
        "activations": math.ceil(4 * models * activations),
        "samples and their metrics": models * run.eval.num_samples * 2 * 4 * 3
        + run.eval.num_samples * 8 * (2 + run.eval.knn_k) * 4,
        **_evaluation_buffers(run, models),
    }


def _evaluation_buffers(run: RunConfig, models: int) -> dict[str, int]:
    """Bytes of the evaluation's other buffers (float32), each held for a whole batch: the
    weight field (M, n_t, G, G, K) with the network's activations over its G^2 grid points,
    and the reverse-process snapshots (M, P, n, 2)."""
    grid = run.eval.field_resolution**2
    width = max(run.model.hidden_dim, run.model.embedding_dim)
    branches = 4  # an upper bound on K of the shipped mixing architectures
    return {
        "weight field": models * grid * (run.eval.field_timesteps * branches + 4 * width) * 4,
        "reverse-process snapshots": models
        * run.eval.process_snapshots
        * run.eval.process_points
        * 2
        * 4,
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
            "(model.hidden_dim, experiment.num_points, eval.num_samples, eval.field_resolution, "
            "eval.process_points, train.num_steps) or "
            "experiment.max_models_per_batch"
        )


def check_plugins(config: ExperimentConfig) -> None:
    """Every plugin model class can be built, called and batched (lowdiff.models.plugin)."""
    from lowdiff.models.plugin import check_plugin

    for run in config.runs:
        if is_plugin(run.model.arch):
            try:
                check_plugin(run.model, run.schedule.num_timesteps)
            except PluginError as error:
                raise ConfigError(f"runs.{run.name}: {error}", key=f"runs.{run.name}") from error


def check_resources(config: ExperimentConfig) -> None:
    """What the machine must offer the experiment (device, memory, the plugin classes it
    names): call before any write."""
    check_device_available(config.experiment.device)
    check_executor_available(config.experiment.executor)
    check_numerics(config)
    check_plugins(config)
    check_memory(config)


EXECUTOR_PACKAGES = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}  # kind: module, extra


def check_executor_available(kind: str) -> None:
    """The package an executor needs is installed (found without importing it)."""
    if kind not in EXECUTOR_PACKAGES:
        return
    module, extra = EXECUTOR_PACKAGES[kind]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"experiment.executor = {kind!r} needs the package {module!r}, which is not "
            f"installed; install it with: pip install 'lowdiff[{extra}]', or use 'local'"
        )


def check_numerics(config: ExperimentConfig) -> None:
    """Every run's train/eval precision and compilation run on the experiment's device (bf16
    needs native hardware support: lowdiff.precision; compile a C++ compiler or Triton:
    lowdiff.compilation)."""
    from lowdiff.compilation import check_compile
    from lowdiff.precision import check_precision

    device = config.experiment.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    for run in config.runs:
        for section in ("train", "eval"):
            setting = f"runs.{run.name}: {section}."
            try:
                check_precision(getattr(run, section).precision, device, setting + "precision")
                check_compile(getattr(run, section).compile, device, setting + "compile")
            except ValueError as error:
                raise ConfigError(str(error)) from None
