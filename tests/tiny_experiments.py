"""A tiny experiment file written into a test's folder and loaded, as the runner tests use it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from lowdiff.config import ConfigError, ExperimentConfig, check_resources, load_experiment, resolve


def load_tiny(folder: Path, text: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """`text` written to `folder`/exp.toml and loaded with `overrides` (KEY=VALUE)."""
    path = Path(folder) / "exp.toml"
    path.write_text(text)
    return load_experiment(path, list(overrides))


def one_run(**sections: dict) -> ExperimentConfig:
    """The baseline on moons, one seed, on the CPU, with `sections` (e.g. train={...}) added."""
    raw = {
        "experiment": {"name": "tiny", "datasets": ["moons"], "seeds": [0], "device": "cpu"},
        "runs": {"base": {"model": {"arch": "mlp"}}},
    } | sections
    return resolve(raw, "tiny")


def refusal(**sections: dict) -> str:
    """The one-line ConfigError the resource check gives `one_run(**sections)` before any
    write (it fails the test if there is none, or if it spans lines)."""
    with pytest.raises(ConfigError) as error:
        check_resources(one_run(**sections))
    message = str(error.value)
    assert "\n" not in message
    return message
