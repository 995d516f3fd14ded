"""Numeric precision of training and sampling: "fp32", or "bf16" mixed precision.

"bf16" runs the network's matrix products in bfloat16 under `torch.autocast` (the ops on
autocast's lower-precision list: `bmm`, `baddbmm`, `matmul`, ...; elementwise ops keep the
dtype of their inputs). Everything that accumulates over steps stays float32: the parameters
(master weights), their gradients, the AdamW moments, the EMA shadow, the loss, and the
sampler's state x_t. Training runs the forward pass and the loss under autocast and the
backward pass outside it, as the PyTorch AMP recipe prescribes; bfloat16 has float32's
exponent range, so no loss scaling is needed (Kalamkar et al. 2019, "A Study of BFLOAT16 for
Deep Learning Training").

bf16 is used only where the hardware computes it natively: a CPU with AVX512_BF16 or AMX-BF16
(oneDNN then runs the products on those units; elsewhere it would emulate them, slower than
fp32), or a CUDA GPU that supports bf16 (compute capability 8.0 and later). Anything else is
refused with one line naming what is missing, before any work (`check_precision`).

This module is torch-free at import (the settings and the config checks use it); torch is
imported by the functions that need it.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = [
    "PRECISIONS",
    "Precision",
    "autocast",
    "bf16_missing",
    "check_name",
    "check_precision",
    "low_dtype",
]

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of the native bf16 units


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags (Linux), or None where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def bf16_missing(device_type: str, flags: set[str] | None = None) -> str | None:
    """What the device lacks to run bf16 natively, in words; None if it can.

    `flags`: the CPU flags to judge (default: this machine's /proc/cpuinfo).
    """
    if device_type == "cpu":
        flags = cpu_flags() if flags is None else flags
        if flags is None:
            return "cannot read the CPU's flags (/proc/cpuinfo) to check for AVX512_BF16/AMX-BF16"
        if not flags.intersection(BF16_CPU_FLAGS):
            return "this CPU has neither AVX512_BF16 nor AMX-BF16 (no native bf16 arithmetic)"
        return None
    if device_type == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible"
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            name = torch.cuda.get_device_name()
            return f"the GPU {name} has no native bf16 (needs compute capability >= 8.0)"
        return None
    return f"bf16 autocast is not supported on the {device_type!r} device here"


def check_name(precision: str, setting: str) -> None:
    """Raise ValueError (one line) unless `precision` is a known precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"{setting}: {precision!r} is not one of {', '.join(PRECISIONS)}")


def check_precision(precision: str, device: torch.device | str, setting: str) -> None:
    """Raise ValueError (one line) unless `precision` is valid and runs on `device`.

    `setting` names the setting in the message, e.g. "train.precision".
    """
    check_name(precision, setting)
    if precision == "fp32":
        return
    device_type = device if isinstance(device, str) else device.type
    missing = bf16_missing(device_type.split(":")[0])
    if missing:
        raise ValueError(f"{setting} = {precision!r} needs native bf16, but {missing}; use 'fp32'")


def low_dtype(precision: str) -> torch.dtype | None:
    """The dtype the network's products run in under `precision`; None for fp32."""
    if precision == "fp32":
        return None
    import torch

    return torch.bfloat16


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """The network's products in `precision` inside the block (fp32: nothing changes)."""
    dtype = low_dtype(precision)
    if dtype is None:
        yield
        return
    import torch

    with torch.autocast(device.type, dtype=dtype):
        yield
