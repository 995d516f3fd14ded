"""Cells: the grid enumerated once, the key pinned, the layout, statuses and staleness."""

import json
import pickle

import numpy as np
import pytest

from lowdiff import cells, results
from lowdiff.config import resolve

RAW = {
    "experiment": {"name": "pin", "datasets": ["dino", "moons"], "seeds": [0, 2]},
    "runs": {
        "baseline": {},
        "tuned": {
            "model": {"arch": "dual_scale", "weighting": "fixed"},
            "train": {"learning_rate": 1e-3},
            "eval": {"num_samples": 2000, "chunk_size": 7},
        },
    },
}

# Written by lowdiff 452fd15's experiments.cell_hash; results on disk depend on these values.
PINNED = {
    ("baseline", "dino", 0): "de71c454fae54529",
    ("baseline", "moons", 2): "03402c662eb5004c",
    ("tuned", "dino", 0): "ecff0b4e65fd27b2",
    ("tuned", "moons", 2): "42fcec2c610a9c8b",
}


@pytest.fixture
def config():
    return resolve(RAW)


def test_cell_hash_is_pinned(config):
    for (run, dataset, seed), expected in PINNED.items():
        assert cells.cell_hash(config, config.run(run), dataset, seed) == expected
    assert cells.HASH_VERSION == 2


def test_plan_is_the_grid_in_order_with_the_layout(config, tmp_path):
    planned = cells.plan(config, tmp_path)
    expected = [
        (run, dataset, seed)
        for run in ("baseline", "tuned")
        for dataset in ("dino", "moons")
        for seed in (0, 2)
    ]
    assert [c.key for c in planned] == expected
    for cell in planned:
        assert cell.directory == tmp_path / cell.run / cell.dataset / f"seed_{cell.seed}"
        assert cell.config_hash == cells.cell_hash(
            config, config.run(cell.run), cell.dataset, cell.seed
        )
        if cell.key in PINNED:
            assert cell.config_hash == PINNED[cell.key]
    assert pickle.loads(pickle.dumps(planned)) == planned  # a unit of work for another process


def test_write_configs_names_what_was_asked(config, tmp_path):
    cells.write_configs(config, tmp_path)
    experiment = json.loads((tmp_path / "experiment.json").read_text())
    assert [run["name"] for run in experiment["runs"]] == ["baseline", "tuned"]
    tuned = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert tuned["train"]["learning_rate"] == 1e-3 and tuned["experiment"]["name"] == "pin"


def finished(cell, value=1.0):
    arrays = {"samples.npy": np.zeros((5, 2), np.float32), "weights.npz": None}
    cells.write_finished(cell, arrays, {"kl_divergence": value}, {"models": 1})


def test_finished_and_diverged_cells_count_as_done(config, tmp_path):
    first, second = cells.plan(config, tmp_path)[:2]
    assert not cells.is_done(first) and cells.read(first).reason == cells.NOT_FINISHED
    finished(first)
    found = cells.read(first)
    assert found.status == cells.FINISHED and found.record["metrics"] == {"kl_divergence": 1.0}
    assert set(found.record["files"]) == {"samples.npy"}  # None: no file
    cells.write_diverged(second, 37, {"models": 2})
    found = cells.read(second)
    assert found.status == cells.DIVERGED and found.diverged_at_step == 37
    assert found.record["metrics"] == {} and found.record["files"] == {}
    assert cells.is_done(first) and cells.is_done(second)


def test_a_record_without_status_is_finished_and_a_strange_status_is_not(config, tmp_path):
    cell = cells.plan(config, tmp_path)[0]
    finished(cell)
    path = cell.directory / "cell.json"
    record = json.loads(path.read_text())
    del record["status"]  # as written before statuses existed
    results.write_json(path, record)
    assert cells.read(cell).status == cells.FINISHED
    results.write_json(path, {**record, "status": "exploded"})
    assert not cells.is_done(cell) and "unknown status 'exploded'" in cells.read(cell).reason
    results.write_json(path, {**record, "status": "diverged"})  # no step: not a diverged cell
    assert not cells.is_done(cell)


@pytest.mark.parametrize(
    "value,shown",
    [
        ("abc", "'abc'"),
        (None, "None"),
        (float("nan"), "nan"),
        (float("-inf"), "-inf"),
        (True, "True"),
    ],
)
def test_a_metric_that_is_not_a_finite_number_makes_the_cell_invalid(
    config, tmp_path, value, shown
):
    cell = cells.plan(config, tmp_path)[0]
    finished(cell, 0.25)
    assert cells.is_done(cell)  # a finite number counts, an int too
    path = cell.directory / "cell.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "metrics": {"w2": 3, "kl_divergence": value}}))
    found = cells.read(cell)
    assert found.record is None and not cells.is_done(cell)
    assert found.reason == (
        f"invalid: metric kl_divergence = {shown} in cell.json (expected a finite number)"
    )


def test_a_cell_json_that_is_a_directory_makes_the_cell_invalid(config, tmp_path):
    cell = cells.plan(config, tmp_path)[0]
    (cell.directory / "cell.json").mkdir(parents=True)
    assert cells.read(cell).reason == "invalid: cell.json is a directory, not a file"


def test_stale_and_foreign_records_never_count(config, tmp_path):
    planned = cells.plan(config, tmp_path)
    cell, other = planned[0], planned[1]  # baseline dino seeds 0 and 2
    finished(cell)
    changed = resolve({**RAW, "runs": {**RAW["runs"], "baseline": {"train": {"num_steps": 5}}}})
    stale = cells.plan(changed, tmp_path)[0]
    assert stale.directory == cell.directory and stale.config_hash != cell.config_hash
    assert cells.read(stale).reason == cells.STALE and not cells.is_done(stale)
    # another cell's record copied into this cell's place (same config, another seed)
    results.copy_cell(cell.directory, other.directory, {"config_hash": other.config_hash})
    assert cells.read(other).reason.startswith("foreign")
    assert not cells.is_done(other)


def test_copy_makes_the_target_its_own(config, tmp_path):
    planned = cells.plan(config, tmp_path)
    source = planned[0]
    twin = cells.Cell("again", source.dataset, source.seed, source.config_hash, tmp_path / "x")
    finished(source, 2.5)
    cells.copy(source, twin)
    found = cells.read(twin)
    assert found.record["run"] == "again" and found.record["metrics"]["kl_divergence"] == 2.5
    assert (twin.directory / "samples.npy").read_bytes() == (
        source.directory / "samples.npy"
    ).read_bytes()
