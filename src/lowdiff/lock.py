"""One writer per results directory: a lock file held for the whole of a run.

`RunLock(root)` creates `<root>/.lowdiff.lock` with O_CREAT | O_EXCL, records who holds it (pid,
host, start time, command) as JSON and, where the platform has it, also holds an `fcntl.flock`
on it. It is released on every way out of the `with` block (normal exit, exception,
KeyboardInterrupt, and SIGTERM, which is turned into a normal exit while the lock is held).

A second run on the same directory gets `LockedError` naming the holder. A lock left by a
process that died (kill -9, power loss) is detected by its pid no longer being alive on the
same host, and taken over with a log message; a lock from another host is never taken over.
Readers (`lowdiff report`) do not take the lock.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from lowdiff.results import ResultsError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".lowdiff.lock"


class LockedError(ResultsError):
    """Another live process holds the lock of a results directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _describe(holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("start", 0)))
    command = holder.get("command", "?")
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {started} ({command})"


def read_holder(path: Path) -> dict[str, Any] | None:
    """The holder recorded in a lock file, or None if it is unreadable (being written)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


class RunLock:
    """Context manager holding `<root>/.lowdiff.lock` for the duration of a run."""

    def __init__(self, root: Path, command: str | None = None) -> None:
        self.path = Path(root) / LOCK_NAME
        self.command = command if command is not None else " ".join(sys.argv)
        self._fd: int | None = None
        self._previous_handler: Any = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock removed by us or by a racing process: try again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            self._fd = fd
            if fcntl is not None:  # before the holder is written: a reader sees it is taken
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "start": time.time(),
                "command": self.command,
            }
            os.write(fd, json.dumps(holder).encode())
            os.fsync(fd)
            return
        raise LockedError(f"{self.path}: could not take the lock (it keeps being re-created)")

    def _take_over_if_stale(self) -> None:
        holder = read_holder(self.path)
        if holder is None:
            if self._flocked_by_other():
                raise LockedError(f"{self.parent()}: another lowdiff run is starting in it")
            time.sleep(0.2)  # being written right now; the next read sees it
            holder = read_holder(self.path)
        if holder is not None:
            same_host = holder.get("host") == socket.gethostname()
            pid = holder.get("pid")
            if not (same_host and isinstance(pid, int) and not _alive(pid)):
                raise LockedError(
                    f"{self.parent()}: results directory in use by {_describe(holder)}; wait "
                    f"for it to finish or choose another --out (remove {self.path} only if "
                    "that process is gone)"
                )
            log.warning("taking over the stale lock of %s (%s)", self.parent(), _describe(holder))
        self.path.unlink(missing_ok=True)

    def _flocked_by_other(self) -> bool:
        if fcntl is None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def parent(self) -> Path:
        return self.path.parent

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            holder = read_holder(self.path)
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)  # only our own lock, never a successor's
        finally:
            os.close(self._fd)
            self._fd = None

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through __exit__, which releases the lock

    def __enter__(self) -> RunLock:
        self.acquire()
        try:
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread: SIGTERM handling stays as it is
            self._previous_handler = None
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None
        self.release()
