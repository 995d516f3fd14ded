"""Reading a results directory for the report: a thin view of `lowdiff.summary`.

`load_results(root)` is `summary.load`: the resolved config, the oracle floors (per sample count
and k) and every planned cell, counted or missing with the reason, under the one staleness rule
that final_info.json uses too. `weighted` picks the cells that recorded a weight trace of a given
width; which weights those are is `ExperimentResults.mixing(run)` (the architecture registry).
"""

from __future__ import annotations

from pathlib import Path

from lowdiff.summary import CellResult, ExperimentResults, MissingCell, load

__all__ = ["CellResult", "ExperimentResults", "MissingCell", "load_results"]


def load_results(root: Path) -> ExperimentResults:
    """Read a results directory; `results.ResultsError` if it is not a lowdiff one."""
    return load(Path(root))
