"""Process-wide settings for CPU training: threads, the OpenMP wait policy and the C allocator.

Threads. torch's CPU kernels run on an OpenMP thread pool whose threads, by default, spin for a
while at every barrier instead of sleeping. On a machine whose cores are shared (two `lowdiff`
processes, or one beside any other busy program) a spinning thread burns the time slice that
the thread it waits for needs: one training ran 28x slower beside four busy processes on two
cores. Two settings avoid that (benchmarks/concurrency.py measures both):

- `share_cpu_environment()` sets how OpenMP threads wait. Beside other busy processes they
  sleep at once (OMP_WAIT_POLICY=PASSIVE; KMP_BLOCKTIME=0 for Intel's OpenMP). A process alone
  on the machine spins a while before sleeping instead (GOMP_SPINCOUNT for GNU OpenMP, which
  torch's CPU wheels load; KMP_BLOCKTIME=1 ms for Intel's): a step is dozens of short parallel
  kernels between serial stretches, and waking a sleeping thread for each made a lone M = 1 run
  1.6x slower than spinning, while torch's default spin (300,000 spins, milliseconds) beside a
  second process starves it. The spin need not be short to spare a second lowdiff process:
  `follow_sharing` gives this process one thread when one starts, and one thread has no worker
  left to spin. OpenMP reads these when it is loaded, i.e. on `import torch`, so
  the call must come before the first import of torch in the process (the top of the command
  line entry point).
- `choose_threads()` picks the thread count (unless given, or set by OMP_NUM_THREADS) from the
  CPUs this process may run on (`os.sched_getaffinity`) divided among the busy processes: other
  `lowdiff` processes (a small registry of live process ids in the temporary directory; a
  stopped one does not count) and the machine's current load.
- `follow_sharing()`, called between training chunks, divides them again when another lowdiff
  process starts or ends, so a run started alone gives a core to a run started beside it.

The allocator. PyTorch's CPU tensors come from the C library's malloc. With glibc's defaults,
freed blocks of a few MB are handed back to the operating system and faulted in again on the
next step, which made elementwise ops ~10x slower than on warm memory and the sampling loop
~1.6x slower overall (benchmarks/train_speed.py). Raising the mmap and trim thresholds keeps
the memory in the process.

All of this changes only the process that calls these functions (the CLI, executor workers and
the benchmarks); importing lowdiff changes nothing, and this module imports torch only inside
the functions that set its threads.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import dataclasses
import logging
import os
import stat
import statistics
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 1024 * 1024 * 1024

# Read by OpenMP when torch loads it: sleep at a barrier instead of spinning (GNU and LLVM
# OpenMP read OMP_WAIT_POLICY, Intel's reads KMP_BLOCKTIME). A value the user set is kept.
SHARING_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
# Alone: spin-then-sleep. GNU OpenMP spins GOMP_SPINCOUNT times (a `pause` each, ~40-140
# cycles: some 1-5 ms) before it sleeps, long enough to bridge the serial stretches of a step
# (the optimiser's bookkeeping, Python between kernels): with 10,000 spins the workers slept
# 3-7 times a step and a step took 1.05-1.15x as long (benchmarks/wait_policy.py, docs/speed.md).
ALONE_ENVIRONMENT = {"GOMP_SPINCOUNT": "100000", "KMP_BLOCKTIME": "1"}

LOAD_SAMPLES = 5  # instantaneous run-queue samples, LOAD_INTERVAL_S apart
LOAD_INTERVAL_S = 0.02


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl): nothing to tune
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(ok)


def share_cpu_environment(alone: bool | None = None) -> bool:
    """Set the OpenMP wait policy; call before the process imports torch.

    `alone`: whether this process has the machine to itself (None: no other registered lowdiff
    process and a load below half a CPU, see `machine_load`); alone it spins briefly before
    sleeping, else it sleeps at once. Values already in the environment are kept (a wait policy
    the user set is not overridden by a spin count). Returns False (and logs why) when torch is
    already imported, as its thread pool then keeps the policy it started with.
    """
    if alone is None:
        alone = other_processes() == 0 and machine_load() < 0.5
    chosen = dict(ALONE_ENVIRONMENT if alone else SHARING_ENVIRONMENT)
    if "OMP_WAIT_POLICY" in os.environ:
        chosen.pop("GOMP_SPINCOUNT", None)  # GNU OpenMP would let it override the user's
    for name, value in chosen.items():
        os.environ.setdefault(name, value)
    log.info("OpenMP wait: %s", "spin, then sleep (alone)" if alone else "sleep (shared)")
    if "torch" in sys.modules:
        log.info("torch was imported before the OpenMP wait policy was set; it has no effect")
        return False
    return True


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a Slurm or container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


# --- how busy the machine is ---------------------------------------------------------------


def _running_now() -> float | None:
    """Runnable threads on the machine right now, this one excluded (Linux: /proc/loadavg)."""
    counts = []
    for _ in range(LOAD_SAMPLES):
        try:
            field = Path("/proc/loadavg").read_text().split()[3]  # "running/total"
        except (OSError, IndexError):
            return None
        counts.append(int(field.split("/")[0]) - 1)
        time.sleep(LOAD_INTERVAL_S)
    return float(statistics.median(counts))


def machine_load() -> float:
    """Busy CPUs used by others: the smaller of the 1-minute load average (which lags behind a
    program that just stopped) and the run queue sampled now (which is noisy); never negative."""
    try:
        average = os.getloadavg()[0]
    except (AttributeError, OSError):
        average = 0.0
    now = _running_now()
    return max(0.0, average if now is None else min(average, now))


def registry_dir() -> Path:
    """Where running lowdiff processes leave their process id (one small file each)."""
    return Path(tempfile.gettempdir()) / f"lowdiff-{os.getuid()}" / "processes"


def _private(directory: Path) -> bool:
    """True if `directory` and its parent are real directories (no link) of this user that
    only this user may enter (mode 0700; tightened if wider), made so here where missing.

    The registry lives in the shared temporary folder, where anyone may plant a link to
    redirect what is written and deleted in it: nothing there is used before this check."""
    for folder in (directory.parent, directory):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            status = os.fstat(descriptor)
            if status.st_uid != os.getuid():
                log.info("not using %s: it belongs to another user", folder)
                return False
            if stat.S_IMODE(status.st_mode) & 0o077:
                os.fchmod(descriptor, 0o700)
        finally:
            os.close(descriptor)
    return True


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (the state) on; [] where unknown (not Linux, gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces


def _start_time(pid: int) -> str:
    """The kernel's start time of a process (tells a reused pid apart); '' where unknown."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else ""  # field 22


def _state(pid: int) -> str:
    """The kernel's one-letter state: R running, S sleeping, T stopped, Z zombie; '' unknown."""
    fields = _stat_fields(pid)
    return fields[0] if fields else ""


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return not start or _start_time(pid) in ("", start)


def register_process(directory: Path | None = None) -> None:
    """Record this process as a running lowdiff process until it exits."""
    directory = directory or registry_dir()
    entry = directory / str(os.getpid())
    try:
        if not _private(directory):
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        with os.fdopen(os.open(entry, flags, 0o600), "w") as file:
            file.write(_start_time(os.getpid()))
    except OSError as error:
        log.info("could not register in %s: %s", directory, error)
        return
    atexit.register(entry.unlink, missing_ok=True)


def other_processes(directory: Path | None = None) -> int:
    """Live lowdiff processes other than this one, stopped ones (Ctrl-Z) not counted: they use
    no CPU until resumed. Entries of dead processes are removed."""
    directory = directory or registry_dir()
    count = 0
    try:
        if not _private(directory):
            return 0
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with os.fdopen(os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)) as file:
                start = file.read(64).strip()
        except OSError:
            continue
        pid = int(entry.name)
        state = _state(pid) if _alive(pid, start) else "X"
        if state in ("Z", "X"):
            entry.unlink(missing_ok=True)
        elif state not in ("T", "t"):
            count += 1
    return count


# --- threads --------------------------------------------------------------------------------


def choose_threads(requested: int = 0, *, directory: Path | None = None) -> int:
    """Threads for this process: `requested` if > 0, else OMP_NUM_THREADS if the user set it,
    else its CPUs shared among busy processes.

    The CPUs this process may use are divided by 1 + the number of other busy processes, taken
    as the larger of the other registered lowdiff processes and the machine's load.
    """
    return _set_by_user(requested) or _share(other_processes(directory), round(machine_load()))


def _set_by_user(requested: int) -> int:
    """The thread count the user set: `requested` if > 0, else OMP_NUM_THREADS; 0 if neither."""
    if requested < 0:
        raise ValueError(f"threads must be >= 0 (0: choose), got {requested}")
    preset = os.environ.get("OMP_NUM_THREADS", "")
    return requested or (int(preset) if preset.isdigit() else 0)


def _share(lowdiff_processes: int, load: int) -> int:
    """This process's CPUs divided by 1 + the other busy processes."""
    return max(1, available_cpus() // (1 + max(lowdiff_processes, load)))


def limit_threads(threads: int) -> None:
    """Run torch's CPU kernels on `threads` threads, whether or not torch is imported yet."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by OpenMP if torch is imported later
    os.environ["MKL_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


@dataclasses.dataclass
class _Following:
    """Threads chosen by `configure_cpu` that follow the other lowdiff processes."""

    threads: int
    others: int  # other registered lowdiff processes at the last look
    load: int  # the machine's load at start
    directory: Path | None
    checked: float = dataclasses.field(default_factory=time.monotonic)


_following: _Following | None = None  # set by configure_cpu when it chose the threads
FOLLOW_EVERY_S = 1.0  # at most one look at the registry per second


def follow_sharing(*, now: float | None = None) -> int | None:
    """Divide this process's CPUs again when another lowdiff process started or ended.

    Threads are chosen at start, but a run started alone would keep its threads (and its brief
    spin) when a second run starts beside it, and the two then fight for the cores
    (benchmarks/concurrency.py). Called between training chunks: if `configure_cpu` chose this
    process's threads and the number of other registered lowdiff processes changed since the
    last look (at most one look per `FOLLOW_EVERY_S`), the CPUs are divided as at start, with
    the machine's load as measured at start (the load average now would count this process's
    own threads). Returns the new thread count when it changed, else None.
    """
    state = _following
    now = time.monotonic() if now is None else now
    if state is None or now - state.checked < FOLLOW_EVERY_S:
        return None
    state.checked = now
    others = other_processes(state.directory)
    if others == state.others:
        return None
    state.others = others
    threads = _share(others, state.load)
    if threads == state.threads:
        return None
    log.info(
        "torch CPU threads: %d -> %d (%d other lowdiff processes)", state.threads, threads, others
    )
    state.threads = threads
    limit_threads(threads)
    return threads


def configure_cpu(threads: int = 0, *, directory: Path | None = None, register: bool = True) -> int:
    """Register this process, set torch's CPU threads (0: choose them, see `choose_threads`,
    and let them follow the sharing, see `follow_sharing`), tune the allocator; returns the
    thread count.

    `register=False` for a process that starts lowdiff processes and waits for them (a
    benchmark's driver): registered, it would count as a busy process to each of them, and
    they would share the CPUs with it and sleep at once instead of spinning.
    """
    global _following
    if register:
        register_process(directory)
    _following = None
    threads = _set_by_user(threads)  # a count the user set stays
    if not threads:
        others, load = other_processes(directory), round(machine_load())
        threads = _share(others, load)
        _following = _Following(threads, others, load, directory)
    limit_threads(threads)
    log.info("torch CPU threads: %d", threads)
    if not keep_freed_memory():
        log.info("could not tune the C allocator; CPU training may be slower")
    return threads
