"""Toy work for the executor tests, importable by worker processes without importing torch.

Each item writes its answer to a file (executors return outcomes, not values); an item can
fail always, fail once, or kill its worker process once, as asked.
"""

import dataclasses
import os
import signal
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Toy:
    directory: str
    name: str
    value: int
    behaviour: str = "ok"  # ok | fail | flaky | crash


def toy_task(toy: Toy) -> None:
    """Square the value into <name>.out and record the thread setting it ran with."""
    directory = Path(toy.directory)
    marker = directory / f"{toy.name}.attempted"
    first_attempt = not marker.exists()
    marker.touch()
    if toy.behaviour == "fail":
        raise ValueError(f"bad item {toy.name}")
    if toy.behaviour == "flaky" and first_attempt:
        raise RuntimeError(f"transient failure of {toy.name}")
    if toy.behaviour == "crash" and first_attempt:
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-task, no cleanup
    (directory / f"{toy.name}.out").write_text(str(toy.value**2))
    (directory / f"{toy.name}.threads").write_text(os.environ.get("OMP_NUM_THREADS", ""))
