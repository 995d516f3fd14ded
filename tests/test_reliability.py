"""Reliability, round two: each class of a careful user's adversarial trials, reproduced.

1 writes through symlinks · 2 someone else's results overwritten · 3 damaged or tampered files ·
4 checks that came too late · 5 reports and exports that collide · 6 API arguments trusted.
Each test states the trial, then what must hold (no traceback, no write outside, nothing lost).
"""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_experiments import load_tiny

import lowdiff
from lowdiff import cells, oracle, ownership, results, runtime, summary
from lowdiff.api import check_seeds, evaluate, load, train_config
from lowdiff.cli import main
from lowdiff.config import ConfigError, check_executor_available, check_memory
from lowdiff.experiments import execute
from lowdiff.report import write_report
from lowdiff.table import ResultsTable

SRC = str(Path(__file__).resolve().parent.parent / "src")

TINY = """\
[experiment]
name = "tiny"
datasets = ["moons"]
seeds = [0, 1]
num_points = 400
oracle_draws = 1
[train]
num_steps = 20
batch_size = 32
[eval]
num_samples = 150
field_resolution = 4
ground_truth = false
process_snapshots = 2
process_points = 50
[model]
hidden_dim = 16
embedding_dim = 8
[runs.baseline]
"""


def experiment(folder, overrides=(), text=TINY):
    return load_tiny(folder, text, overrides)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished tiny results directory (read-only use: tests copy it before changing it)."""
    base = tmp_path_factory.mktemp("made")
    config = experiment(base)
    execute(config, base / "out", progress=False)
    write_report(base / "out")
    return config, base / "out"


@pytest.fixture
def copy(made, tmp_path):
    config, root = made
    target = tmp_path / "results"
    shutil.copytree(root, target, symlinks=True)
    return config, target


def tree(folder):
    """Every file below `folder` with its content (to show nothing changed there)."""
    return {p: p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# --- 1: writes that follow symlinks out of the results directory ---------------------------


@pytest.mark.parametrize("planted", ["figures", "baseline", "baseline/moons/seed_0"])
def test_no_write_goes_through_a_symlinked_folder(copy, tmp_path, planted):
    config, root = copy
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    shutil.rmtree(root / planted)
    (root / planted).symlink_to(outside, target_is_directory=True)
    with pytest.raises(results.ResultsError, match="symbolic link"):
        results.atomic_write_bytes(root / planted / "x.json", b"{}", root=root)
    with pytest.raises(results.ResultsError, match="symbolic link"):
        if planted == "figures":
            write_report(root)
        else:
            execute(config, root, progress=False, force=True)
    assert tree(outside) == {outside / "keep.txt": b"mine"}


def test_a_symlinked_checkpoint_folder_is_refused_and_deletes_remove_links_only(copy, tmp_path):
    config, root = copy
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.npz").write_bytes(b"x")
    (root / ".checkpoints").symlink_to(outside, target_is_directory=True)
    with pytest.raises(results.ResultsError, match="'.checkpoints'"):
        execute(config, root, progress=False, force=True)
    results.remove_tree(root / ".checkpoints", root=root)  # the link goes, not its target
    assert not (root / ".checkpoints").is_symlink() and (outside / "keep.npz").exists()
    results.remove(root / "baseline" / ".." / ".." / "keep.npz", root=root)  # outside: ignored
    assert (outside / "keep.npz").exists()


def test_the_process_registry_is_private_and_never_follows_a_planted_link(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "123").write_text("")  # looks like the entry of a dead process
    parent = tmp_path / "shared"
    parent.mkdir(mode=0o700)
    (parent / "processes").symlink_to(victim, target_is_directory=True)
    assert runtime.other_processes(parent / "processes") == 0
    runtime.register_process(parent / "processes")
    assert sorted(p.name for p in victim.iterdir()) == ["123"]  # nothing deleted or added
    fresh = tmp_path / "own" / "processes"
    (tmp_path / "own").mkdir(mode=0o755)
    runtime.register_process(fresh)
    for folder in (fresh.parent, fresh):
        assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700
    assert (fresh / str(os.getpid())).is_file()


# --- 2: someone else's results --------------------------------------------------------------


def test_another_experiment_or_a_foreign_folder_is_refused_unless_forced(copy, tmp_path):
    config, root = copy
    other = experiment(tmp_path, ["experiment.name=other"])
    before = tree(root)
    with pytest.raises(ownership.OwnershipError, match="holds the results of experiment 'tiny'"):
        execute(other, root, progress=False)
    assert tree(root) == before
    foreign = tmp_path / "papers"
    foreign.mkdir()
    (foreign / "report.md").write_text("my notes")
    with pytest.raises(ownership.OwnershipError, match="not a lowdiff results directory"):
        ownership.claim(config, foreign)
    assert ownership.claim(config, foreign, force=True) == []
    assert main(["run", str(tmp_path / "exp.toml"), "--out", str(foreign), "--quiet"]) == 2
    assert tree(foreign) == {foreign / "report.md": b"my notes"}


def test_a_changed_setting_names_the_cells_it_replaces_and_why(copy, tmp_path, caplog):
    _, root = copy
    changed = experiment(tmp_path, ["train.num_steps=21"])
    lines = ownership.claim(changed, root)
    assert lines == [
        "run 'baseline': replacing 2 finished cell(s) (moons/seed 0, moons/seed 1) because "
        "train.num_steps: 20 -> 21"
    ]
    assert lines[0] in caplog.text


# --- 3: damaged or tampered files -----------------------------------------------------------


def test_header_announcing_more_than_the_file_holds_is_refused_before_loading(tmp_path):
    path = tmp_path / "losses.npy"
    np.save(path, np.zeros(4, np.float32))
    data = path.read_bytes().replace(b"(4,)", b"(26843545600,)".ljust(4))  # "100 GB"
    header_end = data.index(b"\n") + 1
    path.write_bytes(data[:header_end] + bytes(16))
    with pytest.raises(results.ResultsError, match="announces"):
        results.read_npy(path)


@pytest.mark.parametrize(
    "array,match",
    [
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.zeros((3, 3)), r"shape \(3, 3\), expected \(N, 2\)"),
        (np.array(["a", "b"]), "expected numbers"),
    ],
)
def test_arrays_are_checked_for_dtype_shape_and_finiteness(tmp_path, array, match):
    np.save(tmp_path / "samples.npy", array)
    with pytest.raises(results.ResultsError, match=match):
        results.read_npy(tmp_path / "samples.npy", (None, 2))


def test_deep_or_huge_json_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "experiment.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(results.ResultsError, match="nested"):
        results.read_json(path)
    path.write_text("[" * 80 + "]" * 80)
    with pytest.raises(results.ResultsError, match="nested more than 64"):
        results.read_json(path)
    monkeypatch.setattr(results, "MAX_JSON_BYTES", 10)
    path.write_text('{"a": 12345678}')
    with pytest.raises(results.ResultsError, match="bytes"):
        results.read_json(path)


@pytest.mark.parametrize("name", ["process.npz", "samples.npy", "model_ema.npz", "losses.npy"])
def test_a_changed_file_unfinishes_only_its_cell_and_the_report_goes_on(copy, name):
    config, root = copy
    cell = cells.plan(config, root)[0]
    path = cell.directory / name
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # same size: only the content hash can tell
    path.write_bytes(bytes(data))
    found = cells.read(cell)
    assert found.record is None and "changed after the cell was written" in found.reason
    assert cells.read(cells.plan(config, root)[1]).record is not None
    loaded = summary.load(root)
    assert len(loaded.cells) == 1 and "content hash" in loaded.missing[0].reason
    assert write_report(root).is_file()


def test_cells_written_before_content_hashes_still_count(copy):
    config, root = copy
    cell = cells.plan(config, root)[0]
    record = json.loads((cell.directory / "cell.json").read_text())
    legacy = {key: value for key, value in record.items() if key != "sha256"}
    (cell.directory / "cell.json").write_text(json.dumps(legacy))
    assert cells.read(cell).record == legacy


@pytest.mark.parametrize("value", [1e308, -1e200])
def test_an_absurd_metric_makes_the_cell_invalid(copy, value):
    config, root = copy
    cell = cells.plan(config, root)[0]
    path = cell.directory / "cell.json"
    record = json.loads(path.read_text())
    record["metrics"]["w2"] = value
    path.write_text(json.dumps(record))
    assert cells.read(cell).reason.startswith("invalid: metric w2")
    assert write_report(root).is_file()


def test_a_damaged_oracle_floor_is_dropped_and_measured_again(copy):
    config, root = copy
    path = root / "oracle.json"
    raw = json.loads(path.read_text())
    entry = next(iter(raw["entries"].values()))
    entry["datasets"]["moons"]["w2"]["mean"] = "zero"
    path.write_text(json.dumps(raw))
    pair = next(iter(oracle.read_floors(config, root)))
    assert "w2" not in oracle.read_floors(config, root)[pair].get("moons", {})
    assert write_report(root).is_file()  # the report goes on without that floor
    execute(config, root, progress=False)  # and the next run measures it again
    assert isinstance(oracle.read_floors(config, root)[pair]["moons"]["w2"]["mean"], float)


def test_remeasure_skips_a_cell_with_bad_samples_and_measures_the_rest(copy):
    config, root = copy
    cell = cells.plan(config, root)[0]
    samples = np.load(cell.directory / "samples.npy")
    samples[0, 0] = np.nan
    np.save(cell.directory / "samples.npy", samples)
    record = json.loads((cell.directory / "cell.json").read_text())
    record.pop("sha256")  # as a cell of an earlier version: the size check alone passes
    (cell.directory / "cell.json").write_text(json.dumps(record))
    done = lowdiff.remeasure(root, report=False)
    assert len(done.measured) == 1
    assert any("invalid" in line and "NaN" in line for line in done.skipped)


def test_weights_with_inf_are_refused_by_load(copy):
    config, root = copy
    cell = cells.plan(config, root)[0]
    arrays = dict(np.load(cell.directory / "model_ema.npz"))
    name = next(iter(arrays))
    arrays[name] = np.full_like(arrays[name], np.inf)
    np.savez(cell.directory / "model_ema.npz", **arrays)
    record = json.loads((cell.directory / "cell.json").read_text())
    record.pop("sha256")
    record["files"]["model_ema.npz"] = (cell.directory / "model_ema.npz").stat().st_size
    (cell.directory / "cell.json").write_text(json.dumps(record))
    with pytest.raises(results.ResultsError, match="NaN or infinite"):
        load(cell.directory)


# --- 4: checks that came too late ------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["eval.sampling_steps=101"], "more than the 100 timesteps"),
        (["experiment.num_points=40", "eval.knn_k=40"], "need more than 40 training points"),
    ],
)
def test_contradicting_settings_are_refused_when_the_config_is_read(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        experiment(tmp_path, overrides)


def test_every_evaluation_buffer_is_sized_before_anything_is_written(tmp_path, monkeypatch):
    config = experiment(tmp_path, ["eval.field_resolution=100000"])
    with pytest.raises(ConfigError, match="weight field"):
        check_memory(config, available=16 * 2**30)
    monkeypatch.setattr("lowdiff.config.available_memory", lambda: 16 * 2**30)
    with pytest.raises(ConfigError):
        execute(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_missing_executor_package_is_found_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install 'lowdiff\\[ray\\]'"):
        check_executor_available("ray")
    config = experiment(tmp_path, ['experiment.executor="slurm"'])
    with pytest.raises(ConfigError, match="submitit"):
        execute(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# --- 5: reports and exports -----------------------------------------------------------------


def test_report_temporaries_are_unique_per_writer(copy, monkeypatch):
    _, root = copy
    names = []
    original = results._write_in

    def spy(folder, name, data):
        names.append(name)
        original(folder, name, data)

    monkeypatch.setattr(results, "_write_in", spy)
    write_report(root)
    write_report(root)
    pages = [name for name in names if name.startswith(".report.md.")]
    assert len(pages) == 2 and pages[0] != pages[1]
    assert not [p for p in root.iterdir() if p.name.endswith((".next", ".tmp"))]


def test_export_of_two_copies_tells_their_rows_apart(made, tmp_path, capsys):
    _, root = made
    twin = tmp_path / "twin"
    shutil.copytree(root, twin)
    table = ResultsTable.from_dirs([root, twin])
    assert {row["source"] for row in table} == {str(root), str(twin)}
    assert main(["export", str(root), str(twin), "--out", str(tmp_path / "m.csv")]) == 0
    assert "4 finished cells of 2 results directories" in capsys.readouterr().out


# --- 6: the Python API checks its arguments like the command line ----------------------------


@pytest.mark.parametrize("seeds", [[1.7], "12", [True], [-1], 2.0])
def test_seeds_must_be_integers(seeds):
    with pytest.raises(ConfigError, match="seeds="):
        train_config("mlp", ["moons"], seeds)


def test_numpy_integers_are_counts_and_zero_is_refused():
    assert check_seeds(np.int64(3), "seeds=") == [3]
    points = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ConfigError, match=r"k=: expected an integer >= 1, got 0"):
        evaluate(points, "moons", k=0)
    with pytest.raises(ConfigError, match="num_points="):
        evaluate(points, "moons", num_points=0)
    assert "kl_divergence" in evaluate(points, "moons", k=np.int64(3), num_points=np.int64(200))


def test_sample_counts_and_devices_give_the_same_sentence_here_and_on_the_command_line(
    made, tmp_path, capsys
):
    config, root = made
    model = load(cells.plan(config, root)[0].directory)
    assert model.sample(np.int64(5)).shape == (5, 2)
    with pytest.raises(ConfigError, match="n=: expected an integer >= 1, got 5.0"):
        model.sample(5.0)
    cell, out = str(cells.plan(config, root)[0].directory), str(tmp_path / "x.npy")
    for flags, message in [
        (["--device", "foo"], "--device 'foo': not a device"),
        (["--n", str(10**14)], "--n: 100000000000000 points would need about"),
    ]:
        assert main(["sample", cell, "--out", out, *flags]) == 2
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1
    assert not Path(out).exists()


def test_remeasure_of_a_mistyped_path_creates_nothing(tmp_path):
    with pytest.raises(results.ResultsError, match="not a directory"):
        lowdiff.remeasure(tmp_path / "typo" / "results")
    assert not (tmp_path / "typo").exists()


def test_lowdiff_remeasure_stays_callable_after_importing_the_submodule(tmp_path):
    code = (
        "import lowdiff, lowdiff.remeasure\n"
        "try:\n    lowdiff.remeasure('" + str(tmp_path / "nothing") + "')\n"
        "except ValueError as error:\n    print('refused:', error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC}, capture_output=True
    )
    assert done.returncode == 0 and b"refused:" in done.stdout, done.stderr


def test_compare_never_writes_over_a_results_directory_or_other_files(made, tmp_path):
    from lowdiff.report.compare import write_comparison

    _, root = made
    twin = tmp_path / "twin"
    shutil.copytree(root, twin)
    before = tree(twin)
    with pytest.raises(ownership.OwnershipError, match="holds other files"):
        write_comparison([root], twin)
    assert tree(twin) == before
    out = tmp_path / "compared"
    write_comparison([root, twin], out)
    assert write_comparison([root, twin], out) == out / "report.md"  # an earlier comparison


def test_numpy_scalars_are_settings_like_python_numbers(tmp_path):
    config = train_config("mlp", ["moons"], [0], settings={"num_steps": np.int64(7)})
    assert config.runs[0].train.num_steps == 7 and type(config.runs[0].train.num_steps) is int
    with pytest.raises(ConfigError, match="num_steps"):
        train_config("mlp", ["moons"], [0], settings={"num_steps": np.float64(7.5)})
