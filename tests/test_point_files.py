"""Point files as datasets: `experiment.datasets = ["file:points.csv"]` (lowdiff.point_files).

References are written here from the documented rules: the training set is the file's rows; a
fresh draw is rows drawn with replacement plus Gaussian noise of Silverman's bandwidth
sigma_j * n^(-1/6) per axis; labels are the nearest centre of the sidecar's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lowdiff import data
from lowdiff.cells import cell_hash
from lowdiff.config import ConfigError, from_json, load_experiment, to_dict
from lowdiff.plugins import file_dataset_name
from lowdiff.point_files import PointFile, read_points

CENTRES = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])


def blobs(count: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return CENTRES[rng.integers(0, 3, count)] + 0.1 * rng.normal(size=(count, 2))


def write_csv(path: Path, points: np.ndarray, header: bool = True) -> Path:
    lines = (["x,y"] if header else []) + [f"{float(x)!r},{float(y)!r}" for x, y in points]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_with_or_without_header_and_an_npy_read_the_same(tmp_path):
    points = blobs()
    np.save(tmp_path / "a.npy", points)
    for path in (
        write_csv(tmp_path / "a.csv", points),
        write_csv(tmp_path / "b.csv", points, header=False),
        tmp_path / "a.npy",
    ):
        np.testing.assert_array_equal(read_points(path), points)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,y,z\n" + "1,2,3\n" * 20, "2 columns"),
        ("x,y\n" + "".join(f"{i},nan\n" for i in range(20)), "20 rows are not finite"),
        ("x,y\n" + "".join(f"{i},{i}\n" for i in range(5)), "5 points; the metrics need >= 16"),
        ("x,y\n" + "".join(f"{i % 10},{i % 10}\n" for i in range(20)), "10 repeated points"),
        ("x,y\n" + "".join(f"{i},a{i}\n" for i in range(20)), "not a number"),
    ],
)
def test_bad_point_files_get_one_line_errors(tmp_path, text, message):
    (tmp_path / "p.csv").write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        read_points(tmp_path / "p.csv")
    assert "\n" not in str(error.value)


def test_the_training_set_is_the_file_and_fresh_draws_its_smoothed_bootstrap(tmp_path):
    points = blobs()
    source = PointFile(write_csv(tmp_path / "p.csv", points))
    train, labels = source.sample(len(points), 42)
    np.testing.assert_array_equal(train, points.astype(np.float32))
    assert (labels == 0).all()  # no sidecar: one component
    subset, _ = source.sample(100, 42)
    assert len(np.unique(subset, axis=0)) == 100 and set(map(tuple, subset)) <= set(
        map(tuple, train)
    )
    draw, _ = source.sample(50, 7)
    rng = np.random.default_rng(7)  # the documented recipe, literally
    index = rng.integers(0, len(points), 50)
    bandwidth = points.std(axis=0) * len(points) ** (-1 / 6)
    expected = points[index] + rng.normal(size=(50, 2)) * bandwidth
    np.testing.assert_allclose(draw, expected.astype(np.float32))
    with pytest.raises(ValueError, match="num_points"):
        source.sample(len(points) + 1, 42)


def test_a_modes_sidecar_gives_the_components_and_nearest_centre_labels(tmp_path):
    points = blobs()
    (tmp_path / "p.modes.json").write_text(
        json.dumps({"centres": CENTRES.tolist(), "scale": 0.1, "weights": [0.5, 0.25, 0.25]})
    )
    source = PointFile(write_csv(tmp_path / "p.csv", points))
    distances = np.linalg.norm(points[:, None] - CENTRES[None], axis=-1)
    np.testing.assert_array_equal(source.labels, distances.argmin(axis=1))
    assert source.scale == 0.1 and source.weights.tolist() == [0.5, 0.25, 0.25]
    (tmp_path / "p.modes.json").write_text(json.dumps({"centres": CENTRES.tolist()}))
    with pytest.raises(ValueError, match="p.modes.json: expected"):
        PointFile(tmp_path / "p.csv")


@pytest.mark.parametrize(
    ("entry", "name"),
    [("file:points.csv", "points"), ("file:dir/my points.npy", "my_points"), ("file:.x.csv", "x")],
)
def test_the_results_folder_name_is_a_safe_name_from_the_file_name(entry, name):
    assert file_dataset_name(entry) == name


EXPERIMENT = """
[experiment]
name = "p"
datasets = ["file:data/blobs.csv", "moons"]
seeds = [0]
num_points = NUM
[runs.baseline]
model = { arch = "mlp" }
"""


def experiment(tmp_path: Path, num_points: int = 300) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    if not (tmp_path / "data" / "blobs.csv").exists():
        write_csv(tmp_path / "data" / "blobs.csv", blobs())
    path = tmp_path / "exp.toml"
    path.write_text(EXPERIMENT.replace("NUM", str(num_points)))
    return path


def test_a_file_dataset_is_registered_under_its_name_and_keyed_on_its_content(tmp_path):
    config = load_experiment(experiment(tmp_path))
    assert config.experiment.datasets == ("blobs", "moons")
    assert data.get_dataset("blobs").components.num_components == 1
    again = from_json(to_dict(config))  # as experiment.json is read back
    assert again.experiment.data_files == config.experiment.data_files
    key = cell_hash(config, config.runs[0], "blobs", 0)
    moons = cell_hash(config, config.runs[0], "moons", 0)
    write_csv(tmp_path / "data" / "blobs.csv", blobs(seed=1))
    changed = load_experiment(tmp_path / "exp.toml")
    assert cell_hash(changed, changed.runs[0], "blobs", 0) != key
    assert cell_hash(changed, changed.runs[0], "moons", 0) == moons  # only the file's cells


def test_file_dataset_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="more than the 300 points of dataset 'blobs'"):
        load_experiment(experiment(tmp_path, num_points=1000))
    path = experiment(tmp_path)
    path.write_text(path.read_text().replace("blobs.csv", "nothere.csv"))
    with pytest.raises(ConfigError, match="nothere.csv' not found"):
        load_experiment(path)
    path.write_text(path.read_text().replace("data/nothere.csv", "circle.csv"))
    write_csv(tmp_path / "circle.csv", blobs())
    with pytest.raises(ConfigError, match="'circle', a built-in dataset; rename the file"):
        load_experiment(path)
    path.write_text(path.read_text().replace("circle.csv", "moons.csv"))
    write_csv(tmp_path / "moons.csv", blobs())
    with pytest.raises(ConfigError, match="a second dataset named 'moons'"):
        load_experiment(path)


def test_a_damaged_or_foreign_npy_point_file_is_refused_before_loading(tmp_path):
    """.npy point files go through the results files' validator: the header is checked against
    the bytes that follow it (a header announcing 100 GB is not loaded), objects are refused."""
    path = tmp_path / "p.npy"
    np.save(path, blobs())
    data = bytearray(path.read_bytes())
    header_end = data.index(b"\n") + 1
    header = bytes(data[:header_end]).replace(b"(300, 2)", b"(99999999999, 2)")
    path.write_bytes(header + bytes(data[header_end:]))
    with pytest.raises(ValueError, match="announces .* bytes of data") as error:
        read_points(path)
    assert "\n" not in str(error.value)
    np.save(path, np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="dtype object"):
        read_points(path)
