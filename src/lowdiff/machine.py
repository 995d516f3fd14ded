"""The machine a cell was computed on: CPU model and kernel libraries (recorded in cell.json).

Bits do not carry across CPU kinds (a different vector unit or BLAS reorders sums), so every
cell records where it ran, outside its metrics and its key: the CPU model (Linux
/proc/cpuinfo's "model name", else `platform.processor()`), torch's CPU capability (the vector
instruction set its kernels dispatch to, e.g. AVX512), its BLAS and whether MKL and oneDNN are
in use, and the torch version.
"""

from __future__ import annotations

import platform
import re
from functools import lru_cache
from pathlib import Path

import torch

__all__ = ["machine"]


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine() or "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or platform.machine()


def _blas() -> str:
    found = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return found.group(1) if found else "unknown"


@lru_cache(maxsize=1)
def machine() -> dict[str, str | bool]:
    """{"cpu", "cpu_capability", "blas", "mkl", "mkldnn", "torch"} of this process's machine."""
    return {
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": _blas(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "torch": torch.__version__,
    }
