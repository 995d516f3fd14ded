"""Results as a table: one row per experiment, run, dataset, seed and metric (long form).

`ResultsTable.from_dirs(dirs)` reads the finished cells of results directories (through
report.load, so a stale or unfinished cell is left out exactly as the report leaves it out);
`lowdiff export` writes it as CSV, each row naming its source directory; `to_dataframe()`
hands it to pandas where pandas is installed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowdiff import results

__all__ = ["COLUMNS", "ResultsTable"]

# `source`: the results directory a row was read from, so that two copies of one experiment
# (same name, runs and seeds) stay apart.
COLUMNS = ("experiment", "run", "dataset", "seed", "metric", "value", "source")


@dataclass
class ResultsTable:
    """Metrics in long form: one row per experiment, run, dataset, seed and metric.

    A plain list of dicts (no pandas needed); `to_dataframe()` where pandas is installed.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)

    @property
    def root(self) -> Path:
        """The results directory (the first, when the table spans several)."""
        if not self.roots:
            raise ValueError("this table was not read from a results directory")
        return self.roots[0]

    @classmethod
    def from_dirs(cls, roots: Iterable[str | Path]) -> ResultsTable:
        """The finished cells of results directories; stale and unfinished cells are left out."""
        from lowdiff.report.load import load_results

        rows, paths = [], []
        for root in map(Path, roots):
            loaded = load_results(root)
            paths.append(root)
            for (run, dataset, seed), cell in loaded.cells.items():
                for metric, value in cell.metrics.items():
                    rows.append(
                        dict(
                            zip(
                                COLUMNS,
                                (
                                    loaded.config.experiment.name,
                                    run,
                                    dataset,
                                    seed,
                                    metric,
                                    float(value),
                                    str(root),
                                ),
                                strict=True,
                            )
                        )
                    )
        return cls(rows, paths)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def select(self, **criteria: Any) -> ResultsTable:
        """The rows whose columns equal the given values, e.g. select(metric="kl_divergence")."""
        unknown = [key for key in criteria if key not in COLUMNS]
        if unknown:
            raise ValueError(f"unknown column {unknown[0]!r}; columns: {', '.join(COLUMNS)}")
        rows = [r for r in self.rows if all(r[k] == v for k, v in criteria.items())]
        return ResultsTable(rows, list(self.roots))

    def values(self) -> list[float]:
        return [row["value"] for row in self.rows]

    def to_csv(self, path: str | Path | None = None) -> str:
        """The table as CSV text (header: the columns); written atomically to `path` if given."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({**row, "value": repr(row["value"])})
        if path is not None:
            results.atomic_write_bytes(Path(path), buffer.getvalue().encode())
        return buffer.getvalue()

    def to_dataframe(self) -> Any:
        """A pandas DataFrame of the rows (pandas is optional: ImportError says how to get it)."""
        try:
            import pandas
        except ImportError as error:
            raise ImportError(
                "to_dataframe needs pandas (pip install pandas); the table itself is `.rows`"
            ) from error
        return pandas.DataFrame(self.rows, columns=list(COLUMNS))

    def __repr__(self) -> str:
        shown = "\n".join(
            f"  {r['run']} {r['dataset']}/seed {r['seed']} {r['metric']} = {r['value']:.4g}"
            for r in self.rows[:5]
        )
        more = f"\n  ... {len(self.rows) - 5} more" if len(self.rows) > 5 else ""
        return f"ResultsTable({len(self.rows)} rows)\n{shown}{more}"
