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

import contextlib
import errno
import hashlib
import io
import json
import os
import secrets
import shutil
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "lowdiff-cell/1"
# Files a cell may lack and still count as finished: the model weights, which a compact
# results folder (e.g. one committed to a repository) leaves out. Their record stays in
# cell.json, so a reader knows what the cell held when it was written.
OPTIONAL_FILES = frozenset({"model_ema.npz"})


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


def _check_inside(root: Path | None, directory: Path, create: bool = False) -> Path:
    """The directory itself, checked to lie inside the results folder `root` (if given) through
    real directories only (no symbolic link below `root`); made if missing and `create`."""
    if root is None:
        return directory
    try:
        with confined_directory(root, directory, create=create):
            pass
    except FileNotFoundError as error:
        raise ResultsError(f"{directory}: does not exist") from error
    return Path(directory)


# --- confinement: every write and delete below a results directory -------------------------
#
# The directory the user names (`root`) may itself be reached through a symbolic link; below it
# nothing is followed. Each path component is opened relative to its parent's descriptor with
# O_NOFOLLOW, so a folder swapped for a link after a check cannot redirect the write either.

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _relative_parts(root: Path, path: Path) -> tuple[str, ...]:
    """The components of `path` below `root` (compared lexically); an error if it is not below."""
    base, target = Path(os.path.abspath(root)), Path(os.path.abspath(path))
    if base != target and base not in target.parents:
        raise ResultsError(f"{path}: refusing to write outside the results directory {root}")
    parts = target.relative_to(base).parts
    if any(part in ("", ".", "..") or "\0" in part for part in parts):
        raise ResultsError(f"{path}: refusing the file name (not a plain relative path)")
    return parts


def _open_directory(root: Path, parts: tuple[str, ...], create: bool) -> int:
    """A descriptor of root/parts..., each component a real directory (never a symlink)."""
    descriptor = os.open(os.path.realpath(root), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=descriptor)
            try:
                child = os.open(part, _DIRECTORY_FLAGS, dir_fd=descriptor)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ResultsError(
                        f"{Path(root, *parts)}: refusing to go through {part!r}, a symbolic "
                        "link or a file: nothing below a results directory may lead outside it; "
                        "remove it or choose another --out"
                    ) from error
                raise
            os.close(descriptor)
            descriptor = child
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


@contextlib.contextmanager
def confined_directory(root: Path, directory: Path, *, create: bool = True) -> Iterator[int]:
    """The descriptor of `directory`, which must lie below `root` through real directories only.

    The one confinement routine of lowdiff: every write and delete of a results file goes
    through it. `create` makes the missing directories (mode 0777 less the umask)."""
    root = Path(root)
    if create:
        _storage(lambda: Path(root).mkdir(parents=True, exist_ok=True), root)
    parts = _relative_parts(root, Path(directory))
    descriptor = _storage(lambda: _open_directory(root, parts, create), directory)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


def _storage(action: Callable[[], Any], path: Path) -> Any:
    """`action()`, with an environment failure (disk full, read-only...) as a StorageError."""
    try:
        return action()
    except OSError as error:
        if error.errno in _ADVICE:
            raise StorageError(describe_os_error(error, error.filename or path)) from error
        raise


def atomic_write_bytes(path: Path, data: bytes, *, root: Path | None = None) -> None:
    """Write `data` to `path` atomically, confined to `root` (default: the file's folder).

    The data goes to a uniquely named temporary beside the target (created exclusively, never
    through a link), is flushed to disk and renamed over the target: a reader sees the old file
    or the new one, and two writers never share a temporary."""
    path = Path(path)
    with confined_directory(path.parent if root is None else root, path.parent) as folder:
        _storage(lambda: _write_in(folder, path.name, data), path)


def _write_in(folder: int, name: str, data: bytes) -> None:
    temporary = f".{name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    handle = os.open(temporary, flags, 0o666, dir_fd=folder)  # the umask applies, as for any file
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
        raise


def remove(path: Path, *, root: Path) -> None:
    """Delete the file `path` (if there) below `root`; a link is removed, never followed."""
    path = Path(path)
    with (
        contextlib.suppress(ResultsError, FileNotFoundError),
        confined_directory(root, path.parent, create=False) as folder,
        contextlib.suppress(FileNotFoundError),
    ):
        os.unlink(path.name, dir_fd=folder)


def remove_tree(path: Path, *, root: Path) -> None:
    """Delete the folder `path` and its contents below `root`; no link inside is followed (a
    link in place of the folder is removed itself)."""
    path = Path(path)
    with (
        contextlib.suppress(ResultsError, FileNotFoundError),
        confined_directory(root, path.parent, create=False) as folder,
    ):
        if stat.S_ISDIR(os.lstat(path.name, dir_fd=folder).st_mode):
            shutil.rmtree(path.name, dir_fd=folder)
        else:
            os.unlink(path.name, dir_fd=folder)


def atomic_write_with(
    path: Path, writer: Callable[[io.BytesIO], None], *, root: Path | None = None
) -> int:
    buffer = io.BytesIO()
    writer(buffer)
    atomic_write_bytes(path, buffer.getvalue(), root=root)
    return buffer.tell()


def write_json(path: Path, value: Any, *, root: Path | None = None) -> int:
    data = (json.dumps(value, indent=2, sort_keys=False, allow_nan=False) + "\n").encode()
    atomic_write_bytes(path, data, root=root)
    return len(data)


def write_npy(path: Path, array: np.ndarray, *, root: Path | None = None) -> int:
    return atomic_write_with(
        path, lambda buffer: np.save(buffer, np.asarray(array), allow_pickle=False), root=root
    )


def write_npz(path: Path, arrays: dict[str, np.ndarray], *, root: Path | None = None) -> int:
    return atomic_write_with(path, lambda buffer: np.savez_compressed(buffer, **arrays), root=root)


# --- the one validator of every file read ---------------------------------------------------
#
# Everything read from a results folder may be damaged or planted, so sizes are checked before
# anything is loaded (a header may announce terabytes), and values after (NaN, inf, wrong shape).

MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 64
MAX_ARRAY_BYTES = (
    4 * 2**30
)  # one array of a cell (a 2-D sample of 10^8 points in float64 is 1.6 GB)
NUMERIC_KINDS = "fiub"
# Largest magnitude a recorded metric or floor may have: beyond it, means and squares of a few
# values overflow float64 (1e308), and no lowdiff measure comes near it.
MAX_MAGNITUDE = 1e150


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping once it exceeds `limit` (no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        stack.extend((child, level + 1) for child in children)
    return deepest


def read_json(path: Path) -> Any:
    """A JSON file, validated: at most MAX_JSON_BYTES, at most MAX_JSON_DEPTH deep. NaN and
    Infinity parse (a reader of numbers checks them: `cells`, `oracle`)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ResultsError(f"{path}: {size} bytes, more than any lowdiff JSON file holds")
        value = json.loads(path.read_bytes())
    except FileNotFoundError as error:
        raise ResultsError(f"{path}: missing") from error
    except IsADirectoryError as error:
        raise ResultsError(f"{path}: a directory, expected a JSON file") from error
    except RecursionError as error:
        raise ResultsError(f"{path}: nested too deeply; not a lowdiff file") from error
    except (ValueError, UnicodeDecodeError) as error:
        raise ResultsError(
            f"{path}: not valid JSON ({error}); the file is corrupt or not a lowdiff file"
        ) from error
    except OSError as error:
        raise ResultsError(f"{path}: unreadable ({describe_os_error(error)})") from error
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ResultsError(f"{path}: nested more than {MAX_JSON_DEPTH} deep; not a lowdiff file")
    return value


Shape = tuple[int | None, ...]


def check_array(
    where: str, array: np.ndarray, shape: Shape | None = None, finite: bool = True
) -> np.ndarray:
    """`array` if numeric, of `shape` (None: any length on that axis) and finite; else an error."""
    if array.dtype.kind not in NUMERIC_KINDS:
        raise ResultsError(f"{where}: dtype {array.dtype} (expected numbers)")
    if shape is not None and (
        array.ndim != len(shape)
        or any(
            want is not None and have != want for have, want in zip(array.shape, shape, strict=True)
        )
    ):
        wanted = "(" + ", ".join("N" if n is None else str(n) for n in shape) + ")"
        raise ResultsError(f"{where}: shape {array.shape}, expected {wanted}")
    if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ResultsError(f"{where}: holds NaN or infinite values")
    return array


def _npy_header(file: io.BufferedReader, where: str, available: int) -> None:
    """Check an .npy header against the bytes that follow it, before any data is loaded."""
    version = np.lib.format.read_magic(file)
    reader = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in reader:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _, dtype = reader[version](file)
    if dtype.hasobject or dtype.kind not in NUMERIC_KINDS:
        raise ResultsError(f"{where}: dtype {dtype} (expected numbers)")
    nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES or nbytes != available - file.tell():
        raise ResultsError(
            f"{where}: its header announces {nbytes} bytes of data, the file holds "
            f"{available - file.tell()} (limit {MAX_ARRAY_BYTES}); damaged"
        )


def read_npy(path: Path, shape: Shape | None = None, finite: bool = True) -> np.ndarray:
    """A NumPy array, validated: header and size first, then dtype, `shape` and finiteness."""
    try:
        with open(path, "rb") as file:
            _npy_header(file, str(path), os.fstat(file.fileno()).st_size)
            file.seek(0)
            array = np.load(file, allow_pickle=False)
    except FileNotFoundError as error:
        raise ResultsError(f"{path}: missing") from error
    except (ValueError, OSError, EOFError) as error:
        raise ResultsError(f"{path}: not a readable NumPy array ({error})") from error
    return check_array(str(path), array, shape, finite)


def read_npz(
    path: Path, shapes: dict[str, Shape] | None = None, finite: bool = True
) -> dict[str, np.ndarray]:
    """A NumPy archive, validated: total size before loading, then each array (as read_npy;
    `shapes` names the arrays that must be there and their shapes)."""
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
        if total > MAX_ARRAY_BYTES:
            raise ResultsError(f"{path}: announces {total} bytes (limit {MAX_ARRAY_BYTES})")
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError as error:
        raise ResultsError(f"{path}: missing") from error
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ResultsError(f"{path}: not a readable NumPy archive ({error})") from error
    for name in shapes or {}:
        if name not in arrays:
            raise ResultsError(f"{path}: no array {name!r} (has {sorted(arrays)})")
    for name, array in arrays.items():
        check_array(f"{path}[{name}]", array, (shapes or {}).get(name), finite)
    return arrays


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(value: Any) -> str:
    """Stable hash of a JSON-able config (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_dir(root: Path, run: str, dataset: str, seed: int) -> Path:
    return root / run / dataset / f"seed_{seed}"


def _encoded(name: str, value: Any) -> bytes:
    buffer = io.BytesIO()
    if name.endswith(".npz"):
        np.savez_compressed(buffer, **value)
    else:
        np.save(buffer, np.asarray(value), allow_pickle=False)
    return buffer.getvalue()


def write_cell(
    directory: Path,
    arrays: dict[str, Any],
    record: dict[str, Any],
    root: Path | None = None,
    kept: Mapping[str, tuple[int, str]] | None = None,
) -> None:
    """Write a cell's arrays, then its cell.json (the commit point) listing them with their
    sizes and content hashes (SHA-256: a file changed later un-finishes the cell).

    `kept`: files already in the cell, left as they are and listed with their (size, SHA-256)
    (a cell re-evaluated from its saved weights keeps them). With `root`, the cell must lie
    inside that results folder (no symlinked way out)."""
    directory = _check_inside(root, directory, create=True)
    root = directory if root is None else root
    sizes = {name: size for name, (size, _) in (kept or {}).items()}
    digests = {name: digest for name, (_, digest) in (kept or {}).items()}
    for name, value in arrays.items():
        if value is None:
            continue
        data = _encoded(name, value)
        atomic_write_bytes(confined(directory, name), data, root=root)
        sizes[name], digests[name] = len(data), hashlib.sha256(data).hexdigest()
    record = {"format": FORMAT, **record, "files": sizes, "sha256": digests}
    write_json(directory / "cell.json", record, root=root)


def copy_cell(
    source: Path, target: Path, changes: dict[str, Any], root: Path | None = None
) -> None:
    """Copy a finished cell to another run's directory (cell.json last), updating its record.

    Every file name comes from the source's cell.json and is confined to the source and the
    target cell; with `root`, both cells must lie inside that results folder."""
    source, target = _check_inside(root, source), _check_inside(root, target, create=True)
    record = load_cell_record(source, root)
    root = target if root is None else root
    for name in record["files"]:
        origin = confined(source, name)
        if name in OPTIONAL_FILES and not origin.exists():
            continue
        atomic_write_bytes(confined(target, name), origin.read_bytes(), root=root)
    write_json(target / "cell.json", {**record, **changes}, root=root)


def _file_problem(directory: Path, name: str, size: Any, digest: Any) -> str | None:
    """Why a listed file does not match its record (None: it does, or it is an optional file
    left out)."""
    try:
        path = confined(directory, name)
    except ResultsError:
        return f"{name} lies outside the cell"
    if name in OPTIONAL_FILES and not path.exists():
        return None
    if not isinstance(size, int) or not path.is_file() or path.stat().st_size != size:
        return f"{name} is missing or of another size than recorded"
    if digest is not None and file_digest(path) != digest:
        return f"{name} was changed after the cell was written (content hash)"
    return None


def cell_record(
    directory: Path, root: Path | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) if the cell's cell.json parses, is of our format and lists its files (their
    content is not looked at here), else (None, why). With `root`, as `cell_problem`."""
    try:
        directory = _check_inside(root, directory)
        record = read_json(confined(directory, "cell.json"))
    except ResultsError as error:
        return None, str(error)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None, f"cell.json is not of the format {FORMAT!r}"
    if not isinstance(record.get("files"), dict) or not isinstance(record.get("sha256", {}), dict):
        return None, "cell.json lists no files"
    return record, None


def kept_file_problem(directory: Path, record: dict[str, Any], name: str) -> str | None:
    """Why the file `name` of a cell cannot be kept as its record vouches for it (None: it is
    listed with its content hash, there, and of the recorded size and hash)."""
    digest = record.get("sha256", {}).get(name)
    if name not in record["files"] or not isinstance(digest, str):
        return f"{name} is not recorded with its content hash"
    if not confined(directory, name).is_file():
        return f"{name} is not there"
    return _file_problem(directory, name, record["files"][name], digest)


def cell_problem(
    directory: Path, expected_hash: str | None = None, root: Path | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) if the cell is finished (and matches `expected_hash`), else (None, why).

    A cell that lists a file outside itself (or, with `root`, lies outside the results folder
    or is reached through a link) is not finished: nothing outside is looked at. Cells written
    before content hashes were recorded are checked by size alone."""
    record, why = cell_record(directory, root)
    if record is None:
        return None, why
    if expected_hash is not None and record.get("config_hash") != expected_hash:
        return None, "written under another configuration"
    files, digests = record["files"], record.get("sha256", {})
    for name, size in files.items():
        problem = _file_problem(directory, name, size, digests.get(name))
        if problem:
            return None, problem
    return record, None


def read_cell(
    directory: Path, expected_hash: str | None = None, root: Path | None = None
) -> dict[str, Any] | None:
    """The cell's record if it is finished (and matches `expected_hash`), else None."""
    return cell_problem(directory, expected_hash, root)[0]


def load_cell_record(directory: Path, root: Path | None = None) -> dict[str, Any]:
    """Like read_cell, but a missing or broken cell is an error naming the problem."""
    record, problem = cell_problem(directory, root=root)
    if record is None:
        raise ResultsError(f"{directory}: not a finished lowdiff cell ({problem})")
    return record
