"""Who a results directory belongs to: one experiment, checked before anything is written.

A results directory holds one experiment (its experiment.json names it). `claim` is called by the
runner before it writes: an empty or missing folder is taken; a folder of the same experiment
is resumed, and every finished cell that a changed setting will replace (train again) or
re-evaluate (from its saved weights: `cells.reusable`) is named with the settings that changed;
anything else (another experiment's results, a folder of other files, an experiment.json that
cannot be read) is refused unless `force`. Torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lowdiff import cells, results
from lowdiff.config import ExperimentConfig, changes, to_dict
from lowdiff.lock import LOCK_NAME

__all__ = ["COMPARISON_TITLE", "OwnershipError", "claim", "claim_comparison", "replaced_cells"]

log = logging.getLogger(__name__)

# Entries a folder may hold and still count as empty: a run's lock and its checkpoints, written
# before experiment.json by an earlier version or a run killed at once.
IGNORED = frozenset({LOCK_NAME, cells.EXPERIMENT_FILE, ".checkpoints"})
COMPARISON_TITLE = "# lowdiff comparison"  # the first line of a comparison's report.md
FORCE_HINT = "choose another --out, or pass --force (force=True) to write there anyway"


class OwnershipError(results.ResultsError):
    """The results directory holds something that this experiment would overwrite."""


def _recorded(root: Path) -> dict[str, Any] | None:
    """experiment.json of `root` as a dict, None if there is none; an error if unreadable."""
    path = root / cells.EXPERIMENT_FILE
    if not path.exists() and not path.is_symlink():
        return None
    raw = results.read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("experiment"), dict):
        raise OwnershipError(f"{path}: not a lowdiff experiment record; {FORCE_HINT}")
    return raw


def replaced_cells(
    config: ExperimentConfig, root: Path, recorded: Mapping[str, Any], *, force: bool = False
) -> list[str]:
    """One line per run whose finished cells a run of `config` will replace, and why (and one
    per run whose cells it will evaluate again from their saved weights, unless `force`)."""
    old_runs = {
        run.get("name"): run for run in recorded.get("runs", []) if isinstance(run, Mapping)
    }
    new_experiment = to_dict(config.experiment)
    shared = changes(recorded.get("experiment", {}), new_experiment, "experiment.")
    lines = []
    for run in config.runs:
        stale = [
            found.cell
            for found in map(cells.read, cells.plan(config, root))
            if found.cell.run == run.name and found.reason == cells.STALE
        ]
        num_points = config.experiment.num_points
        again = [] if force else [c for c in stale if cells.reusable(c, run, num_points)[0]]
        new = {k: v for k, v in to_dict(run).items() if k not in ("name", "description")}
        old = {k: v for k, v in old_runs.get(run.name, {}).items() if k in new}
        why = shared + changes(old, new) if run.name in old_runs else shared
        because = " because " + ("; ".join(why) if why else "their settings changed")
        retrained = [c for c in stale if c not in again]
        if again:
            lines.append(
                f"run {run.name!r}: re-evaluating {len(again)} finished cell(s) "
                f"({_where(again)}) from their saved weights{because}"
            )
        if retrained:
            lines.append(
                f"run {run.name!r}: replacing {len(retrained)} finished cell(s) "
                f"({_where(retrained)}){because}"
            )
    return lines


def _where(stale: list[cells.Cell]) -> str:
    return ", ".join(f"{cell.dataset}/seed {cell.seed}" for cell in stale)


def _foreign(root: Path) -> list[str]:
    return sorted(entry.name for entry in root.iterdir() if entry.name not in IGNORED)


def claim_comparison(out: Path) -> None:
    """A comparison's folder: missing, empty, or an earlier comparison (its report.md says so);
    anything else, a results directory above all, is refused before a figure is drawn."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise OwnershipError(f"{out}: exists and is not a directory; choose another --out")
    report = out / "report.md"
    if not _foreign(out):
        return
    earlier = False
    if report.is_file():
        with report.open("rb") as file:
            earlier = file.read(len(COMPARISON_TITLE)) == COMPARISON_TITLE.encode()
    if (out / cells.EXPERIMENT_FILE).exists() or not earlier:
        raise OwnershipError(
            f"{out}: holds other files (not an earlier lowdiff comparison); writing the "
            "comparison there would replace them; choose another --out"
        )


def claim(config: ExperimentConfig, root: Path, *, force: bool = False) -> list[str]:
    """Check that `config` may write into `root`; returns the cells it will replace (logged).

    Refused (OwnershipError) unless `force`: another experiment's results directory, and a
    non-empty folder that is not a lowdiff results directory. Nothing is written here."""
    root = Path(root)
    if not root.exists():
        return []
    if not root.is_dir():
        raise OwnershipError(f"{root}: exists and is not a directory; choose another --out")
    try:
        recorded = _recorded(root)
    except results.ResultsError as error:
        if force:
            return []
        raise OwnershipError(f"{error}; {FORCE_HINT}") from error
    name = config.experiment.name
    if recorded is None:
        foreign = _foreign(root)
        if foreign and not force:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise OwnershipError(
                f"{root}: not empty ({shown}) and not a lowdiff results directory; {FORCE_HINT}"
            )
        return []
    other = recorded["experiment"].get("name")
    if other != name and not force:
        raise OwnershipError(
            f"{root}: holds the results of experiment {other!r}; running {name!r} there would "
            f"replace them; {FORCE_HINT}"
        )
    lines = replaced_cells(config, root, recorded, force=force)
    for line in lines:
        log.warning("%s", line)
    return lines
