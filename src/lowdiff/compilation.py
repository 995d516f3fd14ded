"""`train.compile` / `eval.compile`: the network through `torch.compile` (TorchInductor).

Inductor fuses the network's element-wise work (the embedding's sin/cos, ReLU and its gradient,
the residual adds, bias sums, bf16 casts) into generated C++ (CPU) or Triton (CUDA) kernels,
while the matrix products stay library calls. In training the noising of the batch and the
loss are compiled with the network, as one graph (`engine.Trainer.losses`), and the per-model
gradient clipping and the AdamW step run as one compiled pass over the optimiser's state
(`engine.CompiledUpdate`). It pays most in bf16, where the products are fast and the
element-wise passes dominate (docs/speed.md). The fused kernels round differently
from eager PyTorch, so a compiled model is a new draw, not the same bits: the setting is part
of the cell key when set, and off by default.

What it needs: on the CPU a C++ compiler (`$CXX`, else `g++`, as inductor looks for it), on a
CUDA GPU the Triton package. Anything else is refused with one line before any work
(`check_compile`).

Where its files go: inductor writes generated sources, shared objects and its caches to disk.
`scratch(folder)` points every place it writes to (its cache folder, Triton's, the temporary
folder of Python and of the compiler) at `folder`, which the runner puts inside the results
directory (`<results>/.checkpoints/compile`, removed with the checkpoints when the run ends), and
puts everything back on leaving; the compiled network is only called inside it.

Torch-free at import (the config checks use it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

__all__ = ["check_compile", "compile_missing", "compiled", "import_dynamo", "scratch"]

# The variables through which inductor, Triton and the C++ compiler find where to write.
SCRATCH_VARIABLES = {
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TRITON_CACHE_DIR": "triton",
    "TMPDIR": "tmp",
}


def compile_missing(device_type: str) -> str | None:
    """What the device lacks for torch.compile, in words; None if it has it."""
    if device_type == "cpu":
        compiler = os.environ.get("CXX", "g++")
        if shutil.which(compiler) is None:
            return f"inductor's C++ compiler {compiler!r} ($CXX, default g++) is not on PATH"
        return None
    if device_type == "cuda":
        import torch.utils._triton

        if not torch.utils._triton.has_triton():
            return "the Triton package that inductor's GPU kernels need is not installed"
        return None
    return f"torch.compile is not supported on the {device_type!r} device here"


def check_compile(enabled: bool, device: torch.device | str, setting: str) -> None:
    """Raise ValueError (one line) if `enabled` and the device cannot compile the network.

    `setting` names the setting in the message, e.g. "train.compile".
    """
    if not enabled:
        return
    device_type = device if isinstance(device, str) else device.type
    missing = compile_missing(device_type.split(":")[0])
    if missing:
        raise ValueError(f"{setting} = true needs torch.compile, but {missing}; set it to false")


# Compiled variants dynamo keeps per function before it falls back to eager for good. Each
# grad mode (training, sampling), autocast state, new batch size and model instance is one; a
# process that trains and samples several packs and runs needs more than torch's default 8.
RECOMPILE_LIMIT = 64


Compiled = TypeVar("Compiled")


def compiled(target: Compiled, *, fullgraph: bool = False) -> Compiled:
    """`target` (a module, or a function: `fullgraph` then makes any graph break an error)
    through torch.compile (inductor; compiled at its first call, which must come inside
    `scratch`). A compiled module shares the module's parameters."""
    import_dynamo()
    import torch
    import torch._dynamo.config

    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, RECOMPILE_LIMIT)
    return torch.compile(target, fullgraph=fullgraph)  # type: ignore[return-value]


@contextlib.contextmanager
def scratch(folder: Path | None) -> Iterator[None]:
    """Inside the block every file the compiler writes goes below `folder` (nothing to do for
    None); the environment and Python's temporary folder are restored on leaving."""
    if folder is None:
        yield
        return
    saved_environment = {name: os.environ.get(name) for name in SCRATCH_VARIABLES}
    saved_tempdir = tempfile.tempdir
    for name, sub in SCRATCH_VARIABLES.items():
        path = folder / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(path)
    tempfile.tempdir = os.environ["TMPDIR"]
    try:
        _no_global_headers()
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _no_global_headers() -> None:
    """Inductor precompiles its C++ headers into a per-user folder outside its cache folder;
    compile without them (a few seconds more per compile) so nothing is written there."""
    import torch._inductor.config

    torch._inductor.config.cpp_cache_precompile_headers = False


def import_dynamo() -> None:
    """Import torch._dynamo without the folder its import makes.

    torch imports it at the first meta-device operation (the memory check builds the model
    there) or torch.compile, and the import makes inductor's cache folder (by default
    <tmp>/torchinductor_<user>), which would be left behind outside the results directory. With
    the cache folder pointed at the temporary folder itself, which exists, nothing is made."""
    if "torch._dynamo" in sys.modules:
        return
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.gettempdir()
    try:
        import torch._dynamo  # noqa: F401
    finally:
        if saved is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved
