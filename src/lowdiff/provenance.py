"""What produced a results folder: lowdiff's version and git commit, the Python, PyTorch and
NumPy versions, the device and the CPU model, recorded in experiment.json (`provenance`).

The git commit is that of the repository lowdiff's own source lies in (an editable install of
a clone); an installed wheel has none and records None. Nothing here can fail a run: a value
that cannot be found is None.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

SOURCE = Path(__file__).resolve().parent


def lowdiff_version() -> str:
    """The running lowdiff's version (the source's own, even where another copy is installed)."""
    from lowdiff import __version__

    return __version__


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(SOURCE), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> dict[str, Any] | None:
    """The commit of the repository holding lowdiff's source, and whether it had edits."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no", "--", str(SOURCE))
    return {"commit": commit, "modified": bool(status)}


def cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo on Linux, else what the platform says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def record(device: str) -> dict[str, Any]:
    """The provenance record of one invocation on `device` (e.g. 'cpu', 'cuda:0')."""
    import torch

    gpu = None
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device))
    return {
        "lowdiff": lowdiff_version(),
        "git": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": device,
        "gpu": gpu,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]),
    }
