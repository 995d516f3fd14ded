"""Process settings: threads shared among busy processes, the registry of lowdiff processes, the
OpenMP wait policy set before torch loads."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lowdiff import runtime


@pytest.fixture(autouse=True)
def no_preset_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.fixture
def quiet_machine(monkeypatch):
    """8 CPUs, no load: only the registry decides."""
    monkeypatch.setattr(runtime, "available_cpus", lambda: 8)
    monkeypatch.setattr(runtime, "machine_load", lambda: 0.0)


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_requested_threads_are_kept_and_negative_refused(tmp_path):
    assert runtime.choose_threads(3, directory=tmp_path) == 3
    with pytest.raises(ValueError, match="threads must be >= 0"):
        runtime.choose_threads(-1, directory=tmp_path)


def test_alone_a_process_takes_every_cpu_it_may_use(tmp_path, quiet_machine):
    runtime.register_process(tmp_path)
    assert runtime.choose_threads(directory=tmp_path) == 8


def test_a_users_omp_num_threads_is_kept(tmp_path, quiet_machine, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.choose_threads(directory=tmp_path) == 3
    assert runtime.choose_threads(5, directory=tmp_path) == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: ignored
    assert runtime.choose_threads(directory=tmp_path) == 8


def test_cpus_are_divided_among_live_lowdiff_processes(tmp_path, quiet_machine, sleeper):
    (tmp_path / str(sleeper.pid)).write_text(runtime._start_time(sleeper.pid))
    assert runtime.other_processes(tmp_path) == 1
    assert runtime.choose_threads(directory=tmp_path) == 4


def test_dead_and_reused_process_ids_do_not_count(tmp_path, quiet_machine, sleeper):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / str(dead.pid)).write_text("123")
    (tmp_path / str(sleeper.pid)).write_text("1")  # a different process had this pid before
    (tmp_path / str(os.getpid())).write_text(runtime._start_time(os.getpid()))  # this one
    assert runtime.other_processes(tmp_path) == 0
    assert not (tmp_path / str(dead.pid)).exists()  # stale entries are cleaned up
    assert runtime.choose_threads(directory=tmp_path) == 8


def test_a_stopped_lowdiff_process_leaves_its_cpus_until_resumed(tmp_path, quiet_machine, sleeper):
    (tmp_path / str(sleeper.pid)).write_text(runtime._start_time(sleeper.pid))
    os.kill(sleeper.pid, signal.SIGSTOP)
    try:
        for _ in range(100):  # the state changes asynchronously
            if runtime._state(sleeper.pid) in ("T", "t"):
                break
            time.sleep(0.01)
        assert runtime.other_processes(tmp_path) == 0
        assert (tmp_path / str(sleeper.pid)).exists()  # kept: it may be resumed
        assert runtime.choose_threads(directory=tmp_path) == 8
    finally:
        os.kill(sleeper.pid, signal.SIGCONT)
    for _ in range(100):
        if runtime._state(sleeper.pid) not in ("T", "t"):
            break
        time.sleep(0.01)
    assert runtime.other_processes(tmp_path) == 1


def test_the_machines_load_takes_cpus_too(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 8)
    monkeypatch.setattr(runtime, "machine_load", lambda: 3.4)
    assert runtime.choose_threads(directory=tmp_path) == 2  # 8 CPUs among 1 + 3 busy
    monkeypatch.setattr(runtime, "machine_load", lambda: 20.0)
    assert runtime.choose_threads(directory=tmp_path) == 1  # never fewer than one


@pytest.mark.parametrize(
    "average, now, expected",
    [(2.0, 0.0, 0.0), (0.2, 3.0, 0.2), (1.5, 1.0, 1.0), (1.0, None, 1.0), (0.0, -1.0, 0.0)],
)
def test_load_is_the_smaller_of_the_average_and_now(monkeypatch, average, now, expected):
    """A program that just stopped still weighs on the 1-minute average; the run queue now
    does not. A spike in the run queue is not in the average."""
    monkeypatch.setattr(os, "getloadavg", lambda: (average, 0.0, 0.0))
    monkeypatch.setattr(runtime, "_running_now", lambda: now)
    assert runtime.machine_load() == expected


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux only")
def test_run_queue_sample_excludes_this_process():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert runtime._running_now() >= 1  # the busy loop, not this (sleeping) sampler alone
    finally:
        busy.kill()
        busy.wait()


def test_registered_entry_is_removed_at_exit(tmp_path):
    code = (
        "import sys, pathlib; from lowdiff import runtime; d = pathlib.Path(sys.argv[1]); "
        "runtime.register_process(d); print(len(list(d.iterdir())))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "1"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def torch_threads(monkeypatch):
    """torch's thread count, OMP_NUM_THREADS and MKL_NUM_THREADS as they were, afterwards."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")  # recorded, so the teardown restores the original state
        monkeypatch.delenv(name)
    monkeypatch.setattr(runtime, "_following", None)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_chosen_threads_follow_lowdiff_processes_that_start_and_end(
    tmp_path, quiet_machine, torch_threads
):
    assert runtime.configure_cpu(directory=tmp_path) == 8 and torch.get_num_threads() == 8
    start = time.monotonic()
    assert runtime.follow_sharing(now=start + 2) is None  # nobody else: nothing changes
    second = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / str(second.pid)).write_text(runtime._start_time(second.pid))
        assert runtime.follow_sharing(now=start + 2.5) is None  # at most one look per second
        assert runtime.follow_sharing(now=start + 4) == 4 and torch.get_num_threads() == 4
        assert runtime.follow_sharing(now=start + 6) is None  # no change since the last look
    finally:
        second.kill()
        second.wait()
    assert runtime.follow_sharing(now=start + 8) == 8 and torch.get_num_threads() == 8


def test_threads_at_start_beside_a_busy_machine_are_not_given_back_later(
    tmp_path, monkeypatch, torch_threads, sleeper
):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 8)
    monkeypatch.setattr(runtime, "machine_load", lambda: 3.0)  # three busy programs at start
    assert runtime.configure_cpu(directory=tmp_path) == 2
    monkeypatch.setattr(runtime, "machine_load", lambda: 5.0)  # now counting our own threads
    (tmp_path / str(sleeper.pid)).write_text(runtime._start_time(sleeper.pid))
    start = time.monotonic()
    assert runtime.follow_sharing(now=start + 2) is None  # 8 // (1 + max(1, 3)): still 2
    (tmp_path / str(sleeper.pid)).unlink()
    assert runtime.follow_sharing(now=start + 4) is None  # the start's load still counts


def test_threads_the_user_set_do_not_follow(tmp_path, quiet_machine, torch_threads, sleeper):
    assert runtime.configure_cpu(3, directory=tmp_path) == 3
    (tmp_path / str(sleeper.pid)).write_text(runtime._start_time(sleeper.pid))
    assert runtime.follow_sharing(now=time.monotonic() + 2) is None
    assert torch.get_num_threads() == 3


def test_a_benchmark_driver_is_not_counted_by_the_lowdiff_processes_it_starts(
    tmp_path, quiet_machine, torch_threads
):
    # a driver that registered would make each process it starts share the CPUs with it
    assert runtime.configure_cpu(directory=tmp_path, register=False) == 8
    assert list(tmp_path.iterdir()) == []
    assert runtime.configure_cpu(directory=tmp_path) == 8
    assert [entry.name for entry in tmp_path.iterdir()] == [str(os.getpid())]


def test_limit_threads_sets_torch_and_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    try:
        runtime.limit_threads(2)
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        runtime.limit_threads(0)


def run_fresh(code: str, **env: str) -> str:
    waits = {*runtime.SHARING_ENVIRONMENT, *runtime.ALONE_ENVIRONMENT}
    environment = {k: v for k, v in os.environ.items() if k not in waits}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=environment | env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_wait_policy_is_set_before_torch_and_a_users_value_kept():
    code = (
        "import os; from lowdiff import runtime; ok = runtime.share_cpu_environment({alone}); "
        "print(ok, *(os.environ.get(k, '-') for k in "
        "('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME')))"
    )
    assert run_fresh(code.format(alone=False)) == "True PASSIVE - 0"
    assert run_fresh(code.format(alone=False), OMP_WAIT_POLICY="ACTIVE") == "True ACTIVE - 0"
    # alone: spin-then-sleep, unless the user chose a policy (a spin count would override it)
    assert run_fresh(code.format(alone=True)) == "True - 100000 1"
    assert run_fresh(code.format(alone=True), OMP_WAIT_POLICY="ACTIVE") == "True ACTIVE - 1"
    assert run_fresh(code.format(alone=True), GOMP_SPINCOUNT="5") == "True - 5 1"


@pytest.mark.parametrize(
    ("others", "load", "spins"), [(0, 0.0, True), (1, 0.0, False), (0, 1.2, False)]
)
def test_a_process_spins_only_when_alone(others, load, spins, monkeypatch):
    for name in (*runtime.SHARING_ENVIRONMENT, *runtime.ALONE_ENVIRONMENT):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    monkeypatch.setattr(runtime, "other_processes", lambda directory=None: others)
    monkeypatch.setattr(runtime, "machine_load", lambda: load)
    runtime.share_cpu_environment()
    assert ("GOMP_SPINCOUNT" in os.environ) is spins
    assert (os.environ.get("OMP_WAIT_POLICY") == "PASSIVE") is not spins


def test_wait_policy_after_torch_is_reported_as_too_late(monkeypatch):
    for name in (*runtime.SHARING_ENVIRONMENT, *runtime.ALONE_ENVIRONMENT):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    assert "torch" in sys.modules
    assert runtime.share_cpu_environment(alone=False) is False


def test_importing_lowdiff_runtime_does_not_import_torch():
    code = "import sys; import lowdiff.runtime, lowdiff.executors; print('torch' in sys.modules)"
    assert run_fresh(code) == "False"
