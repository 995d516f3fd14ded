"""Where packs of cells run: in this process, as Ray tasks, or as Slurm jobs through submitit.

An executor maps a function over items (the experiment runner's packs) and returns one
`Outcome` per item, in order: it retries a failing item a bounded number of times, then
reports it by name with its error, and never raises for one failing item, so the other items'
results are kept. Scheduling is left to the engines that do it well:

- `LocalExecutor`: one item after another in this process (the default).
- `RayExecutor`: one Ray task per item (`ray.init()` starts a cluster on this machine,
  `ray.init(address=...)` joins a running one); each task asks for `cpus_per_task` CPUs and
  `gpus_per_task` whole GPUs and runs torch on as many threads as it was given CPUs.
- `SlurmExecutor`: one job per item as a Slurm job array through submitit (`map_array`);
  `slurm_cluster = "local"` runs the same jobs as local processes through the same code path.

Ray and submitit are optional extras (`pip install lowdiff[ray]`, `lowdiff[slurm]`), imported
only when their executor is used. Every item function must be picklable (cloudpickle), and
workers write their results themselves (to a directory every worker and the driver can see).
"""

from __future__ import annotations

import importlib
import logging
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

Kind = Literal["local", "ray", "slurm"]
SlurmCluster = Literal["slurm", "local", "debug"]


@dataclass(frozen=True, kw_only=True)
class ExecutorConfig:
    """How an experiment's packs are run (the `[executor]` table of an experiment file).

    Defaults run everything in this process, as `lowdiff run` always has.
    """

    kind: Kind = "local"
    ray_address: str = ""  # "": the cluster running here, else a new one; "auto", "HOST:PORT"
    cpus_per_task: int = 1  # CPUs (and torch threads) per Ray task or Slurm job
    gpus_per_task: int = 0  # whole GPUs per Ray task
    max_retries: int = 2  # further attempts after a failed one
    slurm_partition: str = ""  # "": the cluster's default partition
    slurm_time_min: int = 60  # time limit of one job, minutes
    slurm_gpus_per_task: int = 0  # whole GPUs per Slurm job
    slurm_array_parallelism: int = 16  # jobs of the array running at once
    slurm_cluster: SlurmCluster = "slurm"  # "local": submitit runs the jobs as local processes
    folder: str = ""  # submitit's logs and pickles; "": <results directory>/.submitit

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, EXECUTORS)
        _check_choice("slurm_cluster", self.slurm_cluster, SLURM_CLUSTERS)
        for name in ("cpus_per_task", "slurm_time_min", "slurm_array_parallelism"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("gpus_per_task", "slurm_gpus_per_task"):
            _check_int(name, getattr(self, name), minimum=0, note=WHOLE_GPUS)
        _check_int("max_retries", self.max_retries, minimum=0)
        for name in ("ray_address", "slurm_partition", "folder"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"executor.{name} must be a string, got {getattr(self, name)!r}")


WHOLE_GPUS = (
    "; a task gets whole GPUs (many small models share a GPU through "
    "experiment.max_models_per_batch, not through fractional tasks)"
)
SLURM_CLUSTERS = {
    "slurm": "submit to Slurm (sbatch)",
    "local": "run the jobs as processes on this machine (no Slurm needed)",
    "debug": "run the jobs one by one in this process",
}


def _check_choice(name: str, value: Any, valid: dict[str, Any]) -> None:
    if value not in valid:
        raise ValueError(f"executor.{name}: unknown {value!r}; valid: {', '.join(valid)}")


def _check_int(name: str, value: Any, *, minimum: int, note: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"executor.{name} must be an integer >= {minimum}, got {value!r}{note}")


@dataclass(frozen=True)
class Outcome:
    """What became of one item: ok, or the error of its last attempt."""

    name: str
    ok: bool
    error: str | None = None
    attempts: int = 1


class Executor(Protocol):
    def map(
        self, fn: Callable[[Any], Any], items: Sequence[Any], *, names: Sequence[str]
    ) -> list[Outcome]:
        """Run fn(item) for every item; one Outcome per item, in order; never raises for one."""
        ...


def describe(error: BaseException) -> str:
    """An error as its type and message."""
    message = str(error).strip()
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _check_names(items: Sequence[Any], names: Sequence[str]) -> list[str]:
    names = list(names)
    if len(names) != len(items):
        raise ValueError(f"got {len(items)} items but {len(names)} names; give one name per item")
    return names


def _outcomes(names: list[str], errors: list[str | None], attempts: list[int]) -> list[Outcome]:
    outcomes = [
        Outcome(name, error is None, error, tries)
        for name, error, tries in zip(names, errors, attempts, strict=True)
    ]
    for outcome in outcomes:
        if not outcome.ok:
            log.error(
                "%s failed after %d attempts: %s", outcome.name, outcome.attempts, outcome.error
            )
    return outcomes


def run_with_threads(fn: Callable[[Any], Any], item: Any, threads: int) -> str | None:
    """Worker entry point: fn(item) with torch on `threads` CPU threads; returns None, or the
    error it raised (described; its traceback goes to the worker's log)."""
    from lowdiff.runtime import limit_threads

    limit_threads(threads)
    try:
        fn(item)
    except Exception as error:  # reported to the driver, which decides on a retry
        log.exception("task failed")
        return describe(error)
    return None


# --- in this process ------------------------------------------------------------------------


class LocalExecutor:
    """Items one after another in this process (torch keeps the threads the process chose)."""

    def __init__(self, config: ExecutorConfig | None = None) -> None:
        self.config = config or ExecutorConfig()

    def map(
        self, fn: Callable[[Any], Any], items: Sequence[Any], *, names: Sequence[str]
    ) -> list[Outcome]:
        names = _check_names(items, names)
        errors: list[str | None] = []
        attempts: list[int] = []
        for name, item in zip(names, items, strict=True):
            error = None
            for attempt in range(1, self.config.max_retries + 2):
                try:
                    fn(item)
                except Exception as failure:  # one item's failure must not stop the others
                    error = describe(failure)
                    verbose = log.isEnabledFor(logging.INFO)  # the traceback with --verbose
                    log.warning("%s: attempt %d failed: %s", name, attempt, error, exc_info=verbose)
                else:
                    error = None
                    break
            errors.append(error)
            attempts.append(attempt)
        return _outcomes(names, errors, attempts)


# --- optional engines -----------------------------------------------------------------------


def _import_optional(module: str, extra: str) -> types.ModuleType:
    """Import an optional engine, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"the {extra!r} executor needs {module!r}, which is not installed; "
            f"install it with: pip install 'lowdiff[{extra}]'"
        ) from error


def _ray_error(failure: Exception) -> str:
    """A Ray error in one line: the task's own exception where Ray wrapped one."""
    cause = getattr(failure, "cause", None)
    if isinstance(cause, BaseException):
        return describe(cause)
    first_line = (str(failure).strip().splitlines() or [""])[0]
    return f"{type(failure).__name__}: {first_line}"


class RayExecutor:
    """One Ray task per item, retried by the driver (so every attempt's error is seen).

    Uses the Ray connection this process already has; otherwise connects (`ray_address`) or
    starts a cluster on this machine, and disconnects after the map.
    """

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config

    def map(
        self, fn: Callable[[Any], Any], items: Sequence[Any], *, names: Sequence[str]
    ) -> list[Outcome]:
        names = _check_names(items, names)
        ray = _import_optional("ray", "ray")
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.config.ray_address or None)
        try:
            return self._map(ray, fn, items, names)
        finally:
            if started:
                ray.shutdown()

    def _map(
        self, ray: types.ModuleType, fn: Callable[[Any], Any], items: Sequence[Any], names: list
    ) -> list[Outcome]:
        config = self.config
        task = ray.remote(run_with_threads).options(
            num_cpus=config.cpus_per_task, num_gpus=config.gpus_per_task, max_retries=0
        )
        shared_fn = ray.put(fn)
        errors: list[str | None] = [None] * len(items)
        attempts = [0] * len(items)
        pending: dict[Any, int] = {}

        def submit(i: int) -> None:
            attempts[i] += 1
            pending[task.remote(shared_fn, items[i], config.cpus_per_task)] = i

        for i in range(len(items)):
            submit(i)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            try:
                errors[i] = ray.get(ref)
            except Exception as failure:  # the worker died (or Ray failed) mid-task
                errors[i] = _ray_error(failure)
            if errors[i] is not None:
                log.warning("%s: attempt %d failed: %s", names[i], attempts[i], errors[i])
                if attempts[i] <= config.max_retries:
                    submit(i)
        return _outcomes(names, errors, attempts)


class SlurmExecutor:
    """A Slurm job array through submitit; failed jobs are resubmitted as a new array."""

    def __init__(self, config: ExecutorConfig, folder: Path) -> None:
        self.config = config
        self.folder = folder

    def _submitit_executor(self) -> Any:
        submitit = _import_optional("submitit", "slurm")
        config = self.config
        executor = submitit.AutoExecutor(folder=self.folder, cluster=config.slurm_cluster)
        parameters: dict[str, Any] = {
            "name": "lowdiff",
            "timeout_min": config.slurm_time_min,
            "nodes": 1,
            "tasks_per_node": 1,
            "cpus_per_task": config.cpus_per_task,
            "gpus_per_node": config.slurm_gpus_per_task,
            "slurm_array_parallelism": config.slurm_array_parallelism,
        }
        if config.slurm_partition:
            parameters["slurm_partition"] = config.slurm_partition
        executor.update_parameters(**parameters)
        return executor

    def map(
        self, fn: Callable[[Any], Any], items: Sequence[Any], *, names: Sequence[str]
    ) -> list[Outcome]:
        names = _check_names(items, names)
        executor = self._submitit_executor()
        errors: list[str | None] = [None] * len(items)
        attempts = [0] * len(items)
        todo = list(range(len(items)))
        while todo:
            count = len(todo)
            jobs = executor.map_array(
                run_with_threads,
                [fn] * count,
                [items[i] for i in todo],
                [self.config.cpus_per_task] * count,
            )
            log.info("submitted %d jobs (first id %s)", count, jobs[0].job_id if jobs else "-")
            failed = []
            for i, job in zip(todo, jobs, strict=True):
                attempts[i] += 1
                try:
                    errors[i] = job.result()
                except Exception as failure:  # the job died (killed, out of time or memory)
                    errors[i] = (
                        f"job {job.job_id} ended without a result ({type(failure).__name__}); "
                        f"its log: {job.paths.stdout}"
                    )
                if errors[i] is not None:
                    log.warning("%s: attempt %d failed: %s", names[i], attempts[i], errors[i])
                    if attempts[i] <= self.config.max_retries:
                        failed.append(i)
            todo = failed
        return _outcomes(names, errors, attempts)


EXECUTORS: dict[str, str] = {
    "local": "one pack after another in this process",
    "ray": "one Ray task per pack (a cluster on this machine or a running one)",
    "slurm": "one Slurm job per pack, as a job array through submitit",
}


def make_executor(config: ExecutorConfig, *, root: Path | None = None) -> Executor:
    """The executor `config` describes; `root` (the results directory) places submitit's
    folder when `config.folder` is empty."""
    if config.kind == "ray":
        return RayExecutor(config)
    if config.kind == "slurm":
        folder = Path(config.folder) if config.folder else Path(root or ".") / ".submitit"
        return SlurmExecutor(config, folder / "%j")
    return LocalExecutor(config)


__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorConfig",
    "LocalExecutor",
    "Outcome",
    "RayExecutor",
    "SlurmExecutor",
    "describe",
    "make_executor",
    "run_with_threads",
]
