"""Run directories on disk: atomic writes, one record per finished cell, safe loading.

Layout (compatible with the template the series come from):

    <root>/experiment.json                  resolved experiment config
    <root>/oracle.json                      metric floors from fresh draws of the true data
    <root>/<run>/config.json                resolved run config
    <root>/<run>/final_info.json            {dataset: {"means": {...}, "stds", "ci95", "per_seed"}}
    <root>/<run>/<dataset>/seed_<s>/        one cell:
        losses.npy      (steps,) training MSE          samples.npy   (N, 2) samples
        weights.npz     mixing-weight trace / last-step weights / field (adaptive models only)
        model_ema.npz   EMA weights of this model (arrays named like the module's parameters)
        cell.json       metrics + config hash + file sizes, written LAST

A cell counts as finished only when its cell.json parses, carries the expected config hash and
format, and every file it lists exists with the recorded size. Every file is written to a
temporary name in the same directory, flushed to disk and renamed, so a killed process never
leaves a file that looks complete. Nothing here can execute code on load: JSON and NumPy arrays
(`allow_pickle=False`) only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "lowdiff-cell/1"
# Files a cell may lack and still count as finished: the model weights, which a compact
# results folder (e.g. one committed to a repository) leaves out. Their record stays in
# cell.json, so a reader knows what the cell held when it was written.
OPTIONAL_FILES = frozenset({"model_ema.npz"})
_UMASK = os.umask(0)
os.umask(_UMASK)


class ResultsError(ValueError):
    """A results file is missing, corrupt or not one of ours."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for sharing
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_with(path: Path, writer: Callable[[io.BytesIO], None]) -> int:
    buffer = io.BytesIO()
    writer(buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return buffer.tell()


def write_json(path: Path, value: Any) -> int:
    data = (json.dumps(value, indent=2, sort_keys=False, allow_nan=False) + "\n").encode()
    atomic_write_bytes(path, data)
    return len(data)


def write_npy(path: Path, array: np.ndarray) -> int:
    return atomic_write_with(
        path, lambda buffer: np.save(buffer, np.asarray(array), allow_pickle=False)
    )


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> int:
    return atomic_write_with(path, lambda buffer: np.savez_compressed(buffer, **arrays))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise ResultsError(f"{path}: missing") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(
            f"{path}: not valid JSON ({error}); the file is corrupt or not a lowdiff file"
        ) from error


def read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError as error:
        raise ResultsError(f"{path}: missing") from error
    except (ValueError, OSError, EOFError) as error:
        raise ResultsError(f"{path}: not a readable NumPy array ({error})") from error


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError as error:
        raise ResultsError(f"{path}: missing") from error
    except (ValueError, OSError, EOFError) as error:
        raise ResultsError(f"{path}: not a readable NumPy archive ({error})") from error


def config_hash(value: Any) -> str:
    """Stable hash of a JSON-able config (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_dir(root: Path, run: str, dataset: str, seed: int) -> Path:
    return root / run / dataset / f"seed_{seed}"


def write_cell(directory: Path, arrays: dict[str, Any], record: dict[str, Any]) -> None:
    """Write a cell's arrays, then its cell.json (the commit point) listing them with sizes."""
    sizes = {}
    for name, value in arrays.items():
        if value is None:
            continue
        path = directory / name
        sizes[name] = write_npz(path, value) if name.endswith(".npz") else write_npy(path, value)
    write_json(directory / "cell.json", {"format": FORMAT, **record, "files": sizes})


def copy_cell(source: Path, target: Path, changes: dict[str, Any]) -> None:
    """Copy a finished cell to another run's directory (cell.json last), updating its record."""
    record = load_cell_record(source)
    for name in record["files"]:
        if name in OPTIONAL_FILES and not (source / name).exists():
            continue
        atomic_write_bytes(target / name, (source / name).read_bytes())
    write_json(target / "cell.json", {**record, **changes})


def read_cell(directory: Path, expected_hash: str | None = None) -> dict[str, Any] | None:
    """The cell's record if it is finished (and matches `expected_hash`), else None."""
    try:
        record = read_json(directory / "cell.json")
    except ResultsError:
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    if expected_hash is not None and record.get("config_hash") != expected_hash:
        return None
    files = record.get("files")
    if not isinstance(files, dict):
        return None
    for name, size in files.items():
        path = directory / name
        if name in OPTIONAL_FILES and not path.exists():
            continue
        if not path.is_file() or path.stat().st_size != size:
            return None
    return record


def load_cell_record(directory: Path) -> dict[str, Any]:
    """Like read_cell, but a missing or broken cell is an error naming the problem."""
    record = read_cell(directory)
    if record is None:
        raise ResultsError(
            f"{directory}: not a finished lowdiff cell (cell.json missing, corrupt, of another "
            f"format than {FORMAT!r}, or a listed file is missing or truncated)"
        )
    return record
