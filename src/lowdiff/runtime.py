"""Process-wide settings for fast CPU training: threads and the C allocator.

PyTorch's CPU tensors come from the C library's malloc. With glibc's defaults, freed blocks of
a few MB are handed back to the operating system and faulted in again on the next step, which
made elementwise ops ~10x slower than on warm memory and the sampling loop ~1.6x slower
overall (benchmarks/train_speed.py). Raising the mmap and trim thresholds keeps the memory in
the process. This changes only the process that calls `configure_cpu` (the CLI and the
benchmarks); importing lowdiff changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

import torch

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 1024 * 1024 * 1024


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


def configure_cpu(threads: int = 0) -> None:
    """Set torch's CPU threads (0: leave torch's default) and tune the allocator."""
    if threads:
        torch.set_num_threads(threads)
    if not keep_freed_memory():
        log.info("could not tune the C allocator; CPU training may be slower")
