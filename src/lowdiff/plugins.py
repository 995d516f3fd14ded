"""The researcher's own code and data, named in an experiment file (torch-free).

Two kinds of outside source are accepted:

* a denoiser class, `model.arch = "path/to/file.py:ClassName"` (a path relative to the
  experiment file's folder, or absolute) or `"package.module:ClassName"` (an importable module);
  it is trained M at a time by `lowdiff.models.plugin`;
* a point set, `experiment.datasets = ["file:points.csv"]` (or `.npy`), loaded by
  `lowdiff.data.register_file`.

This module only parses those names, finds the files they point to and hashes their bytes: the
hashes enter the cell keys, so a changed plugin file or point file never reuses a result.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

__all__ = [
    "FILE_PREFIX",
    "PluginError",
    "file_dataset_name",
    "is_file_dataset",
    "is_plugin",
    "plugin_source",
    "sha256_of",
    "split_plugin",
]

FILE_PREFIX = "file:"
POINT_SUFFIXES = (".csv", ".npy")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class PluginError(ValueError):
    """A plugin class or a point file named in an experiment cannot be used (one line)."""


def is_plugin(arch: str) -> bool:
    """Whether `model.arch` names outside code ("file.py:Class" or "module:Class")."""
    return ":" in arch


def split_plugin(arch: str) -> tuple[str, str]:
    """'dir/file.py:ClassName' -> ('dir/file.py', 'ClassName'), checked for form only."""
    source, _, class_name = arch.rpartition(":")
    if not source or not _IDENTIFIER.fullmatch(class_name):
        raise PluginError(
            f"model.arch {arch!r}: expected 'path/to/file.py:ClassName' or "
            "'package.module:ClassName'"
        )
    if not source.endswith(".py") and not _MODULE.fullmatch(source):
        raise PluginError(
            f"model.arch {arch!r}: {source!r} is neither a .py file nor a module name"
        )
    return source, class_name


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def plugin_source(arch: str, root: str | Path) -> Path:
    """The Python file that defines the plugin class: a .py path (relative paths resolved
    against `root`, the experiment file's folder) or the file of an importable module."""
    source, _ = split_plugin(arch)
    if source.endswith(".py"):
        path = Path(source) if Path(source).is_absolute() else Path(root) / source
        if not path.is_file():
            raise PluginError(
                f"model.arch {arch!r}: plugin file {str(path)!r} not found "
                f"(relative paths are resolved against the experiment file's folder, {root})"
            )
        return path.resolve()
    try:
        spec = importlib.util.find_spec(source)
    except (ImportError, ValueError) as error:
        raise PluginError(f"model.arch {arch!r}: module {source!r} not found ({error})") from None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise PluginError(
            f"model.arch {arch!r}: module {source!r} not found as a Python source file "
            "(is it installed, or on PYTHONPATH?)"
        )
    return Path(spec.origin).resolve()


def is_file_dataset(name: str) -> bool:
    return name.startswith(FILE_PREFIX)


def file_dataset_name(entry: str) -> str:
    """The results-folder name of `file:dir/points.csv`: the file's stem, made a safe name
    (letters, digits, '_', '-', '.'; anything else becomes '_')."""
    path = Path(entry.removeprefix(FILE_PREFIX))
    if path.suffix.lower() not in POINT_SUFFIXES:
        raise PluginError(
            f"experiment.datasets: {entry!r}: a point file must end in "
            f"{' or '.join(POINT_SUFFIXES)}"
        )
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem).lstrip(".") or "points"
    return name if name[0].isalnum() else f"f{name}"
