"""Run directories on disk: atomic writes, one record per finished cell, safe loading.

The folder layout (experiment.json, oracle.json, <run>/config.json, final_info.json and one
<run>/<dataset>/seed_<s>/ folder per cell, cell.json written LAST) is described once, in
`lowdiff.cells`; this module holds the primitives every writer and reader of it uses.

A cell counts as finished only when its cell.json parses, carries the expected config hash and
format, and every file it lists exists with the recorded size. Every file is written to a
temporary name in the same directory, flushed to disk and renamed, so a killed process never
leaves a file that looks complete. Nothing here can execute code on load: JSON and NumPy arrays
(`allow_pickle=False`) only.

A results folder may come from someone else, so no name read from it is trusted: every file
name listed in a cell.json is resolved with `confined` (symlinks followed) and refused if it
leads out of its cell; with `root` given, the cell itself must lie inside the results folder.
Environment failures of a write (disk full, read-only, not a directory) become one-line
`StorageError`s naming the path and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
import zipfile
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


class StorageError(ResultsError):
    """The file system refused a write or read (disk full, read-only, not a directory...)."""


_ADVICE = {
    errno.ENOSPC: "no space left on the device; free some space (or choose another --out) "
    "and run the same command again to resume",
    errno.EDQUOT: "disk quota exceeded; free some space (or choose another --out) and run the "
    "same command again to resume",
    errno.EROFS: "read-only file system; choose a writable results directory (--out)",
    errno.EACCES: "permission denied; choose a results directory you can write to (--out) or "
    "fix its permissions",
    errno.EPERM: "operation not permitted; choose a results directory you can write to (--out)",
    errno.ENOTDIR: "a part of this path is a file, not a directory; choose another path",
    errno.EISDIR: "is a directory, not a file",
    errno.EEXIST: "exists and is not a directory; choose another path",
    errno.ENOENT: "does not exist",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
}


def describe_os_error(error: OSError, path: str | Path | None = None) -> str:
    """One line naming the path and what to do about an operating-system error."""
    where = path if path is not None else error.filename
    advice = _ADVICE.get(error.errno or -1, error.strerror or str(error))
    return f"{where}: {advice}" if where is not None else advice


def confined(root: Path, relative: str | Path) -> Path:
    """`root / relative`, resolved, if it stays inside `root` (symlinks followed); else an error.

    Refuses absolute names, empty names, NUL bytes and names that lead out of `root` through
    `..` or a symbolic link.
    """
    name = os.fspath(relative)
    if not name or "\0" in name or Path(name).is_absolute():
        raise ResultsError(f"{root}: refusing the file name {name!r} (not a relative path)")
    base = Path(root).resolve()
    target = (base / name).resolve()
    if target == base or base not in target.parents:
        raise ResultsError(
            f"{root}: refusing the file name {name!r}: it leads outside the directory"
        )
    return target


def _check_inside(root: Path | None, directory: Path) -> Path:
    """The directory itself, checked to lie inside the results folder `root` (if given)."""
    if root is None:
        return directory
    base, resolved = Path(root).resolve(), Path(directory).resolve()
    if resolved != base and base not in resolved.parents:
        raise ResultsError(f"{directory}: refusing a cell that lies outside the results {root}")
    return resolved


def atomic_write_bytes(path: Path, data: bytes) -> None:
    try:
        _atomic_write(path, data)
    except OSError as error:
        if error.errno in _ADVICE:
            raise StorageError(describe_os_error(error, error.filename or path)) from error
        raise


def _atomic_write(path: Path, data: bytes) -> None:
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
    except IsADirectoryError as error:
        raise ResultsError(f"{path}: a directory, expected a JSON file") from error
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
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ResultsError(f"{path}: not a readable NumPy archive ({error})") from error


def config_hash(value: Any) -> str:
    """Stable hash of a JSON-able config (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_dir(root: Path, run: str, dataset: str, seed: int) -> Path:
    return root / run / dataset / f"seed_{seed}"


def write_cell(
    directory: Path, arrays: dict[str, Any], record: dict[str, Any], root: Path | None = None
) -> None:
    """Write a cell's arrays, then its cell.json (the commit point) listing them with sizes.

    With `root`, the cell must lie inside that results folder (no symlinked way out)."""
    directory = _check_inside(root, directory)
    sizes = {}
    for name, value in arrays.items():
        if value is None:
            continue
        path = confined(directory, name)
        sizes[name] = write_npz(path, value) if name.endswith(".npz") else write_npy(path, value)
    write_json(directory / "cell.json", {"format": FORMAT, **record, "files": sizes})


def copy_cell(
    source: Path, target: Path, changes: dict[str, Any], root: Path | None = None
) -> None:
    """Copy a finished cell to another run's directory (cell.json last), updating its record.

    Every file name comes from the source's cell.json and is confined to the source and the
    target cell; with `root`, both cells must lie inside that results folder."""
    source, target = _check_inside(root, source), _check_inside(root, target)
    record = load_cell_record(source)
    for name in record["files"]:
        origin = confined(source, name)
        if name in OPTIONAL_FILES and not origin.exists():
            continue
        atomic_write_bytes(confined(target, name), origin.read_bytes())
    write_json(target / "cell.json", {**record, **changes})


def read_cell(
    directory: Path, expected_hash: str | None = None, root: Path | None = None
) -> dict[str, Any] | None:
    """The cell's record if it is finished (and matches `expected_hash`), else None.

    A cell that lists a file outside itself (or, with `root`, lies outside the results
    folder) is not finished: nothing outside is looked at."""
    try:
        directory = _check_inside(root, directory)
        record = read_json(confined(directory, "cell.json"))
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
        try:
            path = confined(directory, name)
        except ResultsError:
            return None
        if name in OPTIONAL_FILES and not path.exists():
            continue
        if not isinstance(size, int) or not path.is_file() or path.stat().st_size != size:
            return None
    return record


def load_cell_record(directory: Path) -> dict[str, Any]:
    """Like read_cell, but a missing or broken cell is an error naming the problem."""
    record = read_cell(directory)
    if record is None:
        raise ResultsError(
            f"{directory}: not a finished lowdiff cell (cell.json missing, corrupt, of another "
            f"format than {FORMAT!r}, a listed file is missing or truncated, or it names a file "
            "outside the cell)"
        )
    return record
