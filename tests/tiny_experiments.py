"""A tiny experiment file written into a test's folder and loaded, as the runner tests use it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lowdiff.config import ExperimentConfig, load_experiment


def load_tiny(folder: Path, text: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """`text` written to `folder`/exp.toml and loaded with `overrides` (KEY=VALUE)."""
    path = Path(folder) / "exp.toml"
    path.write_text(text)
    return load_experiment(path, list(overrides))
