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
import shutil
import subprocess
import sys
import time
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
    slurm_state_timeout_s: int = 300  # s a job may be in neither sacct nor squeue, no result

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, EXECUTORS)
        _check_choice("slurm_cluster", self.slurm_cluster, SLURM_CLUSTERS)
        positive = ("cpus_per_task", "slurm_time_min", "slurm_array_parallelism")
        for name in (*positive, "slurm_state_timeout_s"):
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


class ExecutorError(ValueError):
    """A cluster cannot run the packs as configured: one line naming the setting to change."""


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
    def check(self) -> None:
        """Ask the cluster whether it can run the packs as configured (before anything is
        written); raise ExecutorError naming the setting if not."""
        ...

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

    def check(self) -> None:
        """Nothing to ask: this process runs the packs."""

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


def loopback_address() -> str | None:
    """The node address of a Ray cluster this process starts: on the loopback interface, so
    that no traffic leaves the machine. Ray turns 127.0.0.1 into the machine's network address
    on Linux (`ray._private.services.resolve_ip_for_localhost`); every 127.x.y.z is on the
    loopback interface there, so 127.0.0.2 stays on it. Elsewhere (macOS, Windows) Ray keeps a
    single-machine cluster on 127.0.0.1 by itself (None: Ray's choice)."""
    return "127.0.0.2" if sys.platform.startswith("linux") else None


def _starts_a_cluster(ray: types.ModuleType, address: str) -> bool:
    """Whether `ray.init(address or None)` starts a new cluster rather than joining one
    (`""`: it joins RAY_ADDRESS or a cluster started here by `ray start`, else starts one)."""
    if address == "local":
        return True
    if address:
        return False
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(None) is None
    except Exception:  # Ray's lookup failed: let ray.init decide, on Ray's default address
        return False


AUTH_HINT = (
    "if that cluster uses token authentication (RAY_AUTH_MODE=token, on by default when "
    "~/.ray/auth_token exists), set RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or "
    "~/.ray/auth_token) for lowdiff too; see docs/scale.md"
)


class RayExecutor:
    """One Ray task per item, retried by the driver (so every attempt's error is seen).

    Uses the Ray connection this process already has; otherwise connects (`ray_address`) or
    starts a cluster on this machine's loopback interface, and disconnects after the map.
    """

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self._started = False  # this executor called ray.init (and so calls ray.shutdown)

    def check(self) -> None:
        """Join or start the cluster now, so an unreachable one stops the run before any file
        is written."""
        self._connect()

    def _connect(self) -> types.ModuleType:
        ray = _import_optional("ray", "ray")
        if ray.is_initialized():
            return ray
        address = self.config.ray_address
        options: dict[str, Any] = {}
        if _starts_a_cluster(ray, address):
            options["_node_ip_address"] = loopback_address()
        try:
            ray.init(address=address or None, **options)
        except Exception as error:  # ConnectionError, AuthenticationError, a timeout...
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            where = f"executor.ray_address = {address!r}" if address else "Ray"
            raise ExecutorError(
                f"{where}: cannot join the Ray cluster ({first}); {AUTH_HINT}"
            ) from error
        self._started = True
        return ray

    def map(
        self, fn: Callable[[Any], Any], items: Sequence[Any], *, names: Sequence[str]
    ) -> list[Outcome]:
        names = _check_names(items, names)
        ray = self._connect()
        try:
            return self._map(ray, fn, items, names)
        finally:
            if self._started:
                ray.shutdown()
                self._started = False

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


def _slurm(command: list[str]) -> tuple[bool, str]:
    """Run a Slurm command: (succeeded, its output, or its first error line)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, describe(error)
    if done.returncode == 0:
        return True, done.stdout
    lines = (done.stderr or done.stdout).strip().splitlines()
    return False, lines[0] if lines else f"{command[0]} exited with {done.returncode}"


# Phrases of sbatch's refusals -> the setting that chose the refused value.
SBATCH_SETTINGS = {
    "partition": "executor.slurm_partition",
    "time limit": "executor.slurm_time_min",
    "gres": "executor.slurm_gpus_per_task",
    "gpu": "executor.slurm_gpus_per_task",
    "processor": "executor.cpus_per_task",
    "cpu": "executor.cpus_per_task",
}


def submission_error(message: str) -> str:
    """sbatch's refusal in one line, naming the setting it is about where that is known."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    said = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
    said = said[said.find("sbatch") :] if "sbatch" in said else said
    setting = next((v for k, v in SBATCH_SETTINGS.items() if k in said.lower()), None)
    what = f"check {setting}" if setting else "check the slurm_* settings of [executor]"
    return f"Slurm refused the job array: {said} ({what})"


class SlurmExecutor:
    """A Slurm job array through submitit; failed jobs are resubmitted as a new array.

    A job counts as ended when submitit has its result or sacct (Slurm accounting) says it
    ended. Without accounting sacct says nothing: a job that squeue no longer lists either and
    that left no result for `slurm_state_timeout_s` seconds counts as a failed attempt.
    """

    poll_s = 2.0  # seconds between two looks at the jobs

    def __init__(self, config: ExecutorConfig, folder: Path) -> None:
        self.config = config
        self.folder = folder

    def check(self) -> None:
        """Ask Slurm (sinfo) that it answers and that the partition exists; warn when job
        states cannot be read (accounting off)."""
        _import_optional("submitit", "slurm")
        if self.config.slurm_cluster != "slurm":
            return  # submitit runs the jobs here
        if shutil.which("sbatch") is None:
            raise ExecutorError(
                "executor.slurm_cluster = 'slurm': Slurm's sbatch is not on PATH; run lowdiff "
                "on a Slurm login node, or set executor.slurm_cluster = 'local' to run the "
                "jobs as processes here"
            )
        answered, output = _slurm(["sinfo", "--noheader", "--format=%P"])
        if not answered:
            raise ExecutorError(
                f"executor.slurm_cluster = 'slurm': Slurm does not answer (sinfo: {output})"
            )
        partitions = [line.strip().rstrip("*") for line in output.splitlines() if line.strip()]
        wanted = self.config.slurm_partition
        if wanted and wanted not in partitions:
            raise ExecutorError(
                f"executor.slurm_partition: Slurm has no partition {wanted!r}; "
                f"valid: {', '.join(partitions) or 'none'}"
            )
        readable, said = _slurm(["sacct", "--noheader", "--allocations", "--jobs=1"])
        if not readable:
            log.warning(
                "sacct cannot read job states (%s): is Slurm accounting on? A job that ends "
                "without a result is noticed %d s after squeue stops listing it "
                "(executor.slurm_state_timeout_s)",
                said,
                self.config.slurm_state_timeout_s,
            )

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
            try:
                jobs = executor.map_array(
                    run_with_threads,
                    [fn] * count,
                    [items[i] for i in todo],
                    [self.config.cpus_per_task] * count,
                )
            except Exception as refusal:  # sbatch refused: the same for every attempt
                for i in todo:
                    attempts[i] += 1
                    errors[i] = submission_error(str(refusal))
                break
            log.info("submitted %d jobs (first id %s)", count, jobs[0].job_id if jobs else "-")
            self._wait(dict(zip(todo, jobs, strict=True)), errors)
            failed = []
            for i in todo:
                attempts[i] += 1
                if errors[i] is not None:
                    log.warning("%s: attempt %d failed: %s", names[i], attempts[i], errors[i])
                    if attempts[i] <= self.config.max_retries:
                        failed.append(i)
            todo = failed
        return _outcomes(names, errors, attempts)

    def _wait(self, jobs: dict[int, Any], errors: list[str | None]) -> None:
        """Wait until every job has ended or is lost; errors[i] gets each one's outcome."""
        seen = dict.fromkeys(jobs, time.monotonic())  # when each job was last known alive
        while jobs:
            queued = self._queued(jobs.values())
            for i, job in list(jobs.items()):
                if job.done():
                    errors[i] = _job_result(job)
                elif job.state.upper() != "UNKNOWN" or queued is None or job.job_id in queued:
                    seen[i] = time.monotonic()
                    continue
                elif time.monotonic() - seen[i] > self.config.slurm_state_timeout_s:
                    errors[i] = (
                        f"job {job.job_id} left no result and its state could not be read for "
                        f"{self.config.slurm_state_timeout_s} s (executor.slurm_state_timeout_s): "
                        "sacct knows no state (is Slurm accounting on? see docs/scale.md) and "
                        f"squeue no longer lists it; its log: {job.paths.stdout}"
                    )
                else:
                    continue
                del jobs[i]
            if jobs:
                time.sleep(self.poll_s)

    def _queued(self, jobs: Any) -> set[str] | None:
        """Ids of the array tasks squeue lists (None: not on Slurm, or squeue failed)."""
        if self.config.slurm_cluster != "slurm":
            return None
        arrays = sorted({str(job.job_id).split("_")[0] for job in jobs})
        command = ["squeue", "--noheader", "--array", "--format=%i", f"--jobs={','.join(arrays)}"]
        answered, output = _slurm(command)
        return {line.strip() for line in output.splitlines()} if answered else None


def _job_result(job: Any) -> str | None:
    """A finished job's outcome: None, the item's error, or why the job gave no result."""
    try:
        return job.result()
    except Exception as failure:  # the job died (killed, out of time or memory)
        return (
            f"job {job.job_id} ended without a result ({type(failure).__name__}); "
            f"its log: {job.paths.stdout}"
        )


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
    "ExecutorError",
    "LocalExecutor",
    "Outcome",
    "RayExecutor",
    "SlurmExecutor",
    "describe",
    "loopback_address",
    "make_executor",
    "run_with_threads",
    "submission_error",
]
