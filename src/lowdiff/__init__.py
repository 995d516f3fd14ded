"""lowdiff: train many small DDPMs on 2-D data at once, measure them and compare them honestly.

The Python API (lowdiff.api) is available from the package itself and imported on first use,
so `import lowdiff` stays light:

    lowdiff.train(...), lowdiff.load(cell_dir), lowdiff.evaluate(samples, dataset),
    lowdiff.run_experiment(path_or_config), lowdiff.remeasure(results_dir)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = (
    "ResultsTable",
    "TrainedModel",
    "evaluate",
    "evaluate_against_floor",
    "load",
    "remeasure",
    "run_experiment",
    "train",
)
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from lowdiff import api

        return getattr(api, name)
    raise AttributeError(f"module 'lowdiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
