"""The Python API: train, reload, sample, measure and tabulate, without reading the engine.

    import lowdiff
    table = lowdiff.train(model="mlp", datasets=["moons"], seeds=[0], out="runs/try",
                          num_steps=2000)          # a one-run experiment, like `lowdiff train`
    model = lowdiff.load("runs/try/mlp/moons/seed_0")
    points = model.sample(1000, sampler="ancestral", seed=0)      # (1000, 2) NumPy array
    lowdiff.evaluate(points, "moons")                             # {"kl_divergence": ..., ...}
    table = lowdiff.run_experiment("experiments/quickstart.toml", out="runs/quick")
    table.to_csv("metrics.csv"); table.to_dataframe()             # pandas only if installed

Everything here reads and writes the same files as the command line (results.py's layout), so
a model trained by `lowdiff run` loads here and a table exported here matches `lowdiff export`.
Heavy modules (torch, the engine) are imported only when a function needs them.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lowdiff import results
from lowdiff.remeasure import Remeasured, remeasure
from lowdiff.table import COLUMNS, ResultsTable

if TYPE_CHECKING:
    import torch

    from lowdiff.config import ExperimentConfig, RunConfig

__all__ = [
    "COLUMNS",
    "Remeasured",
    "ResultsTable",
    "TrainedModel",
    "did_you_mean",
    "evaluate",
    "evaluate_against_floor",
    "load",
    "remeasure",
    "run_experiment",
    "train",
    "train_config",
]

log = logging.getLogger(__name__)

DEFAULT_DATASETS = ("circle", "dino", "line", "moons")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' did you mean 'x'?' when a choice is close to `name`, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" did you mean {close[0]!r}?" if close else ""


def check_choice(value: str, choices: Iterable[str], what: str, where: str) -> None:
    """A ConfigError naming `where` (a flag or argument) when `value` is not a valid `what`."""
    from lowdiff.config import ConfigError

    choices = list(choices)
    if value not in choices:
        raise ConfigError(
            f"{where}: unknown {what} {value!r};{did_you_mean(value, choices)} "
            f"valid: {', '.join(choices)}"
        )


# --- arguments, checked alike here and on the command line ----------------------------------
#
# `where` names the argument as the caller wrote it ("n=" here, "--n" on the command line), so
# the API and the CLI refuse the same values with the same sentence.


def check_count(value: Any, where: str, *, minimum: int = 1) -> int:
    """`value` as an int if it is an integer (NumPy's too; not a bool, float or string) of at
    least `minimum`; else a ConfigError naming `where`."""
    from lowdiff.config import ConfigError

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {int(value)}")
    return int(value)


def check_seeds(seeds: Any, where: str) -> list[int]:
    """A seed or a sequence of seeds as ints >= 0 (a string or a float is refused, never cast)."""
    from lowdiff.config import ConfigError

    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        seeds = [seeds]
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise ConfigError(f"{where}: expected a list of integer seeds, got {seeds!r}")
    return [check_count(seed, where, minimum=0) for seed in seeds]


def check_device(name: Any, where: str) -> str:
    """A device name torch knows (auto, cpu, cuda, cuda:N, mps), available on this machine."""
    from lowdiff import config as config_module

    if not isinstance(name, str):
        raise config_module.ConfigError(f"{where}: expected a device name, got {name!r}")
    try:
        config_module.check_device_available(name)
    except config_module.ConfigError as error:
        raise config_module.ConfigError(
            str(error).replace(f"experiment.device = {name!r}", f"{where} {name!r}")
        ) from error
    return name


# --- experiments from arguments ------------------------------------------------------------


def _sections() -> dict[str, type]:
    from lowdiff.config import SECTIONS, ExperimentSettings

    return {"experiment": ExperimentSettings, **SECTIONS}


def _override_path(key: str) -> tuple[str, str]:
    """'train__num_steps' or 'num_steps' (a field name found in one section) -> (section, key)."""
    from lowdiff.config import ConfigError

    sections = _sections()
    names = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in sections.items()}
    if "__" in key:
        section, leaf = key.split("__", 1)
        check_choice(section, sections, "config section", f"{key}=")
        check_choice(leaf, names[section], f"key of [{section}]", f"{key}=")
        return section, leaf
    owners = [section for section, fields in names.items() if key in fields]
    if len(owners) > 1:
        options = " or ".join(f"{s}__{key}" for s in owners)
        raise ConfigError(f"{key}=: {key!r} is a key of several sections; write {options}")
    if not owners:
        every = [name for fields in names.values() for name in fields]
        raise ConfigError(
            f"{key}=: unknown setting {key!r};{did_you_mean(key, every)} "
            "`lowdiff keys` lists every setting (write section__key for one section's key)"
        )
    return owners[0], key


def train_config(
    model: str = "mlp",
    datasets: Sequence[str] = DEFAULT_DATASETS,
    seeds: Sequence[int] = (0,),
    *,
    name: str | None = None,
    device: str = "auto",
    overrides: Sequence[str] = (),
    settings: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> ExperimentConfig:
    """The one-run experiment of `lowdiff train`: `model` on datasets x seeds.

    `overrides` are `--set` strings ("train.num_steps=2000"); `settings` are Python values by
    key ({"num_steps": 2000} or {"train__num_steps": 2000}). `flags` names the argument each
    of model/datasets/seeds came from, for errors ("--model" on the command line).
    """
    from lowdiff import config as config_module
    from lowdiff.architectures import ARCHITECTURES
    from lowdiff.data import DATASETS

    flags = {"model": "model=", "datasets": "datasets=", "seeds": "seeds=", **(flags or {})}
    check_choice(model, ARCHITECTURES, "architecture", flags["model"])
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    for dataset in datasets:
        check_choice(dataset, DATASETS, "dataset", flags["datasets"])
    raw: dict[str, Any] = {
        "experiment": {
            "name": name or model,
            "datasets": datasets,
            "seeds": check_seeds(seeds, flags["seeds"]),
            "device": device,
        },
        "runs": {model: {"description": f"the {model} denoiser", "model": {"arch": model}}},
    }
    for key, value in (settings or {}).items():
        section, leaf = _override_path(key)
        if isinstance(value, np.generic):  # a NumPy scalar is the Python number it holds
            value = value.item()
        raw.setdefault(section, {})[leaf] = list(value) if isinstance(value, tuple) else value
    raw = config_module.apply_overrides(raw, list(overrides))
    return config_module.resolve(raw, "lowdiff train")


def _as_config(path_or_config: Any, overrides: Sequence[str]) -> ExperimentConfig:
    """An ExperimentConfig from a TOML/JSON path, a dict (TOML or JSON shape) or a config."""
    from lowdiff import config as config_module

    if isinstance(path_or_config, config_module.ExperimentConfig):
        if overrides:
            raw = config_module.to_dict(path_or_config)
            return config_module.from_json(config_module.apply_overrides(raw, list(overrides)))
        return path_or_config
    if isinstance(path_or_config, Mapping):
        raw = config_module.apply_overrides(dict(path_or_config), list(overrides))
        return config_module.from_json(raw, "<dict>")
    path = Path(path_or_config)
    if path.suffix == ".json":
        raw = config_module.apply_overrides(results.read_json(path), list(overrides))
        return config_module.from_json(raw, str(path))
    return config_module.load_experiment(path, list(overrides))


def _execute(
    config: ExperimentConfig,
    out: Path,
    *,
    force: bool,
    progress: bool,
    report: bool,
    threads: int = 0,
) -> ResultsTable:
    from lowdiff import runtime
    from lowdiff.config import check_threads
    from lowdiff.executors import make_executor

    check_threads(threads)
    runtime.share_cpu_environment()  # effective only if torch is not imported yet
    from lowdiff.experiments import execute

    runtime.configure_cpu(threads)  # the command line's policy: CPUs shared among busy jobs
    local = config.executor.kind == "local"  # as `lowdiff run`: where experiment.executor says
    executor = None if local else make_executor(config.executor, root=out)

    def once(config: ExperimentConfig, only: Collection[tuple[str, str]] | None = None) -> int:
        execute(config, out, force=force, progress=progress, executor=executor, only=only)
        if report:
            from lowdiff.report import write_report

            write_report(out)
        return 0

    if config.experiment.until_decided:
        from lowdiff import rounds

        rounds.until_decided(config, out, once, log.info)
    else:
        once(config)
    return ResultsTable.from_dirs([out])


def train(
    model: str = "mlp",
    datasets: Sequence[str] = DEFAULT_DATASETS,
    seeds: Sequence[int] = (0,),
    out: str | Path | None = None,
    *,
    name: str | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = False,
    report: bool = False,
    threads: int = 0,
    **settings: Any,
) -> ResultsTable:
    """Train and measure `model` on every dataset x seed (resumable); returns its metrics.

    Any setting is a keyword: `num_steps=2000`, `hidden_dim=64`, or `train__num_steps=2000`
    where a name belongs to several sections (`lowdiff keys` lists them). Results go to `out`
    (default runs/<name>); `lowdiff.load(table.root / model / dataset / "seed_0")` reloads one.
    `threads`: torch's CPU threads, as `--threads` (0: shared among busy processes).
    """
    config = train_config(model, datasets, seeds, name=name, device=device, settings=settings)
    root = Path(out) if out is not None else Path("runs") / config.experiment.name
    return _execute(config, root, force=force, progress=progress, report=report, threads=threads)


def run_experiment(
    path_or_config: str | Path | Mapping[str, Any] | ExperimentConfig,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    force: bool = False,
    progress: bool = False,
    report: bool = False,
    threads: int = 0,
) -> ResultsTable:
    """Run an experiment (a TOML or experiment.json path, a dict or an ExperimentConfig).

    Like `lowdiff run`: finished cells are kept, so calling it again resumes. `overrides` are
    `--set` strings. Results go to `out` (default runs/<experiment name>); `report=True` also
    writes report.md / report.html; `threads` as `--threads` (0: shared among busy
    processes, the command line's policy). With `experiment.until_decided` it adds rounds of
    seeds until decided, as `lowdiff run --until-decided` (`lowdiff.rounds`). Returns the
    metrics of every finished cell.
    """
    config = _as_config(path_or_config, overrides)
    root = Path(out) if out is not None else Path("runs") / config.experiment.name
    return _execute(config, root, force=force, progress=progress, report=report, threads=threads)


def evaluate(
    samples: np.ndarray, dataset: str, k: int = 5, *, num_points: int | None = None
) -> dict[str, float]:
    """The sample metrics of `samples` (N, 2) against `dataset`'s training points.

    `num_points`: how many training points (default: the protocol's 100,000, as `lowdiff run`).
    """
    from lowdiff import data, metrics

    check_choice(dataset, data.DATASETS, "dataset", "dataset=")
    k = check_count(k, "k=")
    num_points = data.DEFAULT_N if num_points is None else check_count(num_points, "num_points=")
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[1] != 2 or samples.dtype.kind not in "fiu":
        raise ValueError(f"samples: expected an (N, 2) array of numbers, got {samples.shape}")
    if not np.isfinite(samples).all():
        raise ValueError("samples: hold NaN or infinite values")
    if not k < len(samples):
        raise ValueError(f"k=: {k} neighbours need more than the {len(samples)} samples")
    reference = metrics.load_reference(dataset, num_points)
    return metrics.measure(np.asarray(samples, dtype=np.float32), reference, k)


def _floor_words(metric: str, value: float, draws: Sequence[float]) -> str:
    """Where one value lies against its oracle draws (fresh draws of the true distribution):
    inside their 99% prediction interval (t, n - 1 degrees of freedom) it is "at the floor"."""
    from scipy import stats as scipy_stats

    from lowdiff.metrics import METRICS

    info, n, mean = METRICS[metric], len(draws), float(np.mean(draws))
    if n > 1:
        spread = float(np.std(draws, ddof=1)) * np.sqrt(1 + 1 / n)
        if abs(value - mean) <= scipy_stats.t.ppf(0.995, n - 1) * spread:
            return "at the oracle floor (inside the 99% range of true samples)"
    elif value == mean:
        return "at the oracle floor"
    short = None if info.improves is None else (value > mean) == (info.improves == "lower")
    if short:
        return f"short of the oracle floor ({info.improves} is better until it is reached)"
    return info.below_oracle if value < mean else info.above_oracle


def evaluate_against_floor(
    samples: np.ndarray,
    dataset: str,
    k: int = 5,
    *,
    num_points: int | None = None,
    draws: int = 5,
) -> dict[str, dict[str, Any]]:
    """Every sample metric of `samples` with its oracle floor and a verdict in words.

    The floor is measured like `lowdiff run`'s (oracle.py): `draws` fresh draws of the true
    distribution with as many points as `samples` (seeds 1000, 1001, ...), against the same
    training points with the same k. Returns metric -> {"value", "floor", "floor_std",
    "verdict"}; "at the oracle floor" means inside the draws' 99% prediction interval.
    """
    from lowdiff import data, metrics
    from lowdiff.oracle import FIRST_SEED

    check_choice(dataset, data.DATASETS, "dataset", "dataset=")
    points = np.asarray(samples, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < k + 1:
        raise ValueError(f"samples must have shape (N, 2) with N > k = {k}, got {points.shape}")
    reference = metrics.load_reference(dataset, num_points or data.DEFAULT_N)
    measured = metrics.measure(points, reference, k)
    floors = [
        metrics.measure(data.load(dataset, len(points), seed=FIRST_SEED + draw), reference, k)
        for draw in range(draws)
    ]
    result = {}
    for metric, value in measured.items():
        if metric not in metrics.METRICS:  # counts beside the metrics (num_modes)
            continue
        draws_of = [floor[metric] for floor in floors]
        mean, std = float(np.mean(draws_of)), float(np.std(draws_of))
        words = _floor_words(metric, float(value), draws_of)
        result[metric] = {"value": float(value), "floor": mean, "floor_std": std, "verdict": words}
    return result


# --- a trained model, reloaded from its cell -----------------------------------------------


@dataclass
class TrainedModel:
    """One trained model (the EMA weights of one cell) with its run's config.

    `sample` draws new points with any sampler; `denoise` is the network itself (eps_hat).
    """

    run: RunConfig
    dataset: str
    seed: int
    directory: Path
    record: Mapping[str, Any]
    num_points: int
    network: Any  # lowdiff.models.Denoiser holding one model (M = 1)
    schedule: Any  # lowdiff.schedule.NoiseSchedule
    device: Any  # torch.device

    def generator(self, seed: int | None) -> torch.Generator:
        """A fresh generator: `seed`, or (None) the cell's own sampling stream."""
        import torch

        from lowdiff.engine import Member, stream_generators

        if seed is None:
            return stream_generators(Member(self.dataset, self.seed), self.device)["sample"]
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def sample(
        self,
        n: int,
        sampler: str = "ancestral",
        sampling_steps: int = 0,
        seed: int | None = 0,
        *,
        eta: float = 0.0,
    ) -> np.ndarray:
        """`n` new points (n, 2) from the model. sampling_steps 0 = every timestep.

        seed=None replays the cell's own sampling stream: with the ancestral sampler at every
        step that gives the cell's samples.npy again (its first n points' draws).
        """
        n = check_count(n, "n=")
        sampling_steps = check_count(sampling_steps, "sampling_steps=", minimum=0)
        seed = None if seed is None else check_count(seed, "seed=", minimum=0)
        check_sample_memory(n, self.run.model.hidden_dim, "n=")
        generators = [self.generator(seed)]
        from lowdiff import samplers

        check_choice(sampler, samplers.SAMPLERS, "sampler", "sampler=")
        drawn = samplers.sample(
            self.network,
            self.schedule,
            generators,
            self.device,
            num_samples=n,
            sampler=sampler,
            sampling_steps=sampling_steps,
            eta=eta,
        )
        return np.asarray(drawn.points[0])

    def denoise(self, xt: np.ndarray, t: int | np.ndarray) -> np.ndarray:
        """The predicted noise eps_hat (N, 2) for noisy points xt (N, 2) at timestep(s) t."""
        import torch

        x = torch.as_tensor(np.asarray(xt, dtype=np.float32), device=self.device)
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"xt must have shape (N, 2), got {tuple(x.shape)}")
        steps = np.broadcast_to(np.asarray(t), (x.shape[0],))
        if not np.issubdtype(steps.dtype, np.integer) or not (
            (steps >= 0).all() and (steps < self.schedule.num_timesteps).all()
        ):
            raise ValueError(f"t must be integers in [0, {self.schedule.num_timesteps - 1}]")
        timesteps = torch.as_tensor(steps.astype(np.int64), device=self.device)
        with torch.no_grad():
            eps = self.network(x.unsqueeze(0), timesteps.unsqueeze(0)).eps
        return eps[0].cpu().numpy()

    def evaluate(self, samples: np.ndarray, k: int | None = None) -> dict[str, float]:
        """`evaluate` against this model's dataset, with its run's k and number of points."""
        return evaluate(samples, self.dataset, k or self.run.eval.knn_k, num_points=self.num_points)


def check_sample_memory(n: int, hidden_dim: int, where: str) -> None:
    """Refuse a number of points whose sampling buffers (float32 points, noise and the
    network's activations per point) would not fit in the memory available now."""
    from lowdiff.config import GIB, ConfigError, available_memory

    needed, available = n * 4 * (16 + 8 * hidden_dim), available_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"{where}: {n} points would need about {needed / GIB:,.1f} GiB of memory but "
            f"{available / GIB:,.1f} GiB is available; draw fewer points per call"
        )


def _cells_under(run_dir: Path) -> list[Path]:
    return sorted(path.parent for path in run_dir.glob("*/seed_*/cell.json"))


def _find_cell(
    path: Path, run: str | None, dataset: str | None, seed: int | None
) -> tuple[Path, Path]:
    """(run directory, cell directory) for a cell, run or results directory."""
    if (path / "cell.json").is_file():
        return path.parent.parent, path
    if (path / "experiment.json").is_file():
        runs = sorted(p.parent.name for p in path.glob("*/config.json"))
        if run is None and len(runs) != 1:
            raise results.ResultsError(
                f"{path} is a results directory of runs {', '.join(runs)}; pass run=NAME "
                f"or a run directory such as {path / (runs[0] if runs else 'RUN')}"
            )
        path = path / (run or runs[0])
    if not (path / "config.json").is_file():
        raise results.ResultsError(
            f"{path}: not a lowdiff cell, run or results directory (no cell.json, config.json "
            "or experiment.json); pass e.g. RESULTS/RUN/DATASET/seed_0"
        )
    cells = _cells_under(path)
    chosen = [
        cell
        for cell in cells
        if (dataset is None or cell.parent.name == dataset)
        and (seed is None or cell.name == f"seed_{seed}")
    ]
    if len(chosen) != 1:
        found = ", ".join(f"{c.parent.name}/{c.name}" for c in cells) or "none"
        what = "no cell matches" if not chosen else "several cells match"
        raise results.ResultsError(
            f"{path}: {what} dataset={dataset!r}, seed={seed!r}; cells: {found}"
        )
    return path, chosen[0]


def _run_config(run_dir: Path) -> ExperimentConfig:
    """A run's config.json -> a one-run ExperimentConfig (its run and experiment settings)."""
    from lowdiff import config as config_module

    raw = results.read_json(run_dir / "config.json")
    if not isinstance(raw, dict) or "name" not in raw or "experiment" not in raw:
        raise results.ResultsError(f"{run_dir / 'config.json'}: not a lowdiff run config")
    experiment = {**raw["experiment"], "baseline": ""}  # the run alone: no baseline to check
    run = {key: value for key, value in raw.items() if key != "experiment"}
    try:
        config = config_module.from_json(
            {"experiment": experiment, "runs": [run]}, str(run_dir / "config.json")
        )
    except config_module.ConfigError as error:
        raise results.ResultsError(str(error)) from error
    return config


def _weights(cell_dir: Path, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    path = cell_dir / "model_ema.npz"
    if not path.is_file():
        kept = "model_ema.npz" in record.get("files", {})
        why = (
            "was removed (a compact results folder omits model weights)"
            if kept
            else "was not written with this cell"
        )
        raise results.ResultsError(
            f"{cell_dir}: no model weights: model_ema.npz {why}. Its samples and metrics are "
            "there; to sample anew, run the experiment again with the weights kept"
        )
    return results.read_npz(path)


def load(
    path: str | Path,
    dataset: str | None = None,
    seed: int | None = None,
    *,
    run: str | None = None,
    device: str = "cpu",
) -> TrainedModel:
    """The trained model of one finished cell (a cell, run or results directory + choices).

    The network is rebuilt from the run's config.json and the cell's model_ema.npz (read with
    allow_pickle=False). A results folder kept without weights gives a ResultsError saying so.
    """

    from lowdiff.engine import resolve_device
    from lowdiff.experiments import cell_hash
    from lowdiff.models import build_model, load_weights
    from lowdiff.schedule import NoiseSchedule

    target = resolve_device(check_device(device, "device="))
    run_dir, cell_dir = _find_cell(Path(path), run, dataset, seed)
    record = results.load_cell_record(cell_dir)
    experiment = _run_config(run_dir)
    config = experiment.runs[0]
    dataset, seed = str(record["dataset"]), int(record["seed"])
    if record.get("config_hash") != cell_hash(experiment, config, dataset, seed):
        raise results.ResultsError(
            f"{cell_dir}: stale: the cell was written under another configuration than its "
            f"run's {run_dir / 'config.json'}; run the experiment again to renew it"
        )
    arrays = _weights(cell_dir, record)
    network = build_model(config.model, 1, config.schedule.num_timesteps)
    load_weights(network, [arrays], [cell_dir / "model_ema.npz"])
    network = network.to(target).eval().requires_grad_(False)
    return TrainedModel(
        run=config,
        dataset=dataset,
        seed=seed,
        directory=cell_dir,
        record=record,
        num_points=experiment.experiment.num_points,
        network=network,
        schedule=NoiseSchedule(config.schedule, target),
        device=target,
    )
